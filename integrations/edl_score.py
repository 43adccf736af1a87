"""Score every picture event of a CMX3600 EDL (or one video + in/out) with unimoe-audio.

A front end of :mod:`.score_timeline` for EDLs: the same planning, requests and writers. Each cue is a
``video_score`` request of exactly the event's record duration (``length = {frames, fps}`` with
``fit_length``), spotted to the event's record-in (BWF ``bext`` time reference + iXML), so the WAV
drops onto the timeline at the event's record-in and ends on its cut. A JSON report lists every
produced file with its expected and actual sample count; ``--otio`` and ``--mlt`` also write the edit
with the score as OpenTimelineIO and as MLT XML (Shotcut, Kdenlive, melt).

    python -m unimoe_audio.integrations.edl_score cut.edl --rate 24000/1001 --media ./media \\
        --caption "tense strings" --folder ./score --report score.json --otio score.otio --mlt score.mlt
    python -m unimoe_audio.integrations.edl_score --video clip.mov --in 00:00:02:00 --out 00:00:06:12 --rate 25

Times: ``--in``/``--out`` take timecode (``HH:MM:SS:FF``, drop-frame ``HH:MM:SS;FF``), frames (``120``)
or seconds (``4.5s``). Source timecode: an EDL's source in/out are the clip's own timecode; the clip's
start timecode (``--source-start``, default ``auto``: the file's ``timecode`` tag read by ffprobe, else
00:00:00:00) is subtracted to get seconds into the file. An EDL headed ``FCM: DROP FRAME`` at a rate
without drop-frame (23.976) is read as non-drop, with a warning.

Exit status: 0 every cue done, 1 some cue failed, 2 bad arguments or no daemon.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .score_cues import Cue, Edit, plan
from .score_readers import edit_from_edl
from .score_runner import execute
from .score_timeline import add_run_options
from .timeline import EdlEvent, frames_to_seconds, frames_to_timecode, parse_rate, rate_string, samples_for_frames, to_frames


def cue_for_event(ev: EdlEvent, video: Path, source_start: int, sample_rate: int = 48000,
                  prefix: str = "cue") -> Cue:
    """The score request of one EDL event: seconds into ``video`` from the source in/out, length from the
    record in/out (what the picture occupies on the timeline)."""
    r = ev.rate
    src_in = ev.src_in - source_start
    if src_in < 0:
        raise ValueError(f"event {ev.number}: source in {ev.tc(ev.src_in)} is before the clip's start timecode "
                         f"{ev.tc(source_start)}")
    in_s = frames_to_seconds(src_in, r)
    out_s = in_s + frames_to_seconds(ev.frames, r)
    return Cue(name=f"{prefix}-{ev.number:03d}", video=str(video), in_seconds=float(in_s), out_seconds=float(out_s),
               frames=ev.frames, fps=rate_string(r), record_in=ev.tc(ev.rec_in), record_out=ev.tc(ev.rec_out),
               event=ev.number, expected_samples=samples_for_frames(ev.frames, r, sample_rate))


def cue_for_range(video: Path, in_point: str | int, out_point: str | int, rate: Any, sample_rate: int = 48000,
                  name: str | None = None, drop: bool | None = None) -> Cue:
    """One video + in/out (timecode, frames or seconds) at ``rate``."""
    r = parse_rate(rate)
    fin, fout = to_frames(in_point, r, drop), to_frames(out_point, r, drop)
    if fout <= fin:
        raise ValueError(f"out point {out_point} is not after in point {in_point}")
    n = fout - fin
    return Cue(name=name or f"{video.stem}-score", video=str(video), in_seconds=float(frames_to_seconds(fin, r)),
               out_seconds=float(frames_to_seconds(fout, r)), frames=n, fps=rate_string(r),
               record_in=frames_to_timecode(fin, r, drop), record_out=frames_to_timecode(fout, r, drop),
               expected_samples=samples_for_frames(n, r, sample_rate),
               spot=False)  # in/out are the file's own times, not a record-in on a timeline


def plan_edl(edl_path: Path, rate: Any, media: list[Path], source_start: str = "auto",
             sample_rate: int = 48000) -> tuple[list[Cue], list[dict[str, Any]]]:
    """Cues for the EDL's picture events, and the events skipped (with why)."""
    edit = edit_from_edl(edl_path, rate, media, source_start)
    return plan(edit, sample_rate=sample_rate, prefix=edl_path.stem)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="unimoe-edl-score", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("edl", nargs="?", type=Path, help="CMX3600 EDL file")
    ap.add_argument("--video", type=Path, help="score one video instead of an EDL")
    ap.add_argument("--in", dest="in_point", default="0", help="with --video: in point (timecode, frames or 1.5s)")
    ap.add_argument("--out", dest="out_point", help="with --video: out point (timecode, frames or 1.5s)")
    ap.add_argument("--rate", required=True, help="timeline frame rate: 24000/1001, 25, 29.97, 30000/1001 ...")
    ap.add_argument("--source-start", default="auto", help="clips' start timecode, or 'auto' (ffprobe)")
    add_run_options(ap)
    args = ap.parse_args(argv)

    edit: Edit | None = None
    warnings: list[str] = []
    try:
        rate = parse_rate(args.rate)
        if args.video:
            if not args.out_point:
                ap.error("--video needs --out")
            cues = [cue_for_range(args.video.resolve(), args.in_point, args.out_point, rate, args.sample_rate)]
            skipped: list[dict[str, Any]] = []
            source = str(args.video)
            if args.otio_out or args.mlt:
                ap.error("--otio and --mlt need an EDL")
        elif args.edl:
            edit = edit_from_edl(args.edl.resolve(), rate, [m.resolve() for m in args.media], args.source_start)
            cues, skipped = plan(edit, sample_rate=args.sample_rate, prefix=args.edl.stem)
            warnings = edit.warnings
            source = str(args.edl)
        else:
            ap.error("give an EDL or --video")
    except (ValueError, OSError) as exc:
        print(f"unimoe-edl-score: {exc}", file=sys.stderr)
        return 2
    for w in warnings:
        print(f"unimoe-edl-score: warning: {w}", file=sys.stderr)
    meta = {"source": source, "rate": rate_string(rate), "sample_rate": args.sample_rate, "caption": args.caption,
            "mode": args.mode, "warnings": warnings}
    return execute("unimoe-edl-score", edit, cues, skipped, args, meta, otio_out=args.otio_out)


if __name__ == "__main__":
    sys.exit(main())
