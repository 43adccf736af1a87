"""Runs inside Blender's Python (the bpy wheel's venv, see .ci/bpy-venv), started by
tests/test_voiceover_blender.py: installs and enables the add-on zip, puts text strips on a scene, runs
the add-on's *Voice Script* operator on the selected text strips and then on a subtitle file, drives the
add-on's timer function until the voiceovers end, renders the scene's audio, and writes what it saw as JSON.

    python _blender_voiceover.py CONFIG.json RESULT.json
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
    deadline = time.monotonic() + deadline_s
    while True:
        nxt = mod.tick()
        if nxt is None:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"voiceover still running after {deadline_s} s")
        time.sleep(min(nxt, 0.2))


def sound_strips(se, names):
    out = []
    for n in names:
        s = se.strips_all[n] if hasattr(se, "strips_all") else se.sequences_all[n]
        out.append({"name": s.name, "channel": s.channel, "frame_final_start": s.frame_final_start,
                    "frame_final_end": s.frame_final_end,
                    "filepath": os.path.normpath(bpy.path.abspath(s.sound.filepath))})
    return out


def main(cfg_path, out_path):
    cfg = json.load(open(cfg_path))
    out = {"blender": bpy.app.version_string}
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        bpy.ops.preferences.addon_install(filepath=cfg["zip"], overwrite=True)
        bpy.ops.preferences.addon_enable(module=ADDON)
        mod = sys.modules[ADDON]
        out["props"] = sorted(bpy.ops.sequencer.unimoe_voiceover.get_rna_type().properties.keys())
        scene = bpy.context.scene
        scene.render.fps, scene.render.fps_base = 25, 1.0
        scene.frame_start, scene.frame_end = 0, cfg["scene_end"]
        se = scene.sequence_editor_create()
        coll = mod.top_strips(se)
        for s in list(mod.all_strips(se)):
            s.select = False
        texts = []
        for name, text, start, length in cfg["strips"]:
            t = new_effect(coll, name, "TEXT", 2, start, length)
            t.text = text
            texts.append(t)
        other = new_effect(coll, "not selected", "TEXT", 2, 150, 20)
        other.text = "I am not selected."
        for s in mod.all_strips(se):
            s.select = s in texts
        bpy.ops.wm.save_as_mainfile(filepath=cfg["blend"])

        out["strips_call"] = sorted(bpy.ops.sequencer.unimoe_voiceover(source="SELECTED", voice=cfg["voice"]))
        drive(mod, cfg["deadline"])
        run = mod.FINISHED[-1]
        out["strips_run"] = {"state": run.state, "error": run.error, "strips": sound_strips(se, run.strips),
                             "report": str(run.vo.paths["report"]), "stem": run.report.output}

        out["file_call"] = sorted(bpy.ops.sequencer.unimoe_voiceover(source="FILE", filepath=cfg["subtitles"],
                                                                     voice=cfg["voice"], voice_map=cfg["voice_map"],
                                                                     overflow="trim"))
        drive(mod, cfg["deadline"])
        run = mod.FINISHED[-1]
        out["file_run"] = {"state": run.state, "error": run.error, "strips": sound_strips(se, run.strips),
                           "report": str(run.vo.paths["report"])}
        out["status"] = scene.unimoe.status
        out["audaspace"] = bool(bpy.app.build_options.audaspace)
        if out["audaspace"]:
            bpy.ops.sound.mixdown(filepath=cfg["mixdown"], container="WAV", codec="PCM", format="S16", mixrate=48000)
        bpy.ops.preferences.addon_disable(module=ADDON)
    except Exception:  # noqa: BLE001 - the test shows it
        out["error"] = traceback.format_exc()
    json.dump(out, open(out_path, "w"), indent=1)


if __name__ == "__main__":
    main(sys.argv[-2], sys.argv[-1])
