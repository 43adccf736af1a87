"""Blender add-on: score the active movie strip of the Video Sequencer with unimoe-audio.

Install: Edit > Preferences > Add-ons > Install... and pick this file (or run it from the Text editor).
Then in the Sequencer: select a movie strip, Strip > "Score with unimoe-audio" (or F3 and search).
The unimoe-audio client must be importable from Blender's Python (docs/integrations.md) and a daemon
must be running (``unimoe-audio serve``).

What it does: reads the strip's file, its visible range (``frame_final_start``..``frame_final_end``) and
where the clip starts in the file (``frame_start``), the scene rate ``fps / fps_base`` as an exact
rational (24000/1001 ...), submits a ``video_score`` of exactly the strip's length in frames, polls the
daemon from a ``bpy.app.timers`` timer (Blender stays responsive) and, when done, adds a sound strip at
the strip's first frame on the first free channel above it.

The maths is in plain functions (:func:`scene_rate`, :func:`strip_request`, :func:`pick_channel`) that do
not need bpy, so they are tested outside Blender.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Iterable

try:
    from unimoe_audio.integrations.hostjob import HostJob, connect, describe_error
    from unimoe_audio.integrations.timeline import (
        frames_to_seconds, parse_rate, rate_string, samples_for_frames, vision_fps,
    )
except ImportError as _exc:  # pragma: no cover - only inside a misconfigured Blender
    _IMPORT_ERROR: Exception | None = _exc
else:
    _IMPORT_ERROR = None

bl_info = {
    "name": "unimoe-audio: score movie strip",
    "author": "unimoe-audio",
    "version": (0, 1, 0),
    "blender": (3, 6, 0),
    "location": "Video Sequencer > Strip > Score with unimoe-audio",
    "description": "Generate music for the active movie strip with a local unimoe-audio daemon",
    "category": "Sequencer",
}

POLL_EVERY_S = 0.5
MAX_CHANNEL = 128


# --------------------------------------------------------------------------------------------------
# pure helpers
# --------------------------------------------------------------------------------------------------
def scene_rate(fps: int, fps_base: float) -> Fraction:
    """Blender's ``scene.render.fps / fps_base`` as an exact rate: fps_base is a float32 (1.001 is stored as
    1.0010000467...), so the NTSC family snaps to 24000/1001, 30000/1001, 60000/1001."""
    return parse_rate(float(fps) / float(fps_base))


@dataclass
class StripRequest:
    video: str
    in_seconds: float
    out_seconds: float
    frames: int
    fps: str
    start_frame: int  # where the sound strip goes (the movie strip's first visible frame)
    samples: int  # expected length at the output rate
    warning: str = ""

    def fields(self, *, caption: str = "", mode: str = "vision", folder: str | None = None,
               sample_rate: int = 48000, seed: int | None = None, name: str | None = None) -> dict[str, Any]:
        f: dict[str, Any] = {"video": self.video, "caption": caption, "in_seconds": self.in_seconds,
                             "out_seconds": self.out_seconds, "mode": mode, "frames": self.frames, "fps": self.fps,
                             "fit_length": True, "sample_rate": sample_rate,
                             "frames_per_second": vision_fps(self.out_seconds - self.in_seconds)}
        if folder:
            f["folder"] = folder
        if seed is not None:
            f["seed"] = seed
        if name:
            f["name"] = name
        return f


def strip_request(filepath: str, frame_start: float, frame_final_start: int, frame_final_end: int, fps: int,
                  fps_base: float, *, strip_fps: float | None = None, sample_rate: int = 48000) -> StripRequest:
    """The request for a movie strip.

    ``frame_start`` is where the clip's frame 0 sits on the timeline (before trimming), so the visible part
    begins ``frame_final_start - frame_start`` frames into the file. Blender plays one movie frame per
    scene frame; when the movie's own rate (``strip_fps``) differs from the scene's, the strip is
    retimed and the in/out seconds follow the scene rate (a warning says so).
    """
    if frame_final_end <= frame_final_start:
        raise ValueError("the strip has no length")
    rate = scene_rate(fps, fps_base)
    offset = int(round(frame_final_start - frame_start))
    if offset < 0:
        raise ValueError("the strip starts before its clip (negative offset)")
    n = int(frame_final_end - frame_final_start)
    in_s = frames_to_seconds(offset, rate)
    warning = ""
    if strip_fps and abs(float(strip_fps) - float(rate)) > 0.01:
        warning = (f"the movie runs at {float(strip_fps):.3f} fps but the scene at {float(rate):.3f} fps; "
                   "times follow the scene rate")
    return StripRequest(video=filepath, in_seconds=float(in_s), out_seconds=float(in_s + frames_to_seconds(n, rate)),
                        frames=n, fps=rate_string(rate), start_frame=int(frame_final_start),
                        samples=samples_for_frames(n, rate, sample_rate), warning=warning)


def pick_channel(occupied: Iterable[tuple[int, int, int]], start: int, end: int, above: int) -> int:
    """The lowest channel above ``above`` with nothing overlapping ``start..end`` (strips given as
    ``(channel, frame_final_start, frame_final_end)``)."""
    busy: dict[int, list[tuple[int, int]]] = {}
    for ch, s, e in occupied:
        busy.setdefault(int(ch), []).append((int(s), int(e)))
    for ch in range(int(above) + 1, MAX_CHANNEL + 1):
        if all(e <= start or s >= end for s, e in busy.get(ch, [])):
            return ch
    raise ValueError("no free channel above the strip")


# --------------------------------------------------------------------------------------------------
# Blender glue
# --------------------------------------------------------------------------------------------------
def _strips(seq_editor: Any) -> Any:
    return getattr(seq_editor, "strips_all", None) or getattr(seq_editor, "sequences_all")


def _new_sound(seq_editor: Any, name: str, path: str, channel: int, frame: int) -> Any:
    coll = getattr(seq_editor, "strips", None) or seq_editor.sequences  # 4.4+: strips
    return coll.new_sound(name=name, filepath=path, channel=channel, frame_start=frame)


class ScoreRun:
    """One scoring of a strip: submitted at once, polled by a Blender timer, then the sound strip added."""

    def __init__(self, scene: Any, strip: Any, caption: str, mode: str, report: Any):
        import bpy

        self.scene_name = scene.name
        self.strip_name = strip.name
        self.report = report
        r = scene.render
        self.req = strip_request(bpy.path.abspath(strip.filepath), strip.frame_start, strip.frame_final_start,
                                 strip.frame_final_end, r.fps, r.fps_base, strip_fps=getattr(strip, "fps", None))
        self.channel_above = strip.channel
        self.client = connect()
        self.job = HostJob(self.client, "score", self.req.fields(caption=caption, mode=mode,
                                                                  name=f"{strip.name}-score"))
        self.job.submit()

    def tick(self) -> float | None:
        import bpy

        res = self.job.poll()
        if not res.final:
            return POLL_EVERY_S
        try:
            if res.state != "done":
                self.report({"ERROR"}, f"unimoe-audio: {res.state}: {res.error}")
                return None
            scene = bpy.data.scenes[self.scene_name]
            se = scene.sequence_editor
            occupied = [(s.channel, s.frame_final_start, s.frame_final_end) for s in _strips(se)]
            end = self.req.start_frame + self.req.frames
            ch = pick_channel(occupied, self.req.start_frame, end, self.channel_above)
            _new_sound(se, f"{self.strip_name} score", res.path, ch, self.req.start_frame)
            self.report({"INFO"}, f"unimoe-audio: added {res.path} on channel {ch}")
            return None
        finally:
            if res.final:
                self.client.close()


def _operator_class() -> Any:  # pragma: no cover - needs bpy
    import bpy

    class SEQUENCER_OT_unimoe_score(bpy.types.Operator):
        """Generate music for the active movie strip with unimoe-audio"""

        bl_idname = "sequencer.unimoe_score"
        bl_label = "Score with unimoe-audio"
        bl_options = {"REGISTER"}

        caption: bpy.props.StringProperty(name="Caption", default="")  # type: ignore[valid-type]
        mode: bpy.props.EnumProperty(  # type: ignore[valid-type]
            name="Mode", items=[("vision", "Vision", "follow the picture"),
                                ("reference", "Reference", "use the clip as a style reference")])

        @classmethod
        def poll(cls, context: Any) -> bool:
            se = context.scene.sequence_editor
            strip = se.active_strip if se else None
            return strip is not None and strip.type == "MOVIE"

        def invoke(self, context: Any, event: Any) -> Any:
            return context.window_manager.invoke_props_dialog(self)

        def execute(self, context: Any) -> Any:
            if _IMPORT_ERROR is not None:
                self.report({"ERROR"}, f"cannot import the unimoe-audio client: {_IMPORT_ERROR}")
                return {"CANCELLED"}
            se = context.scene.sequence_editor
            try:
                run = ScoreRun(context.scene, se.active_strip, self.caption, self.mode, self.report)
            except Exception as exc:  # noqa: BLE001 - shown to the user
                self.report({"ERROR"}, f"unimoe-audio: {describe_error(exc)}")
                return {"CANCELLED"}
            if run.req.warning:
                self.report({"WARNING"}, run.req.warning)
            reporter = _TimerReport()
            run.report = reporter
            bpy.app.timers.register(run.tick, first_interval=POLL_EVERY_S)
            self.report({"INFO"}, f"unimoe-audio: job {run.job.job_id} queued ({run.req.frames} frames)")
            return {"FINISHED"}

    return SEQUENCER_OT_unimoe_score


class _TimerReport:  # pragma: no cover - needs bpy
    """Reports from a timer (the operator is gone by then): print and show in the status bar."""

    def __call__(self, kind: set[str], text: str) -> None:
        print(text)
        try:
            import bpy

            for w in bpy.context.window_manager.windows:
                w.workspace.status_text_set(text if "ERROR" in kind else None)
        except Exception:  # noqa: BLE001
            pass


_classes: list[Any] = []


def _menu(self: Any, context: Any) -> None:  # pragma: no cover - needs bpy
    self.layout.operator("sequencer.unimoe_score")


def register() -> None:  # pragma: no cover - needs bpy
    import bpy

    cls = _operator_class()
    bpy.utils.register_class(cls)
    _classes.append(cls)
    bpy.types.SEQUENCER_MT_strip.append(_menu)


def unregister() -> None:  # pragma: no cover - needs bpy
    import bpy

    bpy.types.SEQUENCER_MT_strip.remove(_menu)
    while _classes:
        bpy.utils.unregister_class(_classes.pop())


if __name__ == "__main__":  # pragma: no cover - run from Blender's text editor
    register()
