"""``score-timeline``: hands the rest of the command line to ``unimoe_audio.integrations.score_timeline``.

The scorer lives in ``integrations/`` (it speaks to the daemon only through this client, and reads
OpenTimelineIO, an optional dependency); this verb only makes it reachable as ``unimoe-audio
score-timeline``. It is imported by name when the verb runs, so the client never imports it otherwise.
"""
from __future__ import annotations

import argparse
import importlib
import os

from .output import EXIT_BAD_INPUT, CLIError


def cmd_score_timeline(args: argparse.Namespace) -> int:
    try:
        mod = importlib.import_module("unimoe_audio.integrations.score_timeline")
    except ImportError as exc:
        raise CLIError(f"score-timeline: {exc}", EXIT_BAD_INPUT) from None
    if getattr(args, "home", None):  # the top-level --home, as the other verbs honour it
        os.environ["UNIMOE_AUDIO_HOME"] = str(args.home)
    rest = list(args.rest)
    if getattr(args, "no_start", False) and "--no-start" not in rest:
        rest.append("--no-start")
    return int(mod.main(rest, prog="unimoe-audio score-timeline"))


def register(sub: argparse._SubParsersAction) -> None:
    # No options of its own here ('+' as prefix): every argument, '--help' included, goes to the scorer.
    p = sub.add_parser("score-timeline", add_help=False, prefix_chars="+",
                       help="score the clips of a timeline; write it back with the score "
                       "(OTIO, EDL, FCP XML, FCPXML, AAF, MLT, Kdenlive)",
                       description="see 'unimoe-audio score-timeline --help'")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="IN -o OUT.otio [--mlt OUT.mlt] ...")
    p.set_defaults(func=cmd_score_timeline)
