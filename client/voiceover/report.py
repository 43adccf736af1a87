"""The voiceover's record: one JSON report per run (a line per cue: where it was asked to be, where it
went, how it was fitted, its file and seed) and the subtitles of what was actually spoken.

The report is also the run's state: written before the first cue is submitted and after every cue that
ends, so a rerun of the same command resumes (same seeds, same idempotency keys), and ``--only``
regenerates chosen cues keeping the others.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CueRecord", "Report", "REPORT_VERSION", "load_report", "save_report", "write_spoken_subtitles"]

REPORT_VERSION = 1
CueState = Literal["pending", "queued", "running", "done", "failed", "cancelled", "skipped"]


class CueRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    index: int = Field(description="1-based position in the script (what --only names)")
    text: str
    speaker: str | None = None
    voice: str | None = Field(None, description="the saved voice that spoke it (None: the reference recording)")
    start: float = Field(description="seconds from the script's zero, as the script says")
    end: float | None = Field(None, description="the slot's end (None: an open slot)")
    start_sample: int = 0
    slot_seconds: float | None = None
    state: CueState = "pending"
    seed: int | None = None
    request_id: str | None = None
    attempt: int = Field(0, description="tries of this take after a failure or a cancel (each a new request_id)")
    job_id: str | None = None
    estimate_seconds: float | None = None
    asked: dict[str, float] = Field(default_factory=dict, description="the length fields sent to the model")
    raw_file: str | None = None
    raw_seconds: float | None = None
    stretch: float = Field(1.0, description="speed-up applied (1 = none)")
    fitted: bool | None = Field(None, description="its speech ends inside its slot")
    overflow_seconds: float = Field(0.0, description="how much longer than its slot it was after the stretch")
    trimmed_seconds: float = 0.0
    shifted_seconds: float = Field(0.0, description="--overflow shift: how much later than asked it starts")
    file: str | None = Field(None, description="the cue's own file (fitted)")
    placed_start: float | None = Field(None, description="where its audio starts in the stem (seconds)")
    placed_end: float | None = None
    placed_samples: int | None = None
    error: str | None = None
    signature: str = Field("", description="what the cue was made from (text, times, voice, format): a change "
                           "discards its previous take")


class Report(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: int = REPORT_VERSION
    script: str
    script_format: str
    script_sha256: str = ""
    output: str = Field(description="the stem")
    sample_rate: int
    channels: int
    bit_depth: int
    max_stretch: float
    overflow: str
    record_in: str | None = None
    fps: str | None = None
    length_seconds: float | None = None
    length_samples: int | None = None
    state: Literal["running", "done", "incomplete"] = "running"
    cues: list[CueRecord] = Field(default_factory=list)
    skipped: list[dict] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    overflows: list[int] = Field(default_factory=list, description="cues longer than their slot after the stretch")
    subtitles: list[str] = Field(default_factory=list, description="the spoken SRT/VTT files")

    def cue(self, index: int) -> CueRecord | None:
        return next((c for c in self.cues if c.index == index), None)


def load_report(path: str | Path) -> Report | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return Report.model_validate(json.loads(p.read_text(encoding="utf-8")))
    except (ValueError, OSError):
        return None  # an unreadable old report: start afresh (its files stay where they are)


def save_report(report: Report, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(report.model_dump_json(indent=1))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def write_spoken_subtitles(report: Report, paths: list[Path]) -> list[Path]:
    """SRT / WebVTT (by suffix) of what was spoken, at the times it sounds in the stem."""
    import pysubs2

    subs = pysubs2.SSAFile()
    for c in sorted(report.cues, key=lambda c: (c.placed_start or 0.0, c.index)):
        if c.state != "done" or c.placed_start is None or c.placed_end is None:
            continue
        start, end = round(c.placed_start * 1000), round(c.placed_end * 1000)
        text = f"{c.speaker}: {c.text}" if c.speaker else c.text
        subs.append(pysubs2.SSAEvent(start=start, end=max(end, start + 1), text=text))
    written = []
    for p in paths:
        fmt = {".srt": "srt", ".vtt": "vtt"}[p.suffix.lower()]
        subs.save(str(p), format_=fmt)
        written.append(p)
    return written
