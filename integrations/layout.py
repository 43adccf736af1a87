"""A timeline as tracks of placed media, in whole frames: what the MLT, Kdenlive, FCPXML and EDL writers share.

Every writer of ours turns the same plain structure into its format, so "where does this clip go" is decided once:
a :class:`Layout` has the timeline's exact rate and start timecode (in frames) and its tracks, each a list of
:class:`Placed` clips at record frames (from the timeline's first frame), showing ``frames`` frames of a media
file from ``src_in``. Built from a scored edit (:func:`layout_from_edit`: the picture track and the score lanes,
no OpenTimelineIO needed; scored_edit.py) or from any OTIO timeline (:func:`layout_from_otio`: every track kept as it is).

Standard library only, so the EDL -> MLT path runs in Blender's or REAPER's embedded Python.
"""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from .score_cues import SCORE_TRACK, Edit
from .timeline import frames_to_timecode, parse_rate, wav_frames

Kind = Literal["video", "audio"]


@dataclass
class Placed:
    """One clip: ``frames`` frames of ``path`` from frame ``src_in`` of the file, at ``record`` on its track."""

    record: int
    frames: int
    path: str | None  # None: media offline / a generator; kept so the track's timing stays whole
    src_in: int = 0
    name: str = ""
    markers: list[str] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.record + self.frames


@dataclass
class Lane:
    name: str
    kind: Kind
    items: list[Placed]


@dataclass
class Layout:
    title: str
    rate: Fraction
    start: int  # record timecode of frame 0, in frames at ``rate``
    drop: bool
    lanes: list[Lane]

    def length(self) -> int:
        return max((p.end for lane in self.lanes for p in lane.items), default=0)

    def tc(self, record: int) -> str:
        return frames_to_timecode(self.start + record, self.rate, self.drop)

    def media(self) -> list[str]:
        """Every media file, in first-use order (video lanes first)."""
        seen: dict[str, None] = {}
        for lane in sorted(self.lanes, key=lambda la: la.kind != "video"):
            for p in lane.items:
                if p.path:
                    seen.setdefault(p.path, None)
        return list(seen)

    def video_lanes(self) -> list[Lane]:
        return [la for la in self.lanes if la.kind == "video"]

    def audio_lanes(self) -> list[Lane]:
        return [la for la in self.lanes if la.kind == "audio"]


def score_lane_name(n: int) -> str:
    return SCORE_TRACK if n == 1 else f"{SCORE_TRACK} {n}"


def picture_lane(edit: Edit) -> Lane:
    """The cut edit of an EDL-read edit: its picture shots at their record frames (offline ones kept, pathless)."""
    items: list[Placed] = []
    pos = 0
    for s in sorted((s for s in edit.shots if s.frames), key=lambda s: s.record):
        if s.record < pos:
            continue  # an overlapping event (a dissolve's source): the cut edit keeps the first
        items.append(Placed(record=s.record, frames=s.frames, path=str(s.video) if s.video is not None else None,
                            src_in=max(0, s.src_in), name=s.name, markers=list(s.markers)))
        pos = s.record + s.frames
    return Lane(name="V1", kind="video", items=items)


def media_lengths(layout: Layout) -> dict[str, int]:
    """Each media file's length in frames (its probed length, at least what the timeline uses of it)."""
    used: dict[str, int] = {}
    for lane in layout.lanes:
        for p in lane.items:
            if p.path:
                used[p.path] = max(used.get(p.path, 0), p.src_in + p.frames)
    return {path: max(n, media_frames(path, layout.rate) or 0) for path, n in used.items()}


def _frames(rt: Any, rate: Fraction) -> int:
    return round(Fraction(rt.value) * rate / parse_rate(float(rt.rate)))


def url_to_path(url: str) -> str:
    """A media reference's URL as a local path (``file://`` URLs decoded; others as written)."""
    from urllib.parse import unquote, urlparse
    from urllib.request import url2pathname

    if url.startswith("file:"):
        return str(Path(url2pathname(unquote(urlparse(url).path))))
    return url


def layout_from_otio(tl: Any, rate: Any, *, title: str | None = None, start: int | None = None,
                     drop: bool = False) -> Layout:
    """Every video and audio track of an OTIO timeline (top-level clips; gaps become blanks)."""
    import opentimelineio as otio

    r = parse_rate(rate)
    out: list[Lane] = []
    for n, track in enumerate(tl.tracks, 1):
        if not isinstance(track, otio.schema.Track):
            continue
        kind: Kind = "audio" if track.kind == otio.schema.TrackKind.Audio else "video"
        items: list[Placed] = []
        for child in track:
            if not isinstance(child, otio.schema.Clip):
                continue
            rr = track.range_of_child(child)
            ref = child.media_reference
            url = getattr(ref, "target_url", None)
            sr = child.source_range or child.available_range()
            avail = getattr(ref, "available_range", None)
            src_in = _frames(sr.start_time, r) - (_frames(avail.start_time, r) if avail is not None else 0)
            items.append(Placed(record=_frames(rr.start_time, r), frames=_frames(rr.duration, r),
                                path=url_to_path(url) if url else None, src_in=max(0, src_in), name=child.name,
                                markers=[m.name for m in child.markers]))
        out.append(Lane(name=track.name or f"{'A' if kind == 'audio' else 'V'}{n}", kind=kind, items=items))
    if start is None:
        gst = tl.global_start_time
        start = _frames(gst, r) if gst is not None else 0
    return Layout(title=title or tl.name or "timeline", rate=r, start=start, drop=drop, lanes=out)


# --------------------------------------------------------------------------------------------------
# media facts the project formats want up front (length, picture size)
# --------------------------------------------------------------------------------------------------
def _ffprobe(path: str, entries: str) -> dict[str, Any]:
    if not shutil.which("ffprobe"):
        return {}
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", entries, "-of", "json", path],
                             capture_output=True, text=True, timeout=30).stdout
        return json.loads(out or "{}")
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return {}


def media_frames(path: str, rate: Fraction) -> int | None:
    """The file's length in whole frames at ``rate`` (WAVs from their header, others by ffprobe); None if unknown."""
    try:
        samples, sr, _ = wav_frames(path)
        return math.ceil(Fraction(samples) * rate / sr)
    except (OSError, ValueError):
        pass
    d = _ffprobe(path, "format=duration").get("format", {}).get("duration")
    try:
        return math.floor(Fraction(d) * rate) if d else None
    except (ValueError, ZeroDivisionError):
        return None


def video_size(path: str) -> tuple[int, int] | None:
    s = (_ffprobe(path, "stream=width,height").get("streams") or [{}])
    for st in s:
        if st.get("width") and st.get("height"):
            return int(st["width"]), int(st["height"])
    return None


def first_video_size(layout: Layout, default: tuple[int, int] = (1920, 1080)) -> tuple[int, int]:
    for lane in layout.video_lanes():
        for p in lane.items:
            if p.path and Path(p.path).exists():
                size = video_size(p.path)
                if size:
                    return size
    return default
