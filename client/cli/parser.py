"""The argument parser: the top-level options, the options shared by the generating verbs, and the
list of verb groups (``VERB_GROUPS``) whose modules add their own subcommands."""
from __future__ import annotations

import argparse
import importlib
from typing import Any, Callable

# One module per verb group, in the order `--help` lists them. Each module has
# ``register(sub: argparse._SubParsersAction) -> None`` which adds its verbs and sets ``func``.
# Adding a verb group = one new module in this package + one line here.
VERB_GROUPS: tuple[str, ...] = (
    "daemon_cmds",
    "generate",
    "jobs",
    "voices",
    "models",
    "timeline_cmds",
    "voiceover_cmds",
    "remote_cmds",
)


def add_common(p: argparse.ArgumentParser, top: bool = False, remote: bool = True) -> None:
    """Options accepted before and after the verb (a subparser's default must not hide the top one).
    ``remote=False`` for ``serve``, whose own ``--host`` is the interface it listens on."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", default=d(False), help="print one JSON document on stdout")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no notices or progress on stderr")
    p.add_argument("--progress", choices=["auto", "always", "never"], default=d("auto"),
                   help="progress on stderr (auto: bars on a terminal, else a line per 10%%)")
    p.add_argument("--no-start", action="store_true", default=d(False),
                   help="do not start a daemon when none answers (exit 3 instead)")
    p.add_argument("--connect-timeout", type=float, default=d(60.0), metavar="S",
                   help="seconds to wait for a daemon to answer or start (default 60)")
    p.add_argument("--home", default=d(None), metavar="DIR", help="same as UNIMOE_AUDIO_HOME")
    if remote:
        p.add_argument("--host", dest="remote", default=d(None), metavar="NAME",
                       help="use the remote host of this profile ('remote add'); same as UNIMOE_AUDIO_REMOTE")


def add_verb(sub: "argparse._SubParsersAction", name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
    """A verb (or a verb's action) that takes the common options after it too: ``add_parser`` then
    ``add_common``, the pair every command registers."""
    p = sub.add_parser(name, help=help, **kw)
    add_common(p)
    return p


def add_action_verb(sub: "argparse._SubParsersAction", name: str, help: str, func: Callable[..., int],
                    **defaults: Any) -> "argparse._SubParsersAction":
    """A verb whose first argument is an action (``jobs ls``, ``voices add``): ``func`` runs every action
    and reads it from ``args.<name>_action``. Returns the subparsers to add the actions to."""
    p = add_verb(sub, name, help=help)
    p.set_defaults(func=func, **defaults)
    return p.add_subparsers(dest=f"{name}_action", metavar="ACTION", required=True)


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
    t = p.add_argument_group("timeline (the WAV spots to its record-in: BWF bext time reference + iXML)")
    t.add_argument("--record-in", metavar="TC", help="record-in timecode HH:MM:SS:FF (drop-frame HH:MM:SS;FF) at "
                   "--fps, or seconds since midnight as 3600.5s")
    t.add_argument("--fps", metavar="RATE", help="timeline rate of --record-in and --frames: 25, 24000/1001, 29.97 ...")
    t.add_argument("--frames", type=int, metavar="N", help="length in frames at --fps (sample exact)")
    t.add_argument("--project", help="iXML project name")
    t.add_argument("--scene", help="iXML scene")
    t.add_argument("--take", help="iXML take")
    t.add_argument("--note", help="iXML note (and the BWF description)")
    p.add_argument("--priority", type=int, help="higher runs first (-100..100, default 0)")
    p.add_argument("--tag", help="your own label for the job (shown by 'jobs ls', echoed in events)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoe-audio",
        description="Local generative audio with UniMoE-Audio: speech in a cloned voice, music from text, "
        "music for a video. A background daemon holds the model; these commands talk to it.",
        epilog="exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 daemon unavailable, 4 generation failed, "
        "5 timed out waiting, 130 interrupted (the started jobs are cancelled)",
    )
    add_common(parser, top=True)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name in VERB_GROUPS:
        importlib.import_module(f"{__package__}.{name}").register(sub)
    return parser
