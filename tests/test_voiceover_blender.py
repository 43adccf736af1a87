"""The Blender add-on's *Voice Script* inside real Blender (PyPI bpy 5.0.1 in .ci/bpy-venv's venv): the
selected text strips, then a subtitle file, voiced through the client's Voiceover against a real daemon on
the tiny model, one sound strip per cue at its frame; Blender's own mixdown has sound where the cues are
and silence between them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _daemon_harness import start_with_voice  # noqa: E402
from test_integrations_blender import BLENDERS, bpy_python  # noqa: E402

from unimoe_audio.integrations.blender_zip import build_zip  # noqa: E402

pytestmark = [pytest.mark.host, pytest.mark.timeout(3600)]
FPS = 25


def test_voice_text_strips_and_a_subtitle_file_in_blender(tmp_path_factory, tmp_path):
    py = bpy_python(*BLENDERS[0])
    d = start_with_voice(tmp_path_factory.mktemp("blender-vo-home"))
    try:
        film = d.home / "film"
        film.mkdir()
        subs = film / "scene.srt"
        subs.write_text((HERE / "fixtures" / "voiceover" / "scene.srt").read_text())
        strips = [["line1", "NARRATOR: Good evening.", 10, 40], ["line2", "Welcome back.", 75, 35]]
        cfg = {"zip": str(build_zip(tmp_path / "unimoe_audio_vse.zip")), "blend": str(film / "cut.blend"),
               "scene_end": 200, "strips": strips, "voice": "narrator", "voice_map": "ALICE=narrator",
               "subtitles": str(subs), "deadline": 900, "mixdown": str(tmp_path / "mix.wav")}
        (tmp_path / "cfg.json").write_text(json.dumps(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNIMOE_AUDIO_", "PYTHON", "BLENDER_"))}
        env.update({k: v for k, v in d.env.items() if k.startswith("UNIMOE_AUDIO_")})
        user = tmp_path / "blender-user"
        env.update(BLENDER_USER_RESOURCES=str(user), BLENDER_USER_CONFIG=str(user / "config"),
                   BLENDER_USER_SCRIPTS=str(user / "scripts"), BLENDER_USER_EXTENSIONS=str(user / "extensions"),
                   OMP_NUM_THREADS="1")
        proc = subprocess.run([str(py), str(HERE / "_blender_voiceover.py"), str(tmp_path / "cfg.json"),
                               str(tmp_path / "out.json")], env=env, capture_output=True, text=True, timeout=1800)
    finally:
        d.close()
    assert (tmp_path / "out.json").exists(), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = json.loads((tmp_path / "out.json").read_text())
    assert "error" not in out, out.get("error", "") + proc.stderr[-3000:]
    assert {"source", "filepath", "voice", "voice_map", "max_stretch", "overflow"} <= set(out["props"])
    assert out["strips_call"] == out["file_call"] == ["FINISHED"]

    # the selected text strips: one sound strip each, at the text strip's first frame, above it, inside it
    run = out["strips_run"]
    assert run["state"] == "done", run
    rep = json.loads(Path(run["report"]).read_text())
    assert [c["index"] for c in rep["cues"]] == [1, 2] and rep["cues"][0]["speaker"] == "NARRATOR"
    got = sorted((s["frame_final_start"], s["channel"]) for s in run["strips"])
    assert got == [(10, 3), (75, 3)]
    for s, (_, _, start, length) in zip(sorted(run["strips"], key=lambda s: s["frame_final_start"]), strips):
        assert s["frame_final_end"] <= start + length + 1  # inside its slot (to the frame)
        assert Path(s["filepath"]).parent == film / "unimoe" / "Scene-strips-voiceover.cues"
    assert Path(run["stem"]) == film / "unimoe" / "Scene-strips-voiceover.wav"

    # the subtitle file: its cues at their times (zero at the scene's first frame), the empty cue skipped
    frun = out["file_run"]
    assert frun["state"] == "done", frun
    starts = sorted(s["frame_final_start"] for s in frun["strips"])
    assert starts == [round(0.5 * FPS), round(2.4 * FPS), round(5.0 * FPS)]
    assert out["status"].startswith("voiced 3/3 cues")

    if not out["audaspace"]:
        return
    with wave.open(cfg["mixdown"]) as w:
        rate, ch, data = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
    samples = memoryview(data).cast("h")

    def peak(f0: float, f1: float) -> int:
        a, b = (round(f * rate / FPS) * ch for f in (f0, f1))
        return max((abs(x) for x in samples[a:b]), default=0)

    assert peak(0, 9) == 0 and peak(51, 59) == 0 and peak(111, 124) == 0 and peak(166, 200) == 0  # silences
    assert peak(10, 40) > 0 and peak(75, 110) > 0 and peak(125, 165) > 0
