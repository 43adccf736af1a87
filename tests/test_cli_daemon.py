"""Every CLI verb against a real daemon process on the tiny model (temporary UNIMOE_AUDIO_HOME, free ports).

The daemon is started once per module with ``unimoe-audio serve --detach``; each CLI call is a child
process. Nothing is mocked.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _client_harness import CLI, Daemon, cli, ffprobe, make_env, make_reference_speech, make_video, wait_progress  # noqa: E402
from _content import check_audio, check_sidecar  # noqa: E402

# A last resort against a hang: the waits inside fail when the daemon stops making progress.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    d = Daemon(home)
    yield d
    d.stop()


@pytest.fixture
def env(daemon):
    return daemon.env


@pytest.fixture
def work(tmp_path):
    return tmp_path


def test_status_and_ps_report_the_tiny_fallback(env):
    data = cli(env, "status", "--json").ok().json()
    assert data["tiny"] is True  # no weights installed in this home: the first-run path
    assert data["state"] in ("idle", "loading", "ready", "busy", "unloaded")
    assert data["protocol_version"].startswith("1.")
    assert "queue_length" in data and "memory" in data and "device" in data
    human = cli(env, "ps").ok()
    assert "TINY model" in human.err and "models pull" in human.err
    assert "queued" in human.out and "TINY random model serving" in human.out and f"pid {data['pid']}" in human.out


def test_music_writes_the_requested_format(env, work):
    out = work / "cue.wav"
    r = cli(env, "music", "calm piano", "--seconds", "1", "-o", str(out), "--sample-rate", "22050",
            "--channels", "1", "--bit-depth", "16", "--seed", "5", "--json").ok()
    data = r.json()
    assert data["path"] == str(out) and data["seed"] == 5
    assert (data["sample_rate"], data["channels"], data["bit_depth"]) == (22050, 1, 16)
    info = ffprobe(out)
    assert (info["sample_rate"], info["channels"], info["codec"]) == (22050, 1, "pcm_s16le")
    assert abs(info["duration"] - 1.0) < 0.05
    assert "TINY model" in r.err  # said clearly, on stderr, even with --json
    # -o names the file: a second run replaces it instead of writing cue-2.wav; progress bars on stderr
    again = cli(env, "music", "calm piano", "--seconds", "0.5", "-o", str(out), "--channels", "2",
                "--progress", "always").ok()
    assert ffprobe(out)["channels"] == 2 and not (work / "cue-2.wav").exists()
    check_audio(out, seconds=0.5, channels=2)
    side = check_sidecar(out, task="music")  # the sidecar was replaced with the file: it describes the new take
    assert side["request"]["spec"]["length"]["seconds"] == 0.5 and side["request"]["output"]["channels"] == 2
    assert "100%" in again.err and "100%" not in again.out and str(out) in again.out


def test_music_bars_at_tempo_and_variations(env, work):
    out = work / "loop.wav"
    data = cli(env, "music", "drum loop", "--bars", "1", "--tempo", "240", "--key", "C major",
               "--variations", "2", "--seed", "11", "-o", str(out), "--bit-depth", "24", "--json").ok().json()
    assert [d["seed"] for d in data] == [11, 12]
    for i in (1, 2):
        f = work / f"loop-{i}.wav"
        info = ffprobe(f)
        assert info["codec"] == "pcm_s24le" and info["sample_rate"] == 48000 and info["channels"] == 2
        assert abs(info["duration"] - 1.0) < 0.05  # one 4/4 bar at 240 BPM


def test_speak_with_reference_audio(env, work):
    ref = make_reference_speech(work / "ref.wav")
    out = work / "line.wav"
    r = cli(env, "speak", "Good morning.", "--ref-audio", str(ref), "--ref-text", "Hello there, this is a short test.",
            "--seconds", "0.5", "-o", str(out), "--sample-rate", "44100", "--loudness", "off").ok()
    assert str(out) in r.out and "44100 Hz" in r.out
    info = ffprobe(out)
    assert info["sample_rate"] == 44100 and info["channels"] == 2


def test_voices_add_then_speak_without_the_reference_file(env, work):
    ref = make_reference_speech(work / "narrator.wav")
    added = cli(env, "voices", "add", "narrator", "--audio", str(ref), "--text", "Hello there, this is a short test.",
                "--json").ok().json()
    assert added["name"] == "narrator" and added["seconds"] > 0.5 and added["frames"] > 0
    ref.unlink()  # the saved voice keeps codes + transcript: the file is no longer needed
    listed = cli(env, "voices", "ls", "--json").ok().json()
    assert any(v["name"] == "narrator" and "short test" in v["transcript"] for v in listed)
    assert "narrator" in cli(env, "voices", "ls").ok().out
    out = work / "voiced.wav"
    data = cli(env, "speak", "This uses the saved voice.", "--voice", "narrator", "--seconds", "0.5", "-o", str(out),
               "--channels", "1", "--json").ok().json()
    assert data["path"] == str(out) and ffprobe(out)["channels"] == 1
    # adding the same name again needs --force
    ref2 = make_reference_speech(work / "n2.wav", "Another voice.")
    assert cli(env, "voices", "add", "narrator", "--audio", str(ref2), "--text", "Another voice.").code != 0
    cli(env, "voices", "add", "narrator", "--audio", str(ref2), "--text", "Another voice.", "--force").ok()
    cli(env, "voices", "rm", "narrator").ok()
    assert not any(v["name"] == "narrator" for v in cli(env, "voices", "ls", "--json").ok().json())
    missing = cli(env, "speak", "Hi.", "--voice", "narrator", "--seconds", "1")
    assert missing.code == 2 and "narrator" in missing.err


def test_score_a_video_clip(env, work):
    video = make_video(work / "clip.mp4", seconds=2.0)
    out = work / "score.wav"
    data = cli(env, "score", str(video), "--in", "0.5", "--out", "1.5", "--caption", "tense strings", "-o", str(out),
               "--json").ok().json()
    assert data["path"] == str(out)
    info = ffprobe(out)
    assert abs(info["duration"] - 1.0) < 0.05 and info["sample_rate"] == 48000


def test_batch_runs_every_item(env, work):
    ref = make_reference_speech(work / "ref.wav")
    tasks = [
        {"task_type": "text_to_music", "task_id": "m1", "caption": "calm", "seconds": 0.5, "output_path": "out"},
        {"task_type": "text_to_speech", "task_id": "s1", "target_text": "Hi.", "reference_audio": "ref.wav",
         "reference_text": "Hello there, this is a short test.", "seconds": 0.5, "output_path": "out/s1.wav",
         "channels": 1},
    ]
    f = work / "tasks.yaml"
    import yaml

    f.write_text(yaml.safe_dump(tasks))
    data = cli(env, "batch", str(f), "--json", "--sample-rate", "16000").ok().json()
    assert [d["label"] for d in data] == ["m1", "s1"]
    m1, s1 = ffprobe(work / "out" / "m1.wav"), ffprobe(work / "out" / "s1.wav")
    assert m1["sample_rate"] == s1["sample_rate"] == 16000
    assert (m1["channels"], s1["channels"]) == (2, 1)
    assert ref.exists()


def test_no_wait_then_jobs_ls_and_wait_from_another_process(env, work):
    r = cli(env, "music", "queued cue", "--seconds", "0.5", "--no-wait", "--tag", "nowait-1", "--json").ok().json()
    job_id = r["job"]
    listed = cli(env, "jobs", "ls", "--json").ok().json()  # a second client process
    assert any(j["job_id"] == job_id and j["tag"] == "nowait-1" for j in listed)
    done = cli(env, "jobs", "wait", job_id, "--json").ok().json()
    assert done["job_id"] == job_id
    check_audio(done["path"], seconds=0.5)
    assert check_sidecar(done["path"], job_id=job_id, task="music")["request"]["tag"] == "nowait-1"
    assert job_id in cli(env, "jobs", "ls", "--state", "done").ok().out


def test_ctrl_c_during_music_cancels_the_job_and_a_second_client_sees_it(env, work):
    proc = subprocess.Popen([*CLI, "music", "a very long piece", "--seconds", "300", "--tag", "ctrlc-1",
                             "-o", str(work / "long.wav")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        def running_job():
            jobs = cli(env, "jobs", "ls", "--json").ok().json()
            mine = [j for j in jobs if j["tag"] == "ctrlc-1"]
            return mine[0] if mine and mine[0]["state"] == "running" and mine[0]["fraction"] > 0 else None

        job = wait_progress(env, running_job, "the long job to run")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert f"cancelled job {job['job_id']}" in err
    state = wait_progress(env, lambda: next(j["state"] for j in cli(env, "jobs", "ls", "--json").ok().json()
                                            if j["job_id"] == job["job_id"]) in ("cancelled",),
                          "the job to be cancelled")
    assert state
    assert not (work / "long.wav").exists()


def test_jobs_cancel_from_another_client_fails_the_waiter_with_exit_4(env, work):
    proc = subprocess.Popen([*CLI, "music", "another long piece", "--seconds", "300", "--tag", "cancel-2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        job = wait_progress(env, lambda: next((j for j in cli(env, "jobs", "ls", "--json").ok().json()
                                               if j["tag"] == "cancel-2" and j["state"] == "running"), None),
                            "the job to run")
        cli(env, "jobs", "cancel", job["job_id"]).ok()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 4, err
    assert "cancelled" in err


def test_generation_failure_exits_4(env, work):
    # A readable recording that holds no voice passes the submit probe; the worker finds it silent.
    silent = work / "silence.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2",
                    str(silent)], check=True, capture_output=True)
    r = cli(env, "speak", "Hello.", "--ref-audio", str(silent), "--ref-text", "Hello.", "--seconds", "0.5")
    assert r.code == 4, (r.code, r.err)
    assert "failed" in r.err


def test_daemon_rejection_exits_2(env, work):
    r = cli(env, "music", "x", "--seconds", "1", "-o", "/proc/unimoe-test.wav")
    assert r.code == 2, r.err
    r = cli(env, "jobs", "wait", "0123456789abcdef")
    assert r.code == 2 and "not_found" in r.err
