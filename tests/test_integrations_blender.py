"""The Blender add-on inside real Blender: the PyPI ``bpy`` wheel (Blender 5.0.1 as a Python module) in
its own Python 3.11 venv (``.ci/bpy-venv`` makes it; ``UNIMOE_BPY_PYTHON`` may point at another), the
add-on installed from the zip its build command writes and enabled, its operators called with their
properties on a scene with a movie strip (an ffmpeg test clip) and a text strip, against a real daemon
on the tiny model; the add-on's timer function is driven until the jobs end (tests/_blender_session.py).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import wave
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from _daemon_harness import start_with_voice  # noqa: E402

from unimoe_audio.integrations.blender_zip import build_zip  # noqa: E402
from unimoe_audio.integrations.timeline import wav_frames  # noqa: E402

pytestmark = pytest.mark.host


# (venv folder, bpy version, the env var that may point at another such python): 5.x names the sequencer's
# collections `strips`, 4.2 LTS `sequences`; the add-on must work with both.
BLENDERS = [(".venv-bpy", "5.0.1", "UNIMOE_BPY_PYTHON"), (".venv-bpy42", "4.2.23", "UNIMOE_BPY42_PYTHON")]


def bpy_python(venv: str, version: str, env_var: str) -> Path:
    py = Path(os.environ.get(env_var) or ROOT / venv / "bin" / "python")
    if not py.exists():
        args = "" if venv == ".venv-bpy" else f" {venv} {version}"
        pytest.fail(f"no Blender {version} Python at {py}: create it with `.ci/bpy-venv{args}` (Python 3.11 + "
                    f"PyPI bpy=={version} + this project's client; .ci/run does it), or set {env_var}",
                    pytrace=False)
    return py


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_with_voice(tmp_path_factory.mktemp("blender-home"))
    yield d
    d.close()


def test_build_zip_holds_the_addon(tmp_path):
    import zipfile

    z = build_zip(tmp_path / "addon.zip")
    with zipfile.ZipFile(z) as zf:
        assert zf.namelist() == ["unimoe_audio_vse/__init__.py"]
        src = zf.read("unimoe_audio_vse/__init__.py").decode()
    # what makes Blender register the operators' properties (issue #12)
    assert "from __future__ import annotations" not in src and "\nimport bpy\n" in src
    out = subprocess.run([sys.executable, "-m", "unimoe_audio.integrations.blender_zip", "build-zip",
                          str(tmp_path / "b.zip")], capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == (tmp_path / "b.zip").resolve()


@pytest.mark.parametrize("venv,version,env_var", BLENDERS, ids=[v for _, v, _ in BLENDERS])
def test_addon_in_blender_scores_a_movie_strip_and_speaks_a_text_strip(daemon, tmp_path, venv, version, env_var):
    py = bpy_python(venv, version, env_var)
    film = daemon.home / f"film-{version}"  # inside the daemon's allowed roots: the clip, the .blend, the output beside it
    film.mkdir(exist_ok=True)
    video = film / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=3:size=96x64:rate=24000/1001", "-pix_fmt", "yuv420p", str(video)],
                   check=True, capture_output=True)
    blend = film / f"cut-{version}.blend"
    outside = tmp_path / "elsewhere" / "cut.blend"  # not under the daemon's allowed roots
    outside.parent.mkdir()
    cfg = {"zip": str(build_zip(tmp_path / "unimoe_audio_vse.zip")), "video": str(video), "blend": str(blend),
           "blend_outside": str(outside),
           "fps": 24, "fps_base": 1.001, "scene_end": 130, "movie_at": 10, "trim_start": 12, "trim_end": 24,
           "caption": "tense strings", "text_at": 70, "text_frames": 50, "text": "Hello from the sequencer.",
           "voice": "narrator", "deadline": 300, "mixdown": str(tmp_path / "mix.wav")}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNIMOE_AUDIO_", "PYTHON", "BLENDER_"))}
    env.update({k: v for k, v in daemon.env.items() if k.startswith("UNIMOE_AUDIO_")})
    user = tmp_path / "blender-user"  # Blender's preferences and installed add-ons stay in the test's folder
    env.update(BLENDER_USER_RESOURCES=str(user), BLENDER_USER_CONFIG=str(user / "config"),
               BLENDER_USER_SCRIPTS=str(user / "scripts"), BLENDER_USER_EXTENSIONS=str(user / "extensions"),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([str(py), str(HERE / "_blender_session.py"), str(tmp_path / "cfg.json"),
                           str(tmp_path / "out.json")], env=env, capture_output=True, text=True, timeout=900)
    assert (tmp_path / "out.json").exists(), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = json.loads((tmp_path / "out.json").read_text())
    assert "error" not in out, out.get("error", "") + proc.stderr[-3000:]
    assert out["blender"].split()[0] == version
    assert out["names"] == ("strips" if tuple(map(int, version.split(".")[:2])) >= (4, 4) else "sequences")
    assert Path(out["client_file"]).is_relative_to(ROOT), "the bpy venv has another checkout: rerun .ci/bpy-venv"

    # registered with its properties (the bug of issue #12: none were)
    assert {"caption", "mode"} <= set(out["score_props"]) and "voice" in out["speech_props"] and out["panel"]
    assert out["score_call"] == out["speech_call"] == out["cancel_call"] == ["FINISHED"]
    assert out["status_queued"] == "queued (36 frames)"
    movie = out["movie"]
    assert (movie["channel"], movie["frame_final_start"], movie["frame_final_end"]) == (2, 22, 58)

    score, speech, cancelled, copied = out["runs"]
    assert cancelled["state"] == "cancelled" and cancelled["strip"] is None
    assert copied["copy_to"] == str(outside.parent / "unimoe")  # the daemon refused that folder
    assert out["status_cancelled"] == "cancelled"  # what the panel shows after Cancel
    assert out["unregistered"]
    # the daemon wrote into the .blend's folder, exactly the strips' lengths
    assert Path(score["result"]).parent == blend.parent / "unimoe" and score["copy_to"] is None
    assert wav_frames(score["result"])[:2] == (72072, 48000)  # 36 frames at 24000/1001, sample exact
    assert wav_frames(speech["result"])[:2] == (100100, 48000)  # 50 frames

    # PyPI's bpy 4.2 is built without Audaspace, so it cannot make sound strips: there the add-on gets as
    # far as `sequences.new_sound` (the 4.2 name) and reports Blender's refusal; 5.x places the strips
    assert out["audaspace"] == (version != "4.2.23")
    if not out["audaspace"]:
        for run in (score, speech, copied):
            assert run["state"] == "failed" and "without Audaspace" in run["error"], run
        return

    assert score["state"] == "done" and speech["state"] == "done", out["runs"]
    # music: on channel 4 (3 is taken over the movie), at the movie's first visible frame, its length,
    # stored relative to the .blend (Blender remapped it when the .blend was saved elsewhere below)
    s = score["strip"]
    assert (s["type"], s["channel"], s["frame_start"], s["frame_final_start"], s["frame_final_duration"]) == \
        ("SOUND", 4, 22, 22, 36)
    assert s["stored_filepath"].startswith("//") and Path(s["filepath"]) == Path(score["path"])
    assert Path(score["path"]) == Path(score["result"])
    # speech: on channel 3 (free there), at the text strip's first frame, its length
    t = speech["strip"]
    assert (t["channel"], t["frame_final_start"], t["frame_final_duration"]) == (3, 70, 50)
    assert Path(t["filepath"]) == Path(speech["result"])
    assert out["progress_done"] == 1.0 and out["status_done"].startswith("added ")
    # copied: the daemon wrote into its own folder; the copy beside the outside .blend is on channel 5
    c = copied["strip"]
    assert copied["state"] == "done" and Path(copied["path"]).parent == outside.parent / "unimoe"
    assert Path(copied["result"]).parent != outside.parent / "unimoe" and Path(copied["path"]).is_file()
    assert (c["channel"], c["frame_final_start"], c["frame_final_duration"]) == (5, 22, 36)
    assert c["stored_filepath"].startswith("//unimoe/") and wav_frames(copied["path"])[:2] == (72072, 48000)

    # what Blender plays: silence before and between the strips, sound where they are
    with wave.open(cfg["mixdown"]) as w:
        rate, ch, data = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
    samples = memoryview(data).cast("h")

    def peak(f0: int, f1: int) -> int:
        a, b = (round(f * rate * 1001 / 24000) * ch for f in (f0, f1))
        return max((abs(x) for x in samples[a:b]), default=0)

    assert peak(0, 21) == 0 and peak(59, 69) == 0 and peak(121, 130) == 0
    assert peak(22, 58) > 0 and peak(70, 120) > 0


def _blender(py: Path, script: str, *args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(py), str(HERE / script), *args], env=env, capture_output=True, text=True, timeout=900)


def _blender_env(daemon, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNIMOE_AUDIO_", "PYTHON", "BLENDER_"))}
    env.update({k: v for k, v in daemon.env.items() if k.startswith("UNIMOE_AUDIO_")})
    user = tmp_path / "blender-user"
    env.update(BLENDER_USER_RESOURCES=str(user), BLENDER_USER_CONFIG=str(user / "config"),
               BLENDER_USER_SCRIPTS=str(user / "scripts"), BLENDER_USER_EXTENSIONS=str(user / "extensions"),
               OMP_NUM_THREADS="1")
    return env


def test_a_job_outlives_the_blender_that_asked(daemon, tmp_path):
    """Blender quits while its job runs; the job's id is in the saved .blend; reopening the file (another
    Blender process) places the finished result. An unsaved file's take is placed too, and the panel names
    the folder it went to."""
    from unimoe_audio.client.client import Client

    py = bpy_python(*BLENDERS[0])  # 5.0.1: the 4.2 wheel has no Audaspace, so no sound strip to place
    film = daemon.home / "reopen"
    film.mkdir(exist_ok=True)
    video = film / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=1:size=96x64:rate=24",
                    "-pix_fmt", "yuv420p", str(video)], check=True, capture_output=True)
    cfg = {"zip": str(build_zip(tmp_path / "unimoe_audio_vse.zip")), "video": str(video),
           "blend": str(film / "cut.blend"), "deadline": 300}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    env = _blender_env(daemon, tmp_path)

    proc = _blender(py, "_blender_reopen.py", "submit", str(tmp_path / "cfg.json"), str(tmp_path / "a.json"), env=env)
    assert (tmp_path / "a.json").exists(), proc.stderr[-3000:]
    a = json.loads((tmp_path / "a.json").read_text())
    assert "error" not in a, a.get("error", "") + proc.stderr[-3000:]
    assert a["unsaved_call"] == a["call"] == ["FINISHED"]
    out_dir = str(daemon.settings.output_path)
    assert "this .blend is not saved: the take goes to " + out_dir in a["unsaved_status"], a["unsaved_status"]
    assert a["unsaved_pending_after"] == 0
    assert a["pending"] == [a["job_id"]]  # saved in the .blend; that Blender has quit

    with Client(daemon.settings, auto_start=False) as c:  # the result is written while no Blender runs
        res = c.wait(a["job_id"], timeout=600)
    assert Path(res.path).parent == film / "unimoe"

    proc = _blender(py, "_blender_reopen.py", "reopen", str(tmp_path / "cfg.json"), str(tmp_path / "b.json"), env=env)
    assert (tmp_path / "b.json").exists(), proc.stderr[-3000:]
    b = json.loads((tmp_path / "b.json").read_text())
    assert "error" not in b, b.get("error", "") + proc.stderr[-3000:]
    assert b["followed"] == [a["job_id"]]
    assert b["runs"] == [{"state": "done", "path": res.path, "error": ""}]
    placed = [s for s in b["sounds"] if s["name"].startswith("clip (unimoe)")]
    assert [Path(s["filepath"]) for s in placed if Path(s["filepath"]) == Path(res.path)], b["sounds"]
    assert b["pending_after"] == []


_VENDORED = """
import json, os, sys
# Blender's Python as a user has it: no unimoe_audio installed (drop this venv's editable install of it)
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", repr(f))]
sys.path[:] = [p for p in sys.path if "__editable__" not in p]
for m in [m for m in sys.modules if m.startswith("unimoe_audio")]:
    del sys.modules[m]
try:
    import unimoe_audio.client  # noqa: F401
    before = "importable"
except ImportError:
    before = "missing"
import bpy
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.preferences.addon_install(filepath=sys.argv[1], overwrite=True)
bpy.ops.preferences.addon_enable(module="unimoe_audio_vse")
mod = sys.modules["unimoe_audio_vse"]
print(json.dumps({"before": before, "import_error": str(mod._IMPORT_ERROR or ""),
                  "client": sys.modules["unimoe_audio.client.client"].__file__, "addon": mod.__file__}))
"""


def test_zip_with_client_needs_no_unimoe_install_in_blender(tmp_path):
    """``build-zip --with-client``: the add-on runs in a Blender whose Python has no unimoe_audio at all,
    importing the client bundled in the zip (so Blender's pip installs only pyzmq, pydantic,
    pydantic-settings and platformdirs, none of which asks for torch)."""
    import zipfile

    py = bpy_python(*BLENDERS[0])
    z = build_zip(tmp_path / "with-client.zip", with_client=True)
    names = zipfile.ZipFile(z).namelist()
    assert "unimoe_audio_vse/vendor/unimoe_audio/client/client.py" in names
    assert "unimoe_audio_vse/vendor/unimoe_audio/integrations/hostjob.py" in names
    assert not [n for n in names if "/daemon/" in n or "/model/" in n or "__pycache__" in n]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "BLENDER_"))}
    user = tmp_path / "blender-user"
    env.update(BLENDER_USER_RESOURCES=str(user), BLENDER_USER_CONFIG=str(user / "config"),
               BLENDER_USER_SCRIPTS=str(user / "scripts"), BLENDER_USER_EXTENSIONS=str(user / "extensions"))
    r = subprocess.run([str(py), "-c", _VENDORED, str(z)], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["before"] == "missing" and out["import_error"] == ""
    vendor = Path(out["addon"]).parent / "vendor"
    assert Path(out["client"]).is_relative_to(vendor), out


def test_addon_extends_a_sound_strip_to_its_movie_strips_end(daemon, tmp_path):
    """Inside Blender 5.0 (4.2's PyPI wheel has no Audaspace, so no sound strips): the new part of the
    music goes on the sound strip's channel, butted to it, ending with the movie strip."""
    import numpy as np
    import soundfile as sf

    from test_music_continue import music_clip

    py = bpy_python(*BLENDERS[0])
    film = daemon.home / "film-extend"
    film.mkdir(exist_ok=True)
    video = film / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=4:size=96x64:rate=25",
                    "-pix_fmt", "yuv420p", str(video)], check=True, capture_output=True)
    sound = film / "temp-cue.wav"
    original = music_clip(sound, 3.0, 48000, 2, "PCM_24")
    cfg = {"zip": str(build_zip(tmp_path / "unimoe_audio_vse.zip")), "video": str(video), "sound": str(sound),
           "blend": str(film / "cut.blend"), "fps": 25, "scene_end": 120, "movie_at": 1, "sound_trim_end": 25,
           "caption": "same cue, building", "deadline": 600, "mixdown": str(tmp_path / "mix.wav")}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    proc = _blender(py, "_blender_extend_session.py", str(tmp_path / "cfg.json"), str(tmp_path / "out.json"),
                    env=_blender_env(daemon, tmp_path))
    assert (tmp_path / "out.json").exists(), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out = json.loads((tmp_path / "out.json").read_text())
    assert "error" not in out, out.get("error", "") + proc.stderr[-3000:]
    assert "caption" in out["extend_props"] and out["call"] == ["FINISHED"]
    assert (out["sound"]["frame_final_start"], out["sound"]["frame_final_end"]) == (1, 51)  # 2 s of the 3 s file
    assert out["movie"]["frame_final_end"] == 101
    (run,) = out["runs"]
    assert run["state"] == "done", run
    s = run["strip"]
    # butted on the sound strip's own channel, from its end to the movie's end
    assert (s["channel"], s["frame_final_start"], s["frame_final_end"]) == (2, 51, 101)
    new = sf.read(run["path"], dtype="int32", always_2d=True)[0]
    assert new.shape == (2 * 48000, 2)  # 50 frames at 25 fps
    side = json.loads(Path(run["path"]).with_suffix(".json").read_text())
    assert side["request"]["spec"]["continue_from"] == 2.0 and side["request"]["spec"]["new_only"] is True
    # what Blender plays: the cue, then the new part, with no gap
    with wave.open(cfg["mixdown"]) as w:
        rate, ch, data = w.getframerate(), w.getnchannels(), w.readframes(w.getnframes())
    mix = np.frombuffer(data, dtype="<i2").reshape(-1, ch)
    cue_end, movie_end = int(51 / 25 * rate), int(101 / 25 * rate)
    assert np.abs(mix[cue_end - 2400:cue_end]).max() > 100 and np.abs(mix[cue_end:cue_end + 2400]).max() > 100
    assert np.abs(mix[movie_end + 2400:]).max(initial=0) == 0
    assert original.shape[0] == 3 * 48000
