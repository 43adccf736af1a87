"""A voiced script as a timeline: one clip per spoken cue on a new audio track (``unimoe voiceover``), at
the cue's record time, in any editor's format by the file's extension (``.otio`` ``.edl`` ``.xml``
``.fcpxml`` ``.aaf`` ``.mlt`` ``.kdenlive``), through :func:`.interchange.write_layout`, the writers
``score-timeline`` uses, so an editor imports one file.

Positions are frames at ``fps`` (the timeline's rate; 25 when none is given) counted from the script's zero,
which sits at ``record_in`` when one was given; a clip's first frame is ``round(placed_start * fps)`` and it
is as many frames long as its audio covers. The stem's WAV stays sample exact; the timeline is as exact as
its frames.
"""
from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from unimoe_audio.client.timecode import parse_rate, parse_timecode

from .interchange import FORMATS, write_layout
from .layout import Lane, Layout, Placed

__all__ = ["DEFAULT_FPS", "TRACK", "SUFFIXES", "layout_of", "write_timeline"]

DEFAULT_FPS = 25
TRACK = "unimoe voiceover"
SUFFIXES = tuple(FORMATS)  # the timeline formats ``voiceover -o`` writes


def layout_of(report: Any, fps: Any = None, title: str = "unimoe voiceover") -> Layout:
    """The report's spoken cues as a layout of one audio lane."""
    rate = parse_rate(fps if fps is not None else (report.fps or DEFAULT_FPS))
    start, drop = 0, False
    if report.record_in and not str(report.record_in).endswith("s"):
        drop = ";" in report.record_in
        start = parse_timecode(report.record_in, rate, drop)
    items = []
    for c in sorted(report.cues, key=lambda c: c.placed_start or 0.0):
        if c.state != "done" or not c.file or c.placed_start is None or c.placed_end is None:
            continue
        first = round(Fraction(c.placed_start) * rate)
        frames = max(1, math.ceil(Fraction(c.placed_end) * rate - first))
        items.append(Placed(record=first, frames=frames, path=str(c.file),
                            name=f"cue {c.index}" + (f" {c.speaker}" if c.speaker else "")))
    return Layout(title=title, rate=rate, start=start, drop=drop, lanes=[Lane(name=TRACK, kind="audio", items=items)])


def write_timeline(report: Any, out: str | Path, fps: Any = None) -> Path:
    """Write ``out`` in the format of its extension (see :data:`SUFFIXES`)."""
    out = Path(out)
    return write_layout(layout_of(report, fps, title=out.stem), out)
