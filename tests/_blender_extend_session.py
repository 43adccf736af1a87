"""Runs inside Blender's Python (see tests/_blender_session.py): a movie strip and a shorter sound strip
over it; the add-on's "Extend Sound to Movie End" operator; the timer driven until the job ends.

    python _blender_extend_session.py CONFIG.json RESULT.json
"""
import json
import sys
import traceback

import bpy

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _blender_session import ADDON, drive, strip_info  # noqa: E402


def main(cfg_path, out_path):
    cfg = json.load(open(cfg_path))
    out = {"blender": bpy.app.version_string}
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.preferences.addon_install(filepath=cfg["zip"], overwrite=True)
        bpy.ops.preferences.addon_enable(module=ADDON)
        mod = sys.modules[ADDON]
        out["extend_props"] = sorted(bpy.ops.sequencer.unimoe_extend.get_rna_type().properties.keys())
        scene = bpy.context.scene
        scene.render.fps, scene.render.fps_base = cfg["fps"], 1.0
        scene.frame_start, scene.frame_end = 0, cfg["scene_end"]
        se = scene.sequence_editor_create()
        coll = mod.top_strips(se)
        coll.new_movie(name="clip", filepath=cfg["video"], channel=1, frame_start=cfg["movie_at"])
        sound = coll.new_sound(name="temp cue", filepath=cfg["sound"], channel=2, frame_start=cfg["movie_at"])
        sound.frame_offset_end = cfg["sound_trim_end"]  # the cue stops before its file does
        bpy.ops.wm.save_as_mainfile(filepath=cfg["blend"])
        out["sound"] = strip_info(se, "temp cue")
        out["movie"] = strip_info(se, "clip")
        se.active_strip = sound
        out["call"] = sorted(bpy.ops.sequencer.unimoe_extend(caption=cfg["caption"]))
        drive(mod, cfg["deadline"])
        out["runs"] = [{"state": r.state, "error": r.error, "path": r.path,
                        "strip": strip_info(se, r.result_strip) if r.result_strip else None} for r in mod.FINISHED]
        bpy.ops.sound.mixdown(filepath=cfg["mixdown"], container="WAV", codec="PCM", format="S16", mixrate=48000)
    except Exception:  # noqa: BLE001 - the test shows it
        out["error"] = traceback.format_exc()
    json.dump(out, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
