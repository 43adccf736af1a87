"""Score an edit: read a timeline, score its shots through the daemon, write the timeline back with the music.

    unimoe-audio score-timeline cut.otio -o scored.otio --mlt scored.mlt --caption "tense strings"
    unimoe-score-timeline reel1.edl --rate 24000/1001 --media ./media -o reel1.otio --mlt reel1.mlt
    python -m unimoe_audio.integrations.score_timeline cut.otio --marker -o scored.otio

Reads OpenTimelineIO files (``.otio``, ``.otioz``, ``.otiod``, and whatever OTIO adapter plugins are
installed: ``otio-kdenlive-adapter``, FCP XML ...) and CMX3600 EDLs (read by
:mod:`.timeline`, which needs ``--rate``; OTIO 0.18 no longer ships an EDL adapter of its own). Every
clip of the chosen picture track (``--track``: a name or a 1-based number; default the first), or only
the clips carrying a marker (``--marker``, optionally whose name contains a text), becomes one
``video_score`` request of exactly the clip's record duration (``length = {frames, fps}`` with
``fit_length``), spotted to its record-in (BWF ``bext`` + iXML, see :mod:`unimoe_audio.client.bwf`).

Writes (``-o``) the timeline with a new audio track (``unimoe score``) whose clips reference the
generated files at the exact record ranges, through OTIO (any writing adapter by the file's suffix),
and (``--mlt``) an MLT XML file with the picture and the score for Shotcut, Kdenlive or ``melt``.
A JSON report (``--report``) lists every file with its expected and actual sample count.

Times are exact: rates are Fractions (``24000/1001``, ``30000/1001``), timecode may be drop-frame,
and a clip of ``n`` frames gets ``round(n * sample_rate / rate)`` samples.

Exit status: 0 every shot scored sample-exact, 1 some shot failed, 2 bad arguments or no daemon.
Only :mod:`unimoe_audio.client` is used to talk to the daemon; ``opentimelineio`` (the ``timeline``
extra) is needed only for OTIO input or output.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .score_cues import plan
from .score_readers import read_edit
from .score_runner import execute
from .timeline import rate_string


def add_run_options(ap: argparse.ArgumentParser) -> None:
    """The options of a scoring run shared with ``unimoe-edl-score``."""
    ap.add_argument("--media", type=Path, action="append", default=[], help="folder to look for sources in")
    ap.add_argument("--caption", default="", help="what the score should be like")
    ap.add_argument("--mode", choices=("vision", "reference"), default="vision")
    ap.add_argument("--folder", help="output folder for the audio (default: the daemon's)")
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, choices=(1, 2))
    ap.add_argument("--seed", type=int)
    ap.add_argument("--report", type=Path, help="JSON report path (default: stdout when no other output)")
    ap.add_argument("--timeout", type=float, help="seconds to wait for each cue")
    ap.add_argument("--dry-run", action="store_true", help="print the planned requests and exit")
    ap.add_argument("--no-start", action="store_true", help="do not start a daemon when none is running")
    ap.add_argument("--otio", type=Path, dest="otio_out", help="also write the timeline with the score as OTIO")
    ap.add_argument("--mlt", type=Path, help="also write an MLT XML file (Shotcut, Kdenlive, melt)")


def main(argv: list[str] | None = None, prog: str = "unimoe-score-timeline") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("timeline", type=Path, help="OTIO file, CMX3600 EDL, or a format an OTIO adapter reads")
    ap.add_argument("-o", "--output", type=Path, help="write the timeline with the score: OTIO (.otio, .otioz, .otiod "
                    "or an adapter's suffix), or MLT (.mlt)")
    ap.add_argument("--rate", help="timeline frame rate (needed for an EDL; OTIO: from the clips)")
    ap.add_argument("--track", help="picture track to score: its name or 1-based number (default: the first)")
    ap.add_argument("--marker", nargs="?", const="", default=None, metavar="TEXT",
                    help="score only clips carrying a marker (whose name contains TEXT)")
    ap.add_argument("--marker-captions", action="store_true", help="a marked clip's marker name is its caption")
    ap.add_argument("--source-start", help="EDL: clips' start timecode or 'auto' (ffprobe, the default); OTIO: "
                    "'media' (the media's available range, the default), 'auto' or a timecode")
    ap.add_argument("--project", help="project name written into the files' iXML (default: the timeline's name)")
    add_run_options(ap)
    args = ap.parse_args(argv)
    if args.output is not None and args.output.suffix.lower() == ".mlt":  # -o x.mlt: the MLT file is the output
        if args.mlt is not None:
            ap.error("-o OUT.mlt and --mlt: give one")
        args.mlt, args.output = args.output, None
    out = args.output or args.otio_out
    if out is None and args.mlt is None and args.report is None and not args.dry_run:
        ap.error("give -o OUT.otio, --mlt OUT.mlt or --report OUT.json")
    try:
        edit = read_edit(args.timeline.resolve(), args.rate, args.track, [m.resolve() for m in args.media],
                         args.source_start)
        cues, skipped = plan(edit, marker=args.marker, sample_rate=args.sample_rate, project=args.project,
                             prefix=args.timeline.stem, marker_captions=args.marker_captions)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    for w in edit.warnings:
        print(f"{prog}: warning: {w}", file=sys.stderr)
    meta = {"source": str(args.timeline), "rate": rate_string(edit.rate), "start": edit.tc(0),
            "sample_rate": args.sample_rate, "caption": args.caption, "mode": args.mode, "warnings": edit.warnings}
    return execute(prog, edit, cues, skipped, args, meta, otio_out=out, report_default_stdout=False)


if __name__ == "__main__":
    sys.exit(main())
