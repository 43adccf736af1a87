"""The argument parser: the top-level options, the options shared by the generating verbs, and the
list of verb groups (``VERB_GROUPS``) whose modules add their own subcommands."""
from __future__ import annotations

import argparse
import importlib

# One module per verb group, in the order `--help` lists them. Each module has
# ``register(sub: argparse._SubParsersAction) -> None`` which adds its verbs and sets ``func``.
# Adding a verb group = one new module in this package + one line here.
VERB_GROUPS: tuple[str, ...] = (
    "daemon_cmds",
    "generate",
    "jobs",
    "voices",
    "models",
)


def add_common(p: argparse.ArgumentParser, top: bool = False) -> None:
    """Options accepted before and after the verb (a subparser's default must not hide the top one)."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", default=d(False), help="print one JSON document on stdout")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no notices or progress on stderr")
    p.add_argument("--progress", choices=["auto", "always", "never"], default=d("auto"),
                   help="progress bars on stderr (auto: only on a terminal)")
    p.add_argument("--no-start", action="store_true", default=d(False),
                   help="do not start a daemon when none answers (exit 3 instead)")
    p.add_argument("--connect-timeout", type=float, default=d(60.0), metavar="S",
                   help="seconds to wait for a daemon to answer or start (default 60)")
    p.add_argument("--home", default=d(None), metavar="DIR", help="same as UNIMOE_AUDIO_HOME")


def parse_loudness(text: str) -> float | str:
    if text.strip().lower() in ("off", "none", "no"):
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wanted a LUFS number (e.g. -16) or 'off', got {text!r}") from None


def add_gen_options(p: argparse.ArgumentParser) -> None:
    """Output format, sampling and queue options of every generating verb."""
    g = p.add_argument_group("output")
    g.add_argument("--sample-rate", type=int, metavar="HZ", help="output sample rate (default: setting sample_rate)")
    g.add_argument("--channels", type=int, choices=[1, 2], help="1 mono, 2 stereo (default: setting channels)")
    g.add_argument("--bit-depth", type=int, choices=[16, 24, 32], help="WAV bit depth, 32 = float")
    g.add_argument("--loudness", type=parse_loudness, metavar="LUFS|off", help="loudness target, or 'off'")
    s = p.add_argument_group("sampling")
    s.add_argument("--seed", type=int, help="random seed (reported back when not given)")
    s.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale")
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-p", type=float)
    s.add_argument("--top-k", type=int)
    p.add_argument("--priority", type=int, help="higher runs first (-100..100, default 0)")
    p.add_argument("--tag", help="your own label for the job (shown by 'jobs ls', echoed in events)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoe-audio",
        description="Local generative audio with UniMoE-Audio: speech in a cloned voice, music from text, "
        "music for a video. A background daemon holds the model; these commands talk to it.",
        epilog="exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 daemon unavailable, 4 generation failed, "
        "130 interrupted (the started jobs are cancelled)",
    )
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERB_GROUPS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser
