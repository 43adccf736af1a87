"""Score every picture event of a CMX3600 EDL (or one video + in/out) with unimoe-audio.

Each cue is a ``video_score`` request of exactly the event's record duration (``length = {frames, fps}``
with ``fit_length``), so the WAV drops onto the timeline at the event's record-in and ends on its cut.
A JSON report lists every produced file with its expected and actual sample count.

    python -m unimoe_audio.integrations.edl_score cut.edl --rate 24000/1001 --media ./media \\
        --caption "tense strings" --folder ./score --report score.json
    python -m unimoe_audio.integrations.edl_score --video clip.mov --in 00:00:02:00 --out 00:00:06:12 --rate 25

Times: ``--in``/``--out`` take timecode (``HH:MM:SS:FF``, drop-frame ``HH:MM:SS;FF``), frames (``120``)
or seconds (``4.5s``). Source timecode: an EDL's source in/out are the clip's own timecode; the clip's
start timecode (``--source-start``, default ``auto``: the file's ``timecode`` tag read by ffprobe, else
00:00:00:00) is subtracted to get seconds into the file.

Exit status: 0 every cue done, 1 some cue failed, 2 bad arguments or no daemon.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from unimoe_audio.client.client import BadRequest, Client, ClientError, DaemonUnavailable
from unimoe_audio.client.settings import load_settings

from .timeline import (
    EdlEvent, frames_to_seconds, frames_to_timecode, parse_rate, parse_timecode, rate_string, read_edl,
    samples_for_frames, to_frames, vision_fps, wav_frames,
)


@dataclass
class Cue:
    """One score request, in plain values."""

    name: str
    video: str
    in_seconds: float
    out_seconds: float
    frames: int
    fps: str
    record_in: str = ""
    record_out: str = ""
    event: int | None = None
    expected_samples: int = 0
    result: dict[str, Any] = field(default_factory=dict)

    def fields(self, *, caption: str = "", mode: str = "vision", folder: str | None = None,
               sample_rate: int = 48000, channels: int | None = None, seed: int | None = None,
               tag: str | None = None) -> dict[str, Any]:
        """Flat fields for ``Client.submit("score", ...)``."""
        f: dict[str, Any] = {"video": self.video, "caption": caption, "in_seconds": self.in_seconds,
                             "out_seconds": self.out_seconds, "mode": mode, "frames": self.frames, "fps": self.fps,
                             "fit_length": True, "sample_rate": sample_rate,
                             "frames_per_second": vision_fps(self.out_seconds - self.in_seconds), "name": self.name}
        if folder:
            f["folder"] = folder
        if channels:
            f["channels"] = channels
        if seed is not None:
            f["seed"] = seed
        f["tag"] = tag or self.name
        return f


def source_start_frames(video: Path, rate: Fraction, spec: str = "auto") -> int:
    """The clip's start timecode in frames: ``spec`` a timecode, or ``auto`` (ffprobe's ``timecode`` tag of
    the file or its first stream; 0 when there is none or ffprobe is missing)."""
    if spec != "auto":
        return to_frames(spec, rate)
    tc = probe_timecode(video)
    if not tc:
        return 0
    try:
        return parse_timecode(tc, rate)
    except ValueError:
        return 0


def probe_timecode(video: Path) -> str | None:
    if not shutil.which("ffprobe"):
        return None
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags=timecode:stream_tags=timecode",
                              "-of", "json", str(video)], capture_output=True, text=True, timeout=30).stdout
        data = json.loads(out or "{}")
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None
    tags = [data.get("format", {}).get("tags", {})] + [s.get("tags", {}) for s in data.get("streams", [])]
    for t in tags:
        if t.get("timecode"):
            return str(t["timecode"])
    return None


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
               expected_samples=samples_for_frames(n, r, sample_rate))


def plan_edl(edl_path: Path, rate: Any, media: list[Path], source_start: str = "auto",
             sample_rate: int = 48000) -> tuple[list[Cue], list[dict[str, Any]]]:
    """Cues for the EDL's picture events, and the events skipped (with why)."""
    edl = read_edl(edl_path, rate)
    search = [edl_path.parent, *media]
    cues: list[Cue] = []
    skipped: list[dict[str, Any]] = []
    starts: dict[Path, int] = {}
    for ev in edl.events:
        if not ev.is_video or ev.is_black:
            skipped.append({"event": ev.number, "why": "black" if ev.is_black else f"track {ev.track} is not picture"})
            continue
        video = ev.resolve_source(search)
        if video is None:
            skipped.append({"event": ev.number, "why": f"source not found: {ev.source_name()}"})
            continue
        if video not in starts:
            starts[video] = source_start_frames(video, edl.rate, source_start)
        try:
            cues.append(cue_for_event(ev, video, starts[video], sample_rate, prefix=edl_path.stem))
        except ValueError as exc:
            skipped.append({"event": ev.number, "why": str(exc)})
    return cues, skipped


def run_cues(client: Client, cues: list[Cue], *, caption: str = "", mode: str = "vision", folder: str | None = None,
             sample_rate: int = 48000, channels: int | None = None, seed: int | None = None,
             timeout: float | None = None, progress: Callable[[str], None] | None = None) -> list[Cue]:
    """Submit every cue (the daemon queues and batches them), then wait for each; fills ``cue.result``."""
    say = progress or (lambda m: None)
    jobs: list[tuple[Cue, Any]] = []
    for cue in cues:
        try:
            job = client.submit("score", **cue.fields(caption=caption, mode=mode, folder=folder,
                                                       sample_rate=sample_rate, channels=channels, seed=seed))
        except BadRequest as exc:
            cue.result = {"status": "rejected", "error": str(exc), "field": exc.field}
            say(f"{cue.name}: rejected: {exc}")
            continue
        cue.result = {"status": "queued", "job_id": job.id}
        jobs.append((cue, job))
        say(f"{cue.name}: queued as {job.id}")
    for cue, job in jobs:
        try:
            res = job.wait(timeout=timeout)
        except ClientError as exc:
            cue.result.update(status="failed", error=str(exc), field=getattr(exc, "field", None))
            say(f"{cue.name}: failed: {exc}")
            continue
        except TimeoutError as exc:
            cue.result.update(status="timeout", error=str(exc))
            continue
        samples, rate, ch = wav_frames(res.path)
        cue.result.update(status="done", path=res.path, sidecar=res.sidecar, seconds=res.seconds,
                          sample_rate=rate, channels=ch, samples=samples, seed=res.seed,
                          exact=(samples == cue.expected_samples))
        say(f"{cue.name}: {res.path} ({samples} samples{'' if samples == cue.expected_samples else ', NOT exact'})")
    return cues


def report(cues: list[Cue], skipped: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    events = [asdict(c) for c in cues]
    ok = bool(cues) and all(c.result.get("status") == "done" and c.result.get("exact") for c in cues)
    return {**meta, "ok": ok, "cues": events, "skipped": skipped, "written": time.time()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="unimoe-edl-score", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("edl", nargs="?", type=Path, help="CMX3600 EDL file")
    ap.add_argument("--video", type=Path, help="score one video instead of an EDL")
    ap.add_argument("--in", dest="in_point", default="0", help="with --video: in point (timecode, frames or 1.5s)")
    ap.add_argument("--out", dest="out_point", help="with --video: out point (timecode, frames or 1.5s)")
    ap.add_argument("--rate", required=True, help="timeline frame rate: 24000/1001, 25, 29.97, 30000/1001 ...")
    ap.add_argument("--media", type=Path, action="append", default=[], help="folder to look for EDL sources in")
    ap.add_argument("--source-start", default="auto", help="clips' start timecode, or 'auto' (ffprobe)")
    ap.add_argument("--caption", default="", help="what the score should be like")
    ap.add_argument("--mode", choices=("vision", "reference"), default="vision")
    ap.add_argument("--folder", help="output folder (default: the daemon's)")
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, choices=(1, 2))
    ap.add_argument("--seed", type=int)
    ap.add_argument("--report", type=Path, help="JSON report path (default: stdout)")
    ap.add_argument("--timeout", type=float, help="seconds to wait for each cue")
    ap.add_argument("--dry-run", action="store_true", help="print the planned requests and exit")
    ap.add_argument("--no-start", action="store_true", help="do not start a daemon when none is running")
    args = ap.parse_args(argv)

    try:
        rate = parse_rate(args.rate)
        if args.video:
            if not args.out_point:
                ap.error("--video needs --out")
            cues = [cue_for_range(args.video.resolve(), args.in_point, args.out_point, rate, args.sample_rate)]
            skipped: list[dict[str, Any]] = []
            source = str(args.video)
        elif args.edl:
            cues, skipped = plan_edl(args.edl.resolve(), rate, [m.resolve() for m in args.media], args.source_start,
                                     args.sample_rate)
            source = str(args.edl)
        else:
            ap.error("give an EDL or --video")
    except (ValueError, OSError) as exc:
        print(f"unimoe-edl-score: {exc}", file=sys.stderr)
        return 2
    meta = {"source": source, "rate": rate_string(rate), "sample_rate": args.sample_rate, "caption": args.caption,
            "mode": args.mode}
    if args.dry_run:
        print(json.dumps(report(cues, skipped, **meta, dry_run=True), indent=2))
        return 0
    if not cues:
        print(f"unimoe-edl-score: nothing to score ({len(skipped)} events skipped)", file=sys.stderr)
        for s in skipped:
            print(f"  event {s['event']}: {s['why']}", file=sys.stderr)
        return 2
    try:
        client = Client(load_settings(), auto_start=not args.no_start)
    except DaemonUnavailable as exc:
        print(f"unimoe-edl-score: {exc}", file=sys.stderr)
        return 2
    with client:
        run_cues(client, cues, caption=args.caption, mode=args.mode, folder=args.folder,
                 sample_rate=args.sample_rate, channels=args.channels, seed=args.seed, timeout=args.timeout,
                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    rep = report(cues, skipped, **meta)
    text = json.dumps(rep, indent=2)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.report.with_name(args.report.name + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.report)
    else:
        print(text)
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
