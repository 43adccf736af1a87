"""Running a scoring job: the cues through the daemon (submitted at once, then awaited), and the
outputs written; the exit status of ``unimoe-score-timeline`` and ``unimoe-edl-score``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from unimoe_audio.client.client import BadRequest, Client, ClientError, DaemonUnavailable
from unimoe_audio.client.settings import load_settings

from .mlt import write_mlt
from .score_cues import Cue, Edit
from .score_writers import report, write_otio, write_report
from .timeline import wav_frames


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


def execute(prog: str, edit: Edit | None, cues: list[Cue], skipped: list[dict[str, Any]], args: argparse.Namespace,
            meta: dict[str, Any], otio_out: Path | None = None, report_default_stdout: bool = True) -> int:
    """Run the cues through the daemon and write the outputs; the exit status."""
    if args.dry_run:
        print(json.dumps(report(cues, skipped, **meta, dry_run=True), indent=2))
        return 0
    if not cues:
        print(f"{prog}: nothing to score ({len(skipped)} shots skipped)", file=sys.stderr)
        for s in skipped:
            print(f"  event {s['event']}: {s['why']}", file=sys.stderr)
        return 2
    try:
        client = Client(load_settings(), auto_start=not args.no_start)
    except DaemonUnavailable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    with client:
        run_cues(client, cues, caption=args.caption, mode=args.mode, folder=args.folder,
                 sample_rate=args.sample_rate, channels=args.channels, seed=args.seed, timeout=args.timeout,
                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    rep = report(cues, skipped, **meta)
    outputs: dict[str, str] = {}
    if edit is not None:
        try:
            if otio_out is not None:
                outputs["otio"] = str(write_otio(edit, cues, otio_out))
            if args.mlt is not None:
                outputs["mlt"] = str(write_mlt(edit, cues, args.mlt))
        except (RuntimeError, ValueError, OSError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            rep["ok"] = False
            rep["error"] = str(exc)
    if outputs:
        rep["outputs"] = outputs
        for kind, path in outputs.items():
            print(f"{prog}: wrote {kind}: {path}", file=sys.stderr)
    if args.report is not None or report_default_stdout or not outputs:
        write_report(rep, args.report)
    return 0 if rep["ok"] else 1
