"""The values of a scoring run: the shots of an edit (whatever it was read from) and the cues planned
from them, one ``video_score`` request each. Readers (:mod:`.score_readers`) make an :class:`Edit`;
writers (:mod:`.score_writers`, :mod:`.mlt`) and the runner (:mod:`.score_runner`) use the cues."""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from .timeline import frames_to_seconds, frames_to_timecode, rate_string, samples_for_frames, vision_fps

SCORE_TRACK = "unimoe score"
OTIO_HELP = "reading or writing OpenTimelineIO needs the 'opentimelineio' package: pip install 'unimoe-audio[timeline]'"


def require_otio():
    try:
        import opentimelineio as otio
    except ImportError:
        raise RuntimeError(OTIO_HELP) from None
    return otio


@dataclass
class Cue:
    """One score request: seconds into ``video``, ``frames`` at ``fps`` long, spotted at ``record_in``."""

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
    record_frame: int = 0  # record-in in frames from the timeline's start (where the clip goes)
    project: str | None = None
    scene: str | None = None
    caption: str | None = None  # this shot's own caption (a marker's); else the run's
    spot: bool = True  # write record_in into the file (BWF/iXML); off when record_in is not a timeline's
    result: dict[str, Any] = field(default_factory=dict)

    def fields(self, *, caption: str = "", mode: str = "vision", folder: str | None = None,
               sample_rate: int = 48000, channels: int | None = None, seed: int | None = None,
               tag: str | None = None) -> dict[str, Any]:
        """Flat fields for ``Client.submit("score", ...)``."""
        text = self.caption if self.caption else caption
        f: dict[str, Any] = {"video": self.video, "caption": text, "in_seconds": self.in_seconds,
                             "out_seconds": self.out_seconds, "mode": mode, "frames": self.frames, "fps": self.fps,
                             "fit_length": True, "sample_rate": sample_rate,
                             "frames_per_second": vision_fps(self.out_seconds - self.in_seconds), "name": self.name}
        if self.spot and self.record_in:  # spot the file: BWF time reference + iXML
            f.update(record_in=self.record_in, project=self.project, scene=self.scene, note=text or None)
        if folder:
            f["folder"] = folder
        if channels:
            f["channels"] = channels
        if seed is not None:
            f["seed"] = seed
        f["tag"] = tag or self.name
        return f


@dataclass
class Shot:
    """One picture clip: ``frames`` long at ``record`` (frames from the timeline's start), showing
    ``video`` from ``src_in`` (frames into the file). ``skip`` says why it is not scored."""

    number: int
    name: str
    source: str
    video: Path | None
    src_in: int
    record: int
    frames: int
    markers: list[str] = field(default_factory=list)
    skip: str | None = None


@dataclass
class Edit:
    """A timeline reduced to what scoring needs; ``otio`` keeps the OTIO timeline it was read from."""

    title: str
    rate: Fraction
    start: int  # the timeline's first frame as timecode (record-in of frame 0), in frames
    drop: bool
    shots: list[Shot]
    otio: Any = None
    warnings: list[str] = field(default_factory=list)

    def tc(self, record: int) -> str:
        return frames_to_timecode(self.start + record, self.rate, self.drop)

    def length(self) -> int:
        return max((s.record + s.frames for s in self.shots), default=0)


def plan(edit: Edit, *, marker: str | None = None, sample_rate: int = 48000, prefix: str | None = None,
         project: str | None = None, marker_captions: bool = False) -> tuple[list[Cue], list[dict[str, Any]]]:
    """The cues of an edit's shots (only those with a marker containing ``marker``, when given: ``""``
    means any marker), and the shots skipped, with why."""
    r = edit.rate
    prefix = prefix or edit.title.replace(" ", "_") or "cue"
    cues: list[Cue] = []
    skipped: list[dict[str, Any]] = []
    for shot in edit.shots:
        if shot.skip:
            skipped.append({"event": shot.number, "why": shot.skip})
            continue
        if marker is not None:
            hits = [m for m in shot.markers if marker.lower() in m.lower()]
            if not hits:
                skipped.append({"event": shot.number, "why": "no marker" + (f" with {marker!r}" if marker else "")})
                continue
        assert shot.video is not None
        in_s = frames_to_seconds(shot.src_in, r)
        out_s = in_s + frames_to_seconds(shot.frames, r)
        caption = shot.markers[0] if marker_captions and shot.markers else None
        cues.append(Cue(name=f"{prefix}-{shot.number:03d}", video=str(shot.video), in_seconds=float(in_s),
                        out_seconds=float(out_s), frames=shot.frames, fps=rate_string(r),
                        record_in=edit.tc(shot.record), record_out=edit.tc(shot.record + shot.frames),
                        event=shot.number, expected_samples=samples_for_frames(shot.frames, r, sample_rate),
                        record_frame=shot.record, project=project or edit.title, scene=shot.name, caption=caption))
    return cues, skipped


def done_cues(cues: list[Cue]) -> list[Cue]:
    return [c for c in cues if c.result.get("status") == "done"]


def lanes(cues: list[Cue]) -> list[list[Cue]]:
    """Cues in record order, split into lanes (tracks) so none overlaps another in its lane."""
    lanes: list[list[Cue]] = []
    for c in sorted(cues, key=lambda c: c.record_frame):
        for lane in lanes:
            last = lane[-1]
            if last.record_frame + last.frames <= c.record_frame:
                lane.append(c)
                break
        else:
            lanes.append([c])
    return lanes
