"""Reading what is to be voiced: subtitle files (SRT, WebVTT, ASS/SSA through pysubs2) or a plain
timecoded script, into :class:`Cue` objects with exact times and an optional speaker.

Standard library plus pysubs2 (pure Python, imported only when a subtitle file is read), so Blender's and
REAPER's Pythons can use it too.

The plain script: one cue per line, ``START [--> END] [NAME:] text``. START and END are ``HH:MM:SS.mmm``
(or ``,mmm``), ``MM:SS.mmm``, plain seconds (``12.5``), or frame timecode ``HH:MM:SS:FF`` (drop-frame
``HH:MM:SS;FF``) at ``fps``; ``-->``, ``-`` or ``–`` separate them. A cue without an END lasts until the
next cue starts (the last one has no end: its slot is open). Blank lines and lines starting with ``#``
are skipped.

Speakers: a line ``NAME: text`` (NAME a voice-like name of at most 40 characters, starting with a letter or
digit) is spoken by NAME; in ASS/SSA the event's actor (``Name``) is the speaker, and its style when the
style is not ``Default``. Resolving a speaker to a saved voice is :mod:`.plan`'s job.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..timecode import RateLike, parse_rate, timecode_seconds

__all__ = ["Cue", "Script", "ScriptError", "read_script", "parse_plain", "split_speaker", "parse_time", "FORMATS"]

#: File suffix -> format name. Anything else is read as a plain script.
FORMATS = {".srt": "srt", ".vtt": "vtt", ".ass": "ass", ".ssa": "ssa"}
_SPEAKER = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9 _.'-]{0,39}?)\s*:\s+(\S.*)$", re.S)
_TAGS = re.compile(r"<[^>]*>|\{[^}]*\}")  # leftover markup (VTT voice/class spans, stray ASS overrides)


class ScriptError(ValueError):
    """The script cannot be read: the message names the file and, where it can, the line or cue."""


@dataclass
class Cue:
    """One line to speak. ``index`` is 1-based in file order (what ``--only`` and the report use); times are
    exact seconds from the script's zero; ``end`` is None for an open slot (last plain-script cue)."""

    index: int
    start: Fraction
    end: Fraction | None
    text: str
    speaker: str | None = None
    style: str | None = None  # ASS style (a speaker only when it resolves to a voice)
    line: int | None = None  # plain script: its line number

    @property
    def label(self) -> str:
        return f"cue {self.index}"


@dataclass
class Script:
    path: Path
    format: str
    cues: list[Cue]  # sorted by start; empty cues are not here (see ``skipped``)
    skipped: list[dict] = field(default_factory=list)  # {"index", "reason"}
    warnings: list[str] = field(default_factory=list)
    sha256: str = ""


def split_speaker(text: str) -> tuple[str | None, str]:
    """``"ALICE: Hello"`` -> ``("ALICE", "Hello")``; text without such a prefix -> ``(None, text)``."""
    m = _SPEAKER.match(text)
    if not m:
        return None, text
    return m.group(1).strip(), m.group(2).strip()


def clean_text(text: str) -> str:
    """One spoken line: markup removed, line breaks and runs of spaces made single spaces."""
    text = _TAGS.sub("", text.replace("\\N", " ").replace("\\n", " "))
    return " ".join(text.split())


def parse_time(text: str, fps: RateLike | None = None) -> Fraction:
    """A plain script's time: ``HH:MM:SS.mmm``, ``MM:SS.mmm``, seconds, or ``HH:MM:SS:FF`` at ``fps``."""
    t = text.strip().replace(",", ".")
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return Fraction(t)
    if re.fullmatch(r"\d{1,2}:\d{2}:\d{2}[:;]\d{1,3}", t):
        if fps is None:
            raise ValueError(f"{text!r} is a frame timecode: give the frame rate (--fps)")
        return timecode_seconds(t, fps)
    m = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{2}(?:\.\d+)?)", t)
    if not m:
        raise ValueError(f"{text!r} is not a time (HH:MM:SS.mmm, MM:SS.mmm, seconds, or HH:MM:SS:FF)")
    h, mnt, s = int(m.group(1) or 0), int(m.group(2)), Fraction(m.group(3))
    if mnt >= 60 or s >= 60:
        raise ValueError(f"{text!r}: minutes and seconds go up to 59")
    return h * 3600 + mnt * 60 + s


_TIME = r"[\d:;.,]+"
_LINE = re.compile(rf"^\s*(?P<start>{_TIME})(?:\s*(?:-->|–|—|-)\s*(?P<end>{_TIME}))?\s+(?P<text>\S.*)$")
_BARE_TIME = re.compile(rf"^\s*(?P<start>{_TIME})(?:\s*(?:-->|–|—|-)\s*(?P<end>{_TIME}))?\s*$")


def parse_plain(source: str, *, fps: RateLike | None = None, name: str = "script") -> list[tuple[Cue, str]]:
    """Cues of a plain timecoded script (each with its raw text, before the empty-cue check). A line with
    times and no text is not a cue: it only ends the open cue before it."""
    rows: list[tuple[Cue, str]] = []
    marks: list[Fraction] = []
    for no, raw in enumerate(source.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line) or _BARE_TIME.match(line)
        if not m:
            raise ScriptError(f"{name}, line {no}: no timecode at the start of {line[:60]!r} "
                              "(wanted 'START [--> END] [NAME:] text')")
        try:
            start = parse_time(m.group("start"), fps)
            end = parse_time(m.group("end"), fps) if m.group("end") else None
        except ValueError as exc:
            raise ScriptError(f"{name}, line {no}: {exc}") from None
        if end is not None and end <= start:
            raise ScriptError(f"{name}, line {no}: the end {m.group('end')} is not after the start {m.group('start')}")
        text = m.groupdict().get("text")
        if text is None:
            marks.append(start)
            continue
        rows.append((Cue(index=len(rows) + 1, start=start, end=end, text="", line=no), text))
    # an open end lasts until the next cue (or end mark) starts
    starts = sorted([c.start for c, _ in rows] + marks)
    for cue, _ in rows:
        later = [t for t in starts if t > cue.start]
        if cue.end is None and later:
            cue.end = later[0]
    return rows


_VTT_VOICE = re.compile(r"^\s*<v(?:\.[^\s>]*)?\s+([^>]+)>")


def _vtt_voices(path: Path) -> list[str | None]:
    """The ``<v NAME>`` speaker of each WebVTT cue, in file order (pysubs2 drops voice spans)."""
    blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8-sig").replace("\r\n", "\n"))
    out: list[str | None] = []
    for b in blocks:
        lines = b.strip().split("\n")
        at = next((i for i, ln in enumerate(lines) if "-->" in ln), None)
        if at is None:  # the header, NOTE, STYLE and REGION blocks
            continue
        m = _VTT_VOICE.match(" ".join(lines[at + 1:]))
        out.append(m.group(1).strip() if m else None)
    return out


def _read_subtitles(path: Path, fmt: str, fps: RateLike | None) -> list[tuple[Cue, str]]:
    try:
        import pysubs2
    except ImportError:
        raise ScriptError(f"{path}: reading {fmt.upper()} needs the pysubs2 package (pip install pysubs2)") from None
    try:
        subs = pysubs2.load(str(path), encoding="utf-8-sig", format_=fmt,
                            fps=float(parse_rate(fps)) if fps is not None else None)
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:  # pysubs2 raises plain exceptions on malformed files
        raise ScriptError(f"{path}: not a readable {fmt.upper()} file: {exc}") from None
    voices = _vtt_voices(path) if fmt == "vtt" else []
    events = [ev for ev in subs if not ev.is_comment]
    if len(voices) != len(events):
        voices = [None] * len(events)
    rows: list[tuple[Cue, str]] = []
    for ev, vtt_voice in zip(events, voices):
        start, end = Fraction(int(ev.start), 1000), Fraction(int(ev.end), 1000)
        idx = len(rows) + 1
        if end <= start:
            rows.append((Cue(index=idx, start=start, end=None, text=""), ""))  # flagged below as empty slot
            continue
        style = ev.style if fmt in ("ass", "ssa") and ev.style and ev.style != "Default" else None
        cue = Cue(index=idx, start=start, end=end, text="", speaker=(ev.name or "").strip() or vtt_voice, style=style)
        rows.append((cue, ev.plaintext))
    return rows


def read_script(path: str | Path, *, fps: RateLike | None = None, format: str | None = None) -> Script:
    """Read a subtitle file or a plain script. Raises :class:`ScriptError` naming the file (and line)."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    fmt = format or FORMATS.get(p.suffix.lower(), "plain")
    if fmt == "plain":
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ScriptError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        rows = parse_plain(text, fps=fps, name=str(path))
    else:
        rows = _read_subtitles(p, fmt, fps)
    script = Script(path=p.resolve(), format=fmt, cues=[], sha256=hashlib.sha256(data).hexdigest())
    for cue, raw in rows:
        speaker, text = split_speaker(clean_text(raw))
        if cue.end is None and fmt != "plain":
            script.skipped.append({"index": cue.index, "reason": "its end is not after its start"})
            continue
        if speaker and not cue.speaker:
            cue.speaker = speaker
        elif speaker:  # ASS actor set and a NAME: prefix too: the actor speaks, the prefix is text
            text = f"{speaker}: {text}"
        cue.text = text
        if not re.search(r"\w", text):
            script.skipped.append({"index": cue.index, "reason": "empty cue (nothing to speak)"})
            continue
        script.cues.append(cue)
    if not script.cues:
        raise ScriptError(f"{path}: no cue to speak" + (f" ({len(script.skipped)} empty)" if script.skipped else ""))
    script.cues.sort(key=lambda c: (c.start, c.index))
    for a, b in zip(script.cues, script.cues[1:]):
        if a.end is not None and b.start < a.end:
            script.warnings.append(f"cue {a.index} overlaps cue {b.index} by {float(a.end - b.start):.3f} s: "
                                   f"cue {a.index} is fitted to end when cue {b.index} starts")
    return script
