"""A voiced script as a timeline: one clip per spoken cue on a new audio track, at the cue's record time,
written through the same OTIO and MLT writers as ``score-timeline`` (:func:`.score_writers.otio_timeline`,
:func:`.mlt.write_mlt`), so an editor imports one file.

Positions are frames at ``fps`` (the timeline's rate; 25 when none is given) counted from the script's zero,
which sits at ``record_in`` when one was given; a clip's frame is ``round(start * fps)`` and it is as many
frames long as its audio covers. The stem's WAV stays sample exact; the timeline is as exact as its frames.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from unimoe_audio.client.timecode import parse_rate, parse_timecode

from .score_cues import Cue, Edit, require_otio

__all__ = ["DEFAULT_FPS", "timeline_of", "write_timeline"]

DEFAULT_FPS = 25
TRACK = "unimoe voiceover"


def timeline_of(report: Any, fps: Any = None, title: str = "unimoe voiceover") -> tuple[Edit, list[Cue]]:
    """The report's done cues as score-timeline cues on an edit without picture."""
    rate = parse_rate(fps if fps is not None else (report.fps or DEFAULT_FPS))
    start = 0
    drop = False
    if report.record_in and not str(report.record_in).endswith("s"):
        drop = ";" in report.record_in
        start = parse_timecode(report.record_in, rate, drop)
    edit = Edit(title=title, rate=rate, start=start, drop=drop, shots=[])
    cues: list[Cue] = []
    for c in report.cues:
        if c.state != "done" or not c.file or c.placed_start is None or c.placed_end is None:
            continue
        first = round(Fraction(c.placed_start) * rate)
        frames = max(1, math.ceil(Fraction(c.placed_end) * rate - Fraction(first)))
        cues.append(Cue(name=f"cue {c.index}" + (f" {c.speaker}" if c.speaker else ""), video="",
                        in_seconds=c.placed_start, out_seconds=c.placed_end, frames=frames,
                        fps=f"{rate.numerator}/{rate.denominator}", record_frame=first, event=c.index,
                        expected_samples=c.placed_samples or 0, caption=c.text,
                        result={"status": "done", "path": c.file, "job_id": c.job_id, "seed": c.seed,
                                "samples": c.placed_samples, "sample_rate": report.sample_rate}))
    return edit, cues


def write_timeline(report: Any, out: str | Path, fps: Any = None) -> Path:
    """Write ``out`` (``.otio`` or any OTIO adapter's suffix; ``.mlt`` for Shotcut/Kdenlive/melt)."""
    out = Path(out)
    edit, cues = timeline_of(report, fps, title=out.stem)
    if out.suffix.lower() == ".mlt":
        from .mlt import write_mlt

        return write_mlt(edit, cues, out)
    from .score_writers import otio_timeline

    otio = require_otio()
    tl = otio_timeline(edit, cues)
    for track in tl.audio_tracks():
        track.name = track.name.replace("unimoe score", TRACK)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    otio.adapters.write_to_file(tl, str(tmp))
    tmp.replace(out)
    return out
