"""Timeline maths for editors and DAWs: rational frame rates, timecode (incl. drop-frame), exact sample
counts, and a small CMX3600 EDL reader.

Pure standard library (``fractions``, ``re``; rates and timecode live in
:mod:`unimoe_audio.client.timecode`), so Blender's and REAPER's embedded Pythons can import it.

Conventions:

- A frame rate is a :class:`fractions.Fraction` (``24000/1001``, ``30000/1001``, ``25``...). Decimal
  spellings of the NTSC rates (``23.976``, ``29.97``, ``59.94``...) are snapped to their exact ratio.
- A timecode names a frame: ``HH:MM:SS:FF`` (non-drop) or ``HH:MM:SS;FF`` (drop-frame, the separator
  before the frames is ``;`` or ``.``; only at 30000/1001 and 60000/1001).
- A time on the timeline is ``frame / rate`` seconds, kept as a Fraction; the sample that starts it
  at rate ``sr`` is ``round(frame * sr / rate)`` (ties to even, as Python's ``round``); the length in
  samples of ``n`` frames is ``round(n * sr / rate)``, which is what the daemon renders for a request
  ``length = {frames: n, fps: "num/den"}`` with ``fit_length``.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

from unimoe_audio.client.timecode import (  # noqa: F401  (re-exported: one definition of rates and timecode)
    RateLike, frames_to_timecode, is_drop_frame_rate, is_drop_timecode, nominal_fps, parse_rate, parse_timecode,
    rate_string, timecode_seconds,
)

__all__ = [
    "RateLike", "parse_rate", "rate_string", "nominal_fps", "is_drop_frame_rate", "frames_to_seconds",
    "seconds_to_frames", "samples_for_frames", "sample_position", "samples_for_seconds", "parse_timecode",
    "frames_to_timecode", "timecode_seconds", "is_drop_timecode", "to_frames", "vision_fps", "EdlEvent", "Edl",
    "read_edl", "parse_edl", "wav_frames",
]

def frames_to_seconds(frames: int, rate: RateLike) -> Fraction:
    return Fraction(int(frames)) / parse_rate(rate)


def seconds_to_frames(seconds: float | Fraction, rate: RateLike) -> int:
    """The frame that starts at (or, rounded, nearest to) ``seconds``."""
    return round(Fraction(seconds) * parse_rate(rate))


def samples_for_frames(frames: int, rate: RateLike, sample_rate: int = 48000) -> int:
    """Length in samples of ``frames`` frames: ``round(frames * sample_rate / rate)``."""
    return round(Fraction(int(frames)) * int(sample_rate) / parse_rate(rate))


def sample_position(frame: int, rate: RateLike, sample_rate: int = 48000) -> int:
    """The sample index at which ``frame`` starts (same rounding as :func:`samples_for_frames`)."""
    return samples_for_frames(frame, rate, sample_rate)


def vision_fps(seconds: float | Fraction, min_frames: int = 2, default: float = 1.0, most: float = 30.0) -> float:
    """Frames per second to sample from a video range of ``seconds`` for a score: the daemon's default
    (1/s) unless the range is so short that it would give fewer than ``min_frames`` (a sub-second event
    at 1/s can contain no sampled frame at all, which the daemon refuses)."""
    s = float(seconds)
    if s <= 0:
        return default
    return float(min(most, max(default, math.ceil(min_frames / s * 1000) / 1000)))


def samples_for_seconds(seconds: float | Fraction, sample_rate: int = 48000) -> int:
    return round(Fraction(seconds) * int(sample_rate))


def to_frames(value: str | int | float | Fraction, rate: RateLike, drop: bool | None = None) -> int:
    """A point given as a frame count (int or digits), a timecode string, or seconds (``"12.5s"`` or a
    float) -> frame count at ``rate``."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Fraction)):
        return seconds_to_frames(value, rate)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if text.endswith("s"):
        try:
            return seconds_to_frames(Fraction(text[:-1]), rate)
        except ValueError:
            raise ValueError(f"not a time: {value!r}") from None
    return parse_timecode(text, rate, drop)


# --------------------------------------------------------------------------------------------------
# CMX3600 EDL
# --------------------------------------------------------------------------------------------------
@dataclass
class EdlEvent:
    """One edit: a source clip's ``src_in..src_out`` placed at ``rec_in..rec_out`` (frames at ``rate``)."""

    number: int
    reel: str
    track: str
    transition: str
    src_in: int
    src_out: int
    rec_in: int
    rec_out: int
    rate: Fraction
    drop: bool = False
    transition_frames: int = 0
    clip_name: str | None = None
    source_file: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def is_video(self) -> bool:
        return self.track.upper().startswith("V") or self.track.upper() == "B"

    @property
    def is_black(self) -> bool:
        return self.reel.upper() in ("BL", "BLK", "BLACK")

    @property
    def frames(self) -> int:
        """Record duration in frames (what the music must fill)."""
        return self.rec_out - self.rec_in

    @property
    def seconds(self) -> Fraction:
        return frames_to_seconds(self.frames, self.rate)

    def samples(self, sample_rate: int = 48000) -> int:
        return samples_for_frames(self.frames, self.rate, sample_rate)

    def tc(self, frames: int) -> str:
        return frames_to_timecode(frames, self.rate, self.drop)

    def source_name(self) -> str:
        """The best name of the source media: SOURCE FILE comment, else clip name, else the reel."""
        return self.source_file or self.clip_name or self.reel

    def resolve_source(self, search: list[str | os.PathLike[str]] | None = None) -> Path | None:
        """The source file on disk: absolute as written, or found in the ``search`` folders (by its full
        relative path, then by its base name). None if not found."""
        name = self.source_name()
        p = Path(name).expanduser()
        if p.is_absolute():
            return p if p.exists() else None
        for folder in search or []:
            for cand in (Path(folder) / p, Path(folder) / p.name):
                if cand.exists():
                    return cand.resolve()
        return None


@dataclass
class Edl:
    title: str
    drop: bool
    rate: Fraction
    events: list[EdlEvent]
    warnings: list[str] = field(default_factory=list)


_EVENT = re.compile(r"^\s*(\d{1,6})\s+(\S+)\s+(\S+)\s+(C|D|W\d{3}|K[BO]?|KO?)\s+(?:(\d{1,4})\s+)?"
                    r"(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", re.IGNORECASE)
_SOURCE_COMMENT = re.compile(r"^\*\s*SOURCE FILE\s*:\s*(.+?)\s*$", re.IGNORECASE)
_CLIP_COMMENT = re.compile(r"^\*\s*FROM CLIP NAME\s*:\s*(.+?)\s*$", re.IGNORECASE)


def parse_edl(text: str, rate: RateLike) -> Edl:
    """Parse CMX3600 text. ``rate`` is the timeline rate (EDLs do not carry it); ``FCM: DROP FRAME``
    switches timecode to drop-frame at 29.97/59.94. At other rates (some editors head 23.976 EDLs with
    ``DROP FRAME``, but no drop-frame count exists there) the timecode is read as non-drop and the Edl
    carries a warning saying so. Comment lines ``* FROM CLIP NAME:``
    and ``* SOURCE FILE:`` attach to the event above them. Raises ValueError with the line number."""
    r = parse_rate(rate)
    title = ""
    drop = False
    events: list[EdlEvent] = []
    warns: list[str] = []
    warns_ndf = False  # FCM said DROP FRAME at a rate without drop-frame: ';' separators read as non-drop
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        s = line.strip()
        if not s:
            continue
        up = s.upper()
        if up.startswith("TITLE:"):
            title = s.split(":", 1)[1].strip()
            continue
        if up.startswith("FCM:"):
            drop = "NON" not in up and "DROP" in up
            warns_ndf = drop and not is_drop_frame_rate(r)
            if warns_ndf:
                drop = False
                msg = (f"EDL line {lineno}: {s!r} at {rate_string(r)} fps: drop-frame exists only at 29.97 and "
                       f"59.94; reading the timecode as non-drop")
                if msg not in warns:
                    warns.append(msg)
            continue
        if s.startswith("*"):
            if events:
                ev = events[-1]
                ev.comments.append(s)
                m = _SOURCE_COMMENT.match(s)
                if m:
                    ev.source_file = m.group(1)
                m = _CLIP_COMMENT.match(s)
                if m:
                    ev.clip_name = m.group(1)
            continue
        if up.startswith(("M2 ", "SPLIT", ">>>", "AUD")):
            continue
        m = _EVENT.match(line)
        if not m:
            if s[:1].isdigit():
                raise ValueError(f"EDL line {lineno}: not a CMX3600 event: {s!r}")
            continue
        num, reel, track, trans, tdur, si, so, ri, ro = m.groups()
        try:
            tcs = [parse_timecode(t, r, drop if drop else (False if warns_ndf else None)) for t in (si, so, ri, ro)]
        except ValueError as exc:
            raise ValueError(f"EDL line {lineno}: {exc}") from None
        ev = EdlEvent(number=int(num), reel=reel, track=track, transition=trans.upper(), src_in=tcs[0],
                      src_out=tcs[1], rec_in=tcs[2], rec_out=tcs[3], rate=r, drop=drop,
                      transition_frames=int(tdur or 0))
        if ev.rec_out <= ev.rec_in:
            raise ValueError(f"EDL line {lineno}: record out {ro} is not after record in {ri}")
        events.append(ev)
    return Edl(title=title, drop=drop, rate=r, events=events, warnings=warns)


def read_edl(path: str | os.PathLike[str], rate: RateLike) -> Edl:
    return parse_edl(Path(path).read_text(encoding="utf-8", errors="replace"), rate)


def iter_events(path: str | os.PathLike[str], rate: RateLike, video_only: bool = True) -> Iterator[EdlEvent]:
    """The events of an EDL file; with ``video_only``, picture events that are not black."""
    for ev in read_edl(path, rate).events:
        if video_only and (not ev.is_video or ev.is_black):
            continue
        yield ev


def write_edl(title: str, events: list[tuple[str, int, int, int, int]], rate: RateLike,
              drop: bool | None = None) -> str:
    """CMX3600 text for ``(source_file, src_in, src_out, rec_in, rec_out)`` frame tuples (cuts, track V)."""
    r = parse_rate(rate)
    if drop is None:
        drop = is_drop_frame_rate(r)
    lines = [f"TITLE: {title}", f"FCM: {'DROP FRAME' if drop else 'NON-DROP FRAME'}", ""]
    for i, (src, si, so, ri, ro) in enumerate(events, 1):
        reel = "AX"
        tcs = " ".join(frames_to_timecode(x, r, drop) for x in (si, so, ri, ro))
        lines.append(f"{i:03d}  {reel:<8} V     C        {tcs}")
        lines.append(f"* FROM CLIP NAME: {Path(src).name}")
        lines.append(f"* SOURCE FILE: {src}")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# WAV length (to check sample-exact results without numpy/soundfile)
# --------------------------------------------------------------------------------------------------
def wav_frames(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(sample frames, sample rate, channels) of a RIFF/RF64 WAV file, read from its header chunks
    (works for PCM, float and WAVE_FORMAT_EXTENSIBLE, which ``wave`` of Python 3.11 refuses)."""
    import struct

    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            raise ValueError(f"{path}: not a WAV file")
        rate = channels = block = 0
        data_size: int | None = None
        ds64_data: int | None = None
        while True:
            ch = fh.read(8)
            if len(ch) < 8:
                break
            cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
            if cid == b"fmt ":
                fmt = fh.read(size)
                channels, rate = struct.unpack("<HI", fmt[2:8])
                block = struct.unpack("<H", fmt[12:14])[0]
                fh.seek(size % 2, 1)
            elif cid == b"ds64":
                body = fh.read(size)
                ds64_data = struct.unpack("<Q", body[8:16])[0]
                fh.seek(size % 2, 1)
            elif cid == b"data":
                data_size = ds64_data if (size == 0xFFFFFFFF and ds64_data is not None) else size
                break
            else:
                fh.seek(size + size % 2, 1)
    if not block or data_size is None:
        raise ValueError(f"{path}: no fmt or data chunk")
    return data_size // block, rate, channels
