"""Runs inside Blender's Python (see tests/_blender_session.py), in two separate processes, started by
tests/test_integrations_blender.py: a job outlives the Blender that asked for it.

    python _blender_reopen.py submit CONFIG.json RESULT.json   # queue a score, save the .blend, quit
    python _blender_reopen.py reopen CONFIG.json RESULT.json   # open the .blend: the result is placed

``submit`` also asks for speech from an unsaved file first (the panel must name where that take goes).
"""
import json
import sys
import time
import traceback

import bpy

ADDON = "unimoe_audio_vse"


def enable(cfg):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.preferences.addon_install(filepath=cfg["zip"], overwrite=True)
    bpy.ops.preferences.addon_enable(module=ADDON)
    return sys.modules[ADDON]


def drive(mod, deadline_s):
    deadline = time.monotonic() + deadline_s
    while mod.tick() is not None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still running after {deadline_s} s")
        time.sleep(0.2)


def submit(cfg, out):
    mod = enable(cfg)
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1
    se = scene.sequence_editor_create()
    coll = mod.top_strips(se)
    movie = coll.new_movie(name="clip", filepath=cfg["video"], channel=2, frame_start=1)
    se.active_strip = movie
    # unsaved: the take still goes somewhere, and the panel says where
    out["unsaved_call"] = sorted(bpy.ops.sequencer.unimoe_score(caption="unsaved", mode="vision"))
    out["unsaved_status"] = scene.unimoe.status
    drive(mod, cfg["deadline"])
    out["unsaved_pending_after"] = len(scene.unimoe.pending)
    # saved: queue, save (the pending id goes into the .blend), and quit without waiting
    bpy.ops.wm.save_as_mainfile(filepath=cfg["blend"])
    se.active_strip = se.strips_all["clip"] if hasattr(se, "strips_all") else se.sequences_all["clip"]
    out["call"] = sorted(bpy.ops.sequencer.unimoe_score(caption="after reopening", mode="vision"))
    out["job_id"] = mod.RUNS[0].job_id
    out["pending"] = [p.job_id for p in scene.unimoe.pending]
    bpy.ops.wm.save_mainfile()


def reopen(cfg, out):
    mod = enable(cfg)
    bpy.ops.wm.open_mainfile(filepath=cfg["blend"])  # load_post: the add-on follows the saved job ids
    scene = bpy.context.scene
    out["followed"] = [r.job_id for r in mod.RUNS]
    drive(mod, cfg["deadline"])
    se = scene.sequence_editor
    strips = se.strips_all if hasattr(se, "strips_all") else se.sequences_all
    out["sounds"] = [{"name": s.name, "channel": s.channel, "frame_start": s.frame_final_start,
                      "filepath": bpy.path.abspath(s.sound.filepath)} for s in strips if s.type == "SOUND"]
    out["pending_after"] = [p.job_id for p in scene.unimoe.pending]
    out["status"] = scene.unimoe.status
    out["runs"] = [{"state": r.state, "path": r.path, "error": r.error} for r in mod.FINISHED]
    bpy.ops.wm.save_mainfile()


def main(phase, cfg_path, out_path):
    cfg = json.load(open(cfg_path))
    out = {"blender": bpy.app.version_string}
    try:
        {"submit": submit, "reopen": reopen}[phase](cfg, out)
    except Exception:  # noqa: BLE001 - the test shows it
        out["error"] = traceback.format_exc()
    json.dump(out, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
