"""Blender add-on: music for a movie strip, speech for a text strip, from a local unimoe-audio daemon.

Install the zip built by ``python -m unimoe_audio.integrations.blender_zip build-zip unimoe_audio_vse.zip``
(Edit > Preferences > Add-ons > Install from Disk), enable "unimoe-audio". The unimoe-audio client must be
importable from Blender's Python and a daemon must run (``unimoe-audio serve``): docs/integrations.md.

Video Sequencer > sidebar (N) > **unimoe-audio** tab: caption, mode, voice; *Score movie strip* (the active
movie strip), *Speak text strip* (the active text strip), a progress bar and *Cancel*. The result goes on
the first free channel above the strip, starting at its first frame, exactly its length in frames. Files
are written next to the saved .blend (``//unimoe/``) when the daemon may write there, else into the
daemon's output folder and copied next to the .blend; unsaved files keep the daemon's folder.

Written for Blender's property registration: no postponed annotations (``from __future__ import
annotations`` would turn the class annotations into strings that ``typing.get_type_hints`` must resolve,
and properties then fail to register) and ``bpy`` imported at module level. Works with the 4.2 LTS
collection names (``sequences``) and the 4.4+/5.x ones (``strips``).
"""
import os
from typing import Any, Callable, Optional

import bpy

try:
    from unimoe_audio.integrations.blender_vse_score import (extend_request, movie_for_sound, pick_channel,
                                                             strip_request, text_request)
    from unimoe_audio.integrations.hostjob import connect, copy_into, describe_error, submit_with_fallback
except ImportError as _exc:  # only inside a Blender whose Python cannot see the client
    _IMPORT_ERROR: Optional[Exception] = _exc
else:
    _IMPORT_ERROR = None

bl_info = {
    "name": "unimoe-audio",
    "author": "unimoe-audio",
    "version": (0, 2, 0),
    "blender": (4, 2, 0),
    "location": "Video Sequencer > Sidebar > unimoe-audio",
    "description": "Music for a movie strip and speech for a text strip, from a local unimoe-audio daemon",
    "category": "Sequencer",
}

POLL_EVERY_S = 0.5  # the timer's period; each tick reads events already received (never waits on the daemon)
SUBFOLDER = "unimoe"


# --------------------------------------------------------------------------------------------------
# 4.2 / 5.x names
# --------------------------------------------------------------------------------------------------
def top_strips(se: Any) -> Any:
    """The top-level strip collection: ``strips`` (4.4+, 5.x) or ``sequences`` (4.2 LTS)."""
    coll = getattr(se, "strips", None)
    return coll if coll is not None else se.sequences


def all_strips(se: Any) -> Any:
    coll = getattr(se, "strips_all", None)
    return coll if coll is not None else se.sequences_all


def blend_folder() -> Optional[str]:
    """``<the .blend's folder>/unimoe``, or None for an unsaved file."""
    if not bpy.data.filepath:
        return None
    return os.path.join(os.path.dirname(bpy.path.abspath(bpy.data.filepath)), SUBFOLDER)


# --------------------------------------------------------------------------------------------------
# a job and its strip
# --------------------------------------------------------------------------------------------------
class Run:
    """One job: submitted at once, followed by :func:`tick`, then a sound strip added above ``strip``."""

    def __init__(self, scene: Any, strip: Any, kind: str, fields: dict, start_frame: int, frames: int,
                 above: Optional[int] = None):
        self.scene_name = scene.name
        self.strip_name = strip.name
        self.channel_above = strip.channel if above is None else above  # the new strip goes on a free channel above
        self.start_frame = start_frame
        self.frames = frames
        self.client = connect()
        try:
            self.job, self.copy_to = submit_with_fallback(self.client, kind, fields)
        except Exception:
            self.client.close()
            raise
        self.state = "queued"
        self.result_strip = ""
        self.path = ""
        self.error = ""

    @property
    def job_id(self) -> str:
        return self.job.job_id or ""

    def step(self) -> bool:
        """One look at the job; True while it runs."""
        res = self.job.poll()
        scene = bpy.data.scenes.get(self.scene_name)
        if scene is not None and res.changed:
            scene.unimoe.progress = float(res.fraction)
            scene.unimoe.status = f"{res.stage} {int(res.fraction * 100)} %"
        if not res.final:
            return True
        try:
            if res.state == "done":
                self._place(scene, res.path)
            else:
                self.state, self.error = res.state, res.error or res.state
                _say(scene, f"{res.state}: {res.error}" if res.error else res.state, error=res.state == "failed")
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.state, self.error = "failed", str(exc)
            _say(scene, f"could not add the sound strip: {exc}", error=True)
        finally:
            self.close()
        return False

    def _place(self, scene: Any, path: str) -> None:
        if scene is None:
            raise RuntimeError(f"the scene {self.scene_name!r} is gone")
        if self.copy_to:
            path = copy_into(self.copy_to, path)
        se = scene.sequence_editor_create()
        occupied = [(s.channel, s.frame_final_start, s.frame_final_end) for s in all_strips(se)]
        channel = pick_channel(occupied, self.start_frame, self.start_frame + self.frames, self.channel_above)
        strip = top_strips(se).new_sound(name=f"{self.strip_name} (unimoe)", filepath=path, channel=channel,
                                         frame_start=self.start_frame)
        if bpy.data.filepath:
            try:  # relative to the .blend when it lies beside it, so the project folder can move
                strip.sound.filepath = bpy.path.relpath(path)
            except ValueError:  # another drive (Windows)
                pass
        self.state, self.path, self.result_strip = "done", path, strip.name
        scene.unimoe.progress = 1.0
        _say(scene, f"added {os.path.basename(path)} on channel {channel}")

    def cancel(self) -> None:
        self.job.cancel()

    def close(self) -> None:
        if self.job.watch is not None:
            self.job.watch.close()
        self.client.close()


RUNS: list = []  # jobs still running
FINISHED: list = []  # jobs that ended (a test or a script can look at them)


def tick() -> Optional[float]:
    """The timer: one look at every running job; returns the next interval, or None when none is left
    (Blender then drops the timer). Scripts and tests without Blender's event loop call it directly."""
    for run in list(RUNS):
        if not run.step():
            RUNS.remove(run)
            FINISHED.append(run)
    _redraw()
    return POLL_EVERY_S if RUNS else None


def _start(run: Run) -> None:
    RUNS.append(run)
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=POLL_EVERY_S)


def _queue(op: Any, scene: Any, build: Callable[[], tuple[Run, str | None]]) -> set[str]:
    """An operator's submit: build the run (request, fields, job), report a refusal or queue it."""
    try:
        run, warning = build()
    except Exception as exc:  # noqa: BLE001 - shown to the user
        op.report({"ERROR"}, f"unimoe-audio: {describe_error(exc)}")
        return {"CANCELLED"}
    if warning:
        op.report({"WARNING"}, warning)
    _start(run)
    scene.unimoe.progress, scene.unimoe.status = 0.0, f"queued ({run.frames} frames)"
    op.report({"INFO"}, f"unimoe-audio: job {run.job_id} queued ({run.frames} frames)")
    return {"FINISHED"}


def _say(scene: Any, text: str, error: bool = False) -> None:
    print(f"unimoe-audio: {text}")
    if scene is not None:
        scene.unimoe.status = text


def _redraw() -> None:
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type == "SEQUENCE_EDITOR":
                area.tag_redraw()


# --------------------------------------------------------------------------------------------------
# properties, operators, panel
# --------------------------------------------------------------------------------------------------
MODES = [("vision", "Vision", "Music that follows the picture"),
         ("reference", "Reference", "Use the clip as a style reference")]


class UnimoeSettings(bpy.types.PropertyGroup):
    caption: bpy.props.StringProperty(name="Caption", description="What the music should be", default="")
    mode: bpy.props.EnumProperty(name="Mode", items=MODES, default="vision")
    voice: bpy.props.StringProperty(name="Voice", description="A saved voice (unimoe-audio voices ls)", default="")
    progress: bpy.props.FloatProperty(name="Progress", min=0.0, max=1.0, default=0.0, subtype="FACTOR")
    status: bpy.props.StringProperty(name="Status", default="")


def _check_client(op: Any) -> bool:
    if _IMPORT_ERROR is not None:
        op.report({"ERROR"}, f"cannot import the unimoe-audio client: {_IMPORT_ERROR} (see docs/integrations.md)")
        return False
    return True


class SEQUENCER_OT_unimoe_score(bpy.types.Operator):
    """Generate music for the active movie strip with unimoe-audio"""

    bl_idname = "sequencer.unimoe_score"
    bl_label = "Score Movie Strip"
    bl_options = {"REGISTER"}

    caption: bpy.props.StringProperty(name="Caption", default="")
    mode: bpy.props.EnumProperty(name="Mode", items=MODES, default="vision")

    @classmethod
    def poll(cls, context: Any) -> bool:
        se = context.scene.sequence_editor if context.scene else None
        strip = se.active_strip if se else None
        return strip is not None and strip.type == "MOVIE"

    def invoke(self, context: Any, event: Any) -> Any:
        self.caption, self.mode = context.scene.unimoe.caption, context.scene.unimoe.mode
        return self.execute(context)

    def execute(self, context: Any) -> Any:
        if not _check_client(self):
            return {"CANCELLED"}
        scene = context.scene
        strip = scene.sequence_editor.active_strip
        r = scene.render

        def build() -> tuple[Run, str | None]:
            req = strip_request(bpy.path.abspath(strip.filepath), strip.frame_start, strip.frame_final_start,
                                strip.frame_final_end, r.fps, r.fps_base, strip_fps=getattr(strip, "fps", None))
            fields = req.fields(caption=self.caption, mode=self.mode, folder=blend_folder(),
                                name=bpy.path.clean_name(f"{strip.name}-score"))
            return Run(scene, strip, "score", fields, req.start_frame, req.frames), req.warning

        return _queue(self, scene, build)


class SEQUENCER_OT_unimoe_speech(bpy.types.Operator):
    """Speak the active text strip's text with unimoe-audio, to the strip's length"""

    bl_idname = "sequencer.unimoe_speech"
    bl_label = "Speak Text Strip"
    bl_options = {"REGISTER"}

    voice: bpy.props.StringProperty(name="Voice", default="")

    @classmethod
    def poll(cls, context: Any) -> bool:
        se = context.scene.sequence_editor if context.scene else None
        strip = se.active_strip if se else None
        return strip is not None and strip.type == "TEXT"

    def invoke(self, context: Any, event: Any) -> Any:
        self.voice = context.scene.unimoe.voice
        return self.execute(context)

    def execute(self, context: Any) -> Any:
        if not _check_client(self):
            return {"CANCELLED"}
        scene = context.scene
        strip = scene.sequence_editor.active_strip
        r = scene.render

        def build() -> tuple[Run, str | None]:
            req = text_request(strip.text, strip.frame_final_start, strip.frame_final_end, r.fps, r.fps_base)
            fields = req.fields(voice=self.voice, folder=blend_folder(),
                                name=bpy.path.clean_name(f"{strip.name}-speech"))
            return Run(scene, strip, "speech", fields, req.start_frame, req.frames), None

        return _queue(self, scene, build)


class SEQUENCER_OT_unimoe_extend(bpy.types.Operator):
    """Continue the active sound strip's music to the end of its movie strip with unimoe-audio"""

    bl_idname = "sequencer.unimoe_extend"
    bl_label = "Extend Sound to Movie End"
    bl_options = {"REGISTER"}

    caption: bpy.props.StringProperty(name="Caption", default="")

    @classmethod
    def poll(cls, context: Any) -> bool:
        se = context.scene.sequence_editor if context.scene else None
        strip = se.active_strip if se else None
        return strip is not None and strip.type == "SOUND"

    def invoke(self, context: Any, event: Any) -> Any:
        self.caption = context.scene.unimoe.caption
        return self.execute(context)

    def execute(self, context: Any) -> Any:
        if not _check_client(self):
            return {"CANCELLED"}
        scene = context.scene
        se = scene.sequence_editor
        strip = se.active_strip
        r = scene.render

        def build() -> tuple[Run, str | None]:
            movie = movie_for_sound(all_strips(se), strip)
            req = extend_request(bpy.path.abspath(strip.sound.filepath), strip.frame_start, strip.frame_final_start,
                                 strip.frame_final_end, movie.frame_final_end, r.fps, r.fps_base)
            fields = req.fields(caption=self.caption or "continue the music", folder=blend_folder(),
                                name=bpy.path.clean_name(f"{strip.name}-extended"))
            # butted: on the sound strip's own channel when it is free after the strip
            return Run(scene, strip, "music", fields, req.start_frame, req.frames, above=strip.channel - 1), None

        return _queue(self, scene, build)


class SEQUENCER_OT_unimoe_cancel(bpy.types.Operator):
    """Cancel this scene's unimoe-audio jobs"""

    bl_idname = "sequencer.unimoe_cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.scene is not None and any(r.scene_name == context.scene.name for r in RUNS)

    def execute(self, context: Any) -> Any:
        for run in [r for r in RUNS if r.scene_name == context.scene.name]:
            try:
                run.cancel()
            except Exception as exc:  # noqa: BLE001
                self.report({"ERROR"}, f"unimoe-audio: {describe_error(exc)}")
        return {"FINISHED"}


class SEQUENCER_PT_unimoe(bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"
    bl_region_type = "UI"
    bl_category = "unimoe-audio"
    bl_label = "unimoe-audio"

    def draw(self, context: Any) -> None:
        layout = self.layout
        s = context.scene.unimoe
        layout.prop(s, "caption")
        layout.prop(s, "mode")
        layout.operator(SEQUENCER_OT_unimoe_score.bl_idname, icon="SOUND")
        layout.operator(SEQUENCER_OT_unimoe_extend.bl_idname, icon="FORWARD")
        layout.prop(s, "voice")
        layout.operator(SEQUENCER_OT_unimoe_speech.bl_idname, icon="SPEAKER")
        running = any(r.scene_name == context.scene.name for r in RUNS)
        if running or s.status:
            row = layout.row(align=True)
            progress = getattr(row, "progress", None)  # UILayout.progress: Blender 4.0+
            if progress is not None and running:
                progress(factor=s.progress, type="BAR", text=s.status)
            else:
                row.label(text=s.status)
            if running:
                row.operator(SEQUENCER_OT_unimoe_cancel.bl_idname, text="", icon="CANCEL")


def _menu(self: Any, context: Any) -> None:
    self.layout.operator(SEQUENCER_OT_unimoe_score.bl_idname)
    self.layout.operator(SEQUENCER_OT_unimoe_speech.bl_idname)
    self.layout.operator(SEQUENCER_OT_unimoe_extend.bl_idname)


CLASSES = (UnimoeSettings, SEQUENCER_OT_unimoe_score, SEQUENCER_OT_unimoe_speech, SEQUENCER_OT_unimoe_extend,
           SEQUENCER_OT_unimoe_cancel, SEQUENCER_PT_unimoe)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.unimoe = bpy.props.PointerProperty(type=UnimoeSettings)
    bpy.types.SEQUENCER_MT_strip.append(_menu)


def unregister() -> None:
    bpy.types.SEQUENCER_MT_strip.remove(_menu)
    if bpy.app.timers.is_registered(tick):
        bpy.app.timers.unregister(tick)
    for run in RUNS:
        run.close()
    RUNS.clear()
    del bpy.types.Scene.unimoe
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)


if __name__ == "__main__":  # run from Blender's text editor
    register()
