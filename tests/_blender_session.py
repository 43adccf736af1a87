"""Runs inside Blender's Python (the bpy wheel's venv, see .ci/bpy-venv), started by
tests/test_integrations_blender.py: installs and enables the add-on zip, builds a scene, runs the add-on's
operators with their properties against the daemon named by the UNIMOE_AUDIO_* environment, drives the
add-on's own timer function until the jobs end (bpy.app.timers do not run in a script that never returns
to Blender's loop), renders the scene's audio, and writes what it saw as JSON.

    python _blender_session.py CONFIG.json RESULT.json
"""
import json
import os
import sys
import time
import traceback

import bpy

ADDON = "unimoe_audio_vse"


def new_effect(coll, name, kind, channel, start, length):
    try:  # 4.4+/5.x
        return coll.new_effect(name=name, type=kind, channel=channel, frame_start=start, length=length)
    except TypeError:  # 4.2 LTS
        return coll.new_effect(name=name, type=kind, channel=channel, frame_start=start, frame_end=start + length)


def drive(mod, deadline_s):
    """Call the add-on's timer function as Blender would, until it says it is done."""
    deadline = time.monotonic() + deadline_s
    ticks = 0
    while True:
        ticks += 1
        nxt = mod.tick()
        if nxt is None:
            return ticks
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still running after {deadline_s} s: {[r.job_id for r in mod.RUNS]}")
        time.sleep(nxt)


def strip_info(se, name):
    s = se.strips_all[name] if hasattr(se, "strips_all") else se.sequences_all[name]
    return {"name": s.name, "type": s.type, "channel": s.channel, "frame_start": s.frame_start,
            "frame_final_start": s.frame_final_start, "frame_final_end": s.frame_final_end,
            "frame_final_duration": s.frame_final_duration,
            "filepath": os.path.normpath(bpy.path.abspath(s.sound.filepath)) if s.type == "SOUND" else "",
            "stored_filepath": s.sound.filepath if s.type == "SOUND" else ""}


def main(cfg_path, out_path):
    cfg = json.load(open(cfg_path))
    out = {"blender": bpy.app.version_string}
    try:
        import unimoe_audio.integrations as integrations

        out["client_file"] = integrations.__file__
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.preferences.addon_install(filepath=cfg["zip"], overwrite=True)
        bpy.ops.preferences.addon_enable(module=ADDON)
        mod = sys.modules[ADDON]
        out["score_props"] = sorted(bpy.ops.sequencer.unimoe_score.get_rna_type().properties.keys())
        out["speech_props"] = sorted(bpy.ops.sequencer.unimoe_speech.get_rna_type().properties.keys())
        out["panel"] = hasattr(bpy.types, "SEQUENCER_PT_unimoe")

        scene = bpy.context.scene
        scene.render.fps, scene.render.fps_base = cfg["fps"], cfg["fps_base"]
        scene.frame_start, scene.frame_end = 0, cfg["scene_end"]
        se = scene.sequence_editor_create()
        coll = mod.top_strips(se)
        movie = coll.new_movie(name="clip", filepath=cfg["video"], channel=2, frame_start=cfg["movie_at"])
        movie.frame_offset_start = cfg["trim_start"]
        movie.frame_offset_end = cfg["trim_end"]
        # something already on channel 3 over the movie: the music must go to channel 4
        block = new_effect(coll, "block", "COLOR", 3, int(movie.frame_final_start), 5)
        out["movie"] = strip_info(se, "clip")
        bpy.ops.wm.save_as_mainfile(filepath=cfg["blend"])

        se.active_strip = movie
        out["score_call"] = sorted(bpy.ops.sequencer.unimoe_score(caption=cfg["caption"], mode="vision"))
        out["status_queued"] = scene.unimoe.status
        out["score_ticks"] = drive(mod, cfg["deadline"])

        text = new_effect(coll, "line1", "TEXT", 2, cfg["text_at"], cfg["text_frames"])
        text.text = cfg["text"]
        se.active_strip = text
        out["speech_call"] = sorted(bpy.ops.sequencer.unimoe_speech(voice=cfg["voice"]))
        drive(mod, cfg["deadline"])
        out["progress_done"], out["status_done"] = scene.unimoe.progress, scene.unimoe.status

        se.active_strip = movie  # a third job, cancelled from the panel's button
        bpy.ops.sequencer.unimoe_score(caption="to be cancelled", mode="reference")
        out["cancel_call"] = sorted(bpy.ops.sequencer.unimoe_cancel())
        drive(mod, cfg["deadline"])
        out["status_cancelled"] = scene.unimoe.status

        # the .blend saved where the daemon may not write: its output is copied beside the .blend
        bpy.ops.wm.save_as_mainfile(filepath=cfg["blend_outside"])
        se.active_strip = movie
        bpy.ops.sequencer.unimoe_score(caption="copied", mode="vision")
        drive(mod, cfg["deadline"])

        out["runs"] = [{"state": r.state, "error": r.error, "path": r.path, "job_id": r.job_id,
                        "result": r.job.last.path if r.job.last else "",
                        "copy_to": r.copy_to, "strip": strip_info(se, r.result_strip) if r.result_strip else None}
                       for r in mod.FINISHED]
        out["progress"] = scene.unimoe.progress
        out["status"] = scene.unimoe.status
        out["block_channel"] = block.channel
        out["names"] = "strips" if hasattr(se, "strips") else "sequences"
        # PyPI's 4.2 wheel is built without Audaspace: no sound strips, no mixdown
        out["audaspace"] = bool(bpy.app.build_options.audaspace)
        if out["audaspace"]:
            bpy.ops.sound.mixdown(filepath=cfg["mixdown"], container="WAV", codec="PCM", format="S16", mixrate=48000)
        bpy.ops.preferences.addon_disable(module=ADDON)
        out["unregistered"] = not hasattr(bpy.types.Scene, "unimoe")
    except Exception:  # noqa: BLE001 - the test shows it
        out["error"] = traceback.format_exc()
    json.dump(out, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
