"""Blender add-on: music for a movie strip, speech for a text strip, from a local unimoe-audio daemon.

Install the zip built by ``python -m unimoe_audio.integrations.blender_zip build-zip --with-client
unimoe_audio_vse.zip`` (Edit > Preferences > Add-ons > Install from Disk), enable "unimoe-audio". That zip
carries the client; Blender's Python needs only pyzmq, pydantic, pydantic-settings and platformdirs
(docs/integrations.md). A daemon must run (``unimoe-audio serve``).

Video Sequencer > sidebar (N) > **unimoe-audio** tab: caption, mode, voice; *Score movie strip* (the active
movie strip), *Speak text strip* (the active text strip), *Voice selected text strips* and *Voice subtitle
file* (a voiceover: every cue spoken, fitted to its slot, one sound strip per cue at its frame; the client's
``Voiceover``, as ``unimoe-audio voiceover`` runs it), a progress bar and *Cancel*. The result goes on
the first free channel above the strip, starting at its first frame, exactly its length in frames. Files
are written next to the saved .blend (``//unimoe/``) when the daemon may write there, else into the
daemon's output folder and copied next to the .blend; an unsaved file's take goes to the daemon's output
folder, which the panel names. Jobs still running are listed in the scene (saved with the .blend): when
Blender closes before they end, reopening the file places their results.

Written for Blender's property registration: no postponed annotations (``from __future__ import
annotations`` would turn the class annotations into strings that ``typing.get_type_hints`` must resolve,
and properties then fail to register) and ``bpy`` imported at module level. Works with the 4.2 LTS
collection names (``sequences``) and the 4.4+/5.x ones (``strips``).
"""
import os
import sys
from typing import Any, Callable, Optional

import bpy

# A zip built with --with-client carries the client side here (integrations/blender_zip.py): it comes
# first, so the add-on runs with the client it was built with.
_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendor")
if os.path.isdir(os.path.join(_VENDOR, "unimoe_audio")) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

try:
    from unimoe_audio.client.voiceover import Voiceover, VoiceoverOptions, parse_voice_map, read_script
    from unimoe_audio.integrations.blender_voiceover import cue_frame, output_for, scene_rate, script_from_strips
    from unimoe_audio.integrations.blender_vse_score import (extend_request, movie_for_sound, pick_channel,
                                                             strip_request, text_request)
    from unimoe_audio.integrations.hostjob import HostJob, connect, copy_into, describe_error, submit_with_fallback
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
    """One job: submitted (or resumed after the .blend was reopened), followed by :func:`tick`, then a
    sound strip added above the strip it was made for. Its id stays in the scene's ``unimoe.pending``
    (saved in the .blend) until it ends, so a job outlives the Blender session that asked for it."""

    def __init__(self, scene: Any, strip_name: str, channel_above: int, start_frame: int, frames: int,
                 client: Any, job: Any, copy_to: Optional[str]):
        self.scene_name = scene.name
        self.strip_name = strip_name
        self.channel_above = channel_above
        self.start_frame = start_frame
        self.frames = frames
        self.client, self.job, self.copy_to = client, job, copy_to
        self.state = "queued"
        self.result_strip = ""
        self.path = ""
        self.error = ""

    @classmethod
    def submit(cls, scene: Any, strip: Any, kind: str, fields: dict, start_frame: int, frames: int,
               above: Optional[int] = None) -> "Run":
        """``above``: the new strip goes on the first free channel above this one (default: ``strip``'s)."""
        client = connect()
        try:
            job, copy_to = submit_with_fallback(client, kind, fields)
        except Exception:
            client.close()
            raise
        channel = strip.channel if above is None else above
        run = cls(scene, strip.name, channel, start_frame, frames, client, job, copy_to)
        item = scene.unimoe.pending.add()
        item.job_id, item.kind, item.strip_name, item.channel_above = run.job_id, kind, strip.name, channel
        item.start_frame, item.frames, item.copy_to = start_frame, frames, copy_to or ""
        return run

    @classmethod
    def resume(cls, scene: Any, item: Any) -> "Run":
        """A job this .blend was waiting for when it was saved."""
        client = connect()
        try:
            job = HostJob.resume(client, item.job_id, item.kind)
        except Exception:
            client.close()
            raise
        return cls(scene, item.strip_name, item.channel_above, item.start_frame, item.frames, client, job,
                   item.copy_to or None)

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
            _forget(scene, self.job_id)
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


class VoiceRun:
    """A voiceover: every cue a daemon job, followed by :func:`tick`; when all have ended, one sound strip
    per spoken cue at its frame (the stem, report and spoken subtitles are written beside them)."""

    def __init__(self, scene: Any, script: Any, options: Any, out: str, *, above: int, offset: int):
        self.scene_name = scene.name
        self.rate = scene_rate(scene.render.fps, scene.render.fps_base)
        self.above, self.offset = above, offset
        self.client = connect()
        self.notes: list = []
        try:
            self.vo = Voiceover(self.client, script, options, out, on_note=self.notes.append)
            self.vo.plan()
            self.vo.submit()
        except Exception:
            self.client.close()
            raise
        self.state = "running"
        self.error = ""
        self.report: Any = None
        self.strips: list = []  # names of the sound strips added

    @property
    def job_id(self) -> str:
        return f"voiceover {self.vo.paths['stem'].name}"

    def step(self) -> bool:
        scene = bpy.data.scenes.get(self.scene_name)
        try:
            if self.vo.poll(0.0):
                if scene is not None:
                    rep = self.vo.report
                    scene.unimoe.progress = float(self.vo.progress())
                    scene.unimoe.status = (f"voiceover {sum(c.state == 'done' for c in rep.cues)}/{len(rep.cues)} cues"
                                           if rep is not None else "voiceover")
                return True
            self.report = self.vo.finish()
            self._place(scene)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.state, self.error = "failed", str(exc)
            _say(scene, f"voiceover failed: {exc}", error=True)
        finally:
            if self.state != "running" or self.report is not None:
                self.close()
        return False

    def _place(self, scene: Any) -> None:
        if scene is None:
            raise RuntimeError(f"the scene {self.scene_name!r} is gone")
        se = scene.sequence_editor_create()
        rep = self.report
        for c in sorted((c for c in rep.cues if c.state == "done" and c.file), key=lambda c: c.placed_start):
            first = cue_frame(c.placed_start, self.rate, self.offset)
            last = cue_frame(c.placed_end, self.rate, self.offset) + 1
            occupied = [(s.channel, s.frame_final_start, s.frame_final_end) for s in all_strips(se)]
            channel = pick_channel(occupied, first, last, self.above)
            strip = top_strips(se).new_sound(name=f"cue {c.index} (unimoe)", filepath=c.file, channel=channel,
                                             frame_start=first)
            if bpy.data.filepath:
                try:
                    strip.sound.filepath = bpy.path.relpath(c.file)
                except ValueError:
                    pass
            self.strips.append(strip.name)
        done = sum(c.state == "done" for c in rep.cues)
        self.state = "done" if rep.state == "done" else ("cancelled" if self.vo.cancelled else "failed")
        if self.state == "failed":
            self.error = "; ".join(f"cue {c.index}: {c.error}" for c in rep.cues if c.state == "failed")
        scene.unimoe.progress = 1.0 if self.state == "done" else scene.unimoe.progress
        over = f", {len(rep.overflows)} over their slot" if rep.overflows else ""
        _say(scene, f"voiced {done}/{len(rep.cues)} cues into {len(self.strips)} sound strips{over}",
             error=self.state == "failed")

    def cancel(self) -> None:
        self.vo.cancel()

    def close(self) -> None:
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


def _forget(scene: Any, job_id: str) -> None:
    """The job ended: it is no longer pending in the .blend."""
    if scene is None:
        return
    pending = scene.unimoe.pending
    for i in reversed(range(len(pending))):
        if pending[i].job_id == job_id:
            pending.remove(i)


def resume_pending() -> int:
    """Follow again the jobs the open .blend's scenes were waiting for (when it was saved); returns how
    many are followed. With no daemon reachable they stay pending, and the panel says so."""
    followed = {r.job_id for r in RUNS}
    n = 0
    for scene in bpy.data.scenes:
        waiting = [item for item in scene.unimoe.pending if item.job_id not in followed]
        for item in waiting:
            try:
                run = Run.resume(scene, item)
            except Exception as exc:  # noqa: BLE001 - shown to the user; the ids stay for the next try
                _say(scene, f"{len(waiting)} unfinished job(s) saved in this file: {describe_error(exc)} "
                            "(Resume in this panel tries again)", error=True)
                break
            _start(run)
            followed.add(run.job_id)
            n += 1
        if n:
            _say(scene, f"following {n} job(s) started before this file was closed")
    return n


@bpy.app.handlers.persistent
def _on_load(_: Any = None) -> None:
    """After a .blend is opened: the previous file's runs end here (their ids were saved with it, if it
    was saved), and the new file's pending jobs are followed; finished ones are placed at the next tick."""
    for run in RUNS:
        run.close()
    RUNS.clear()
    if _IMPORT_ERROR is None:
        resume_pending()


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
    if not bpy.data.filepath:
        warning = ((warning + "; ") if warning else "") + unsaved_note(run)
    if warning:
        op.report({"WARNING"}, warning)
    _start(run)
    scene.unimoe.progress, scene.unimoe.status = 0.0, f"queued ({run.frames} frames)"
    if not bpy.data.filepath:
        scene.unimoe.status += f" - {unsaved_note(run)}"
    op.report({"INFO"}, f"unimoe-audio: job {run.job_id} queued ({run.frames} frames)")
    return {"FINISHED"}


def unsaved_note(run: Run) -> str:
    """What happens to a take asked for from an unsaved .blend, naming the folder it goes to."""
    try:
        folder = str(run.client.settings.output_path) if run.client.remote else run.client.status().output_dir
    except Exception:  # noqa: BLE001 - the note still says what to do
        folder = "the daemon's output folder"
    return (f"this .blend is not saved: the take goes to {folder}; save the .blend to keep takes beside it "
            "and to get unfinished jobs back after reopening")


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


class UnimoePending(bpy.types.PropertyGroup):
    """A job this scene waits for (saved in the .blend; the strip is added when it ends)."""

    job_id: bpy.props.StringProperty(name="Job")
    kind: bpy.props.StringProperty(name="Kind")
    strip_name: bpy.props.StringProperty(name="Strip")
    channel_above: bpy.props.IntProperty(name="Channel")
    start_frame: bpy.props.IntProperty(name="Start")
    frames: bpy.props.IntProperty(name="Frames")
    copy_to: bpy.props.StringProperty(name="Copy to", subtype="DIR_PATH")


class UnimoeSettings(bpy.types.PropertyGroup):
    caption: bpy.props.StringProperty(name="Caption", description="What the music should be", default="")
    mode: bpy.props.EnumProperty(name="Mode", items=MODES, default="vision")
    voice: bpy.props.StringProperty(name="Voice", description="A saved voice (unimoe-audio voices ls)", default="")
    voice_map: bpy.props.StringProperty(name="Speakers", default="",
                                        description="Speakers to saved voices: ALICE=alice, BOB=narrator")
    subtitles: bpy.props.StringProperty(name="Subtitles", subtype="FILE_PATH", default="",
                                        description="An SRT, WebVTT or ASS file, or a plain timecoded script")
    progress: bpy.props.FloatProperty(name="Progress", min=0.0, max=1.0, default=0.0, subtype="FACTOR")
    status: bpy.props.StringProperty(name="Status", default="")
    pending: bpy.props.CollectionProperty(type=UnimoePending)


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
            return Run.submit(scene, strip, "score", fields, req.start_frame, req.frames), req.warning

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
            return Run.submit(scene, strip, "speech", fields, req.start_frame, req.frames), None

        return _queue(self, scene, build)


OVERFLOWS = [("trim", "Trim", "Cut a cue still too long at its end"),
             ("shift", "Shift", "Keep it whole; later cues move later"),
             ("report", "Report", "Leave it running into the silence after it; cut only at the next cue")]
SOURCES = [("SELECTED", "Selected text strips", "Speak the selected text strips at their frames"),
           ("FILE", "Subtitle file", "Speak a subtitle file's cues, its zero at the scene's first frame")]


class SEQUENCER_OT_unimoe_voiceover(bpy.types.Operator):
    """Voice the selected text strips, or a subtitle file, into sound strips at their frames"""

    bl_idname = "sequencer.unimoe_voiceover"
    bl_label = "Voice Script"
    bl_options = {"REGISTER"}

    source: bpy.props.EnumProperty(name="Source", items=SOURCES, default="SELECTED")
    filepath: bpy.props.StringProperty(name="Subtitles", subtype="FILE_PATH", default="")
    voice: bpy.props.StringProperty(name="Voice", default="")
    voice_map: bpy.props.StringProperty(name="Speakers", default="")
    max_stretch: bpy.props.FloatProperty(name="Max Stretch", min=1.0, max=1.5, default=1.15)
    overflow: bpy.props.EnumProperty(name="Overflow", items=OVERFLOWS, default="trim")

    @classmethod
    def poll(cls, context: Any) -> bool:
        return context.scene is not None

    def invoke(self, context: Any, event: Any) -> Any:
        s = context.scene.unimoe
        self.voice, self.voice_map = s.voice, s.voice_map
        if self.source == "FILE" and not self.filepath:
            self.filepath = s.subtitles
        return self.execute(context)

    def execute(self, context: Any) -> Any:
        if not _check_client(self):
            return {"CANCELLED"}
        scene = context.scene
        se = scene.sequence_editor_create()
        try:
            rate = scene_rate(scene.render.fps, scene.render.fps_base)
            if self.source == "FILE":
                script = read_script(bpy.path.abspath(self.filepath), fps=rate)
                above, offset = 0, int(scene.frame_start)
            else:
                texts = [s for s in all_strips(se) if s.type == "TEXT" and s.select]
                if not texts:
                    self.report({"ERROR"}, "unimoe-audio: select the text strips to voice")
                    return {"CANCELLED"}
                script = script_from_strips([(s.name, s.text, s.frame_final_start, s.frame_final_end) for s in texts],
                                            rate, source=f"{scene.name} text strips")
                above, offset = max(s.channel for s in texts), 0
            opts = VoiceoverOptions(voice=self.voice or None, max_stretch=self.max_stretch, overflow=self.overflow,
                                    voice_map=parse_voice_map([self.voice_map] if self.voice_map.strip() else []))
            from unimoe_audio.client.settings import load_settings

            source = os.path.splitext(os.path.basename(self.filepath))[0] if self.source == "FILE" else "strips"
            out = output_for(blend_folder(), scene.name, source, str(load_settings().output_path))
            run = VoiceRun(scene, script, opts, out, above=above, offset=offset)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.report({"ERROR"}, f"unimoe-audio: {describe_error(exc)}")
            return {"CANCELLED"}
        for note in run.notes:
            self.report({"WARNING"}, f"unimoe-audio: {note}")
        _start(run)
        scene.unimoe.progress, scene.unimoe.status = 0.0, f"voiceover of {len(script.cues)} cues queued"
        self.report({"INFO"}, f"unimoe-audio: voiceover of {len(script.cues)} cues queued ({out})")
        return {"FINISHED"}


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
            return Run.submit(scene, strip, "music", fields, req.start_frame, req.frames,
                              above=strip.channel - 1), None

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


class SEQUENCER_OT_unimoe_resume(bpy.types.Operator):
    """Follow again the unimoe-audio jobs this file was waiting for"""

    bl_idname = "sequencer.unimoe_resume"
    bl_label = "Resume"

    @classmethod
    def poll(cls, context: Any) -> bool:
        scene = context.scene
        return scene is not None and any(item.job_id not in {r.job_id for r in RUNS} for item in scene.unimoe.pending)

    def execute(self, context: Any) -> Any:
        if not _check_client(self):
            return {"CANCELLED"}
        resume_pending()
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
        box = layout.box()
        box.label(text="Voice a script")
        box.prop(s, "voice_map")
        op = box.operator(SEQUENCER_OT_unimoe_voiceover.bl_idname, text="Voice Selected Text Strips", icon="TEXT")
        op.source = "SELECTED"
        box.prop(s, "subtitles")
        op = box.operator(SEQUENCER_OT_unimoe_voiceover.bl_idname, text="Voice Subtitle File", icon="FILE_TEXT")
        op.source = "FILE"
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
        followed = {r.job_id for r in RUNS}
        if any(item.job_id not in followed for item in s.pending):
            layout.operator(SEQUENCER_OT_unimoe_resume.bl_idname, icon="FILE_REFRESH")


def _menu(self: Any, context: Any) -> None:
    self.layout.operator(SEQUENCER_OT_unimoe_score.bl_idname)
    self.layout.operator(SEQUENCER_OT_unimoe_speech.bl_idname)
    self.layout.operator(SEQUENCER_OT_unimoe_extend.bl_idname)
    self.layout.operator(SEQUENCER_OT_unimoe_voiceover.bl_idname)


CLASSES = (UnimoePending, UnimoeSettings, SEQUENCER_OT_unimoe_score, SEQUENCER_OT_unimoe_speech,
           SEQUENCER_OT_unimoe_extend, SEQUENCER_OT_unimoe_voiceover, SEQUENCER_OT_unimoe_cancel, SEQUENCER_OT_unimoe_resume, SEQUENCER_PT_unimoe)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.unimoe = bpy.props.PointerProperty(type=UnimoeSettings)
    bpy.types.SEQUENCER_MT_strip.append(_menu)
    bpy.app.handlers.load_post.append(_on_load)


def unregister() -> None:
    bpy.types.SEQUENCER_MT_strip.remove(_menu)
    if _on_load in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_on_load)
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
