"""REAPER and Blender scripts: their pure planning, and their job flow against a real daemon (tiny model).

The hosts themselves: tests/test_integrations_reaper.py (the script as REAPER runs it),
tests/test_integrations_blender.py (the add-on inside real bpy), tests/test_integrations_audacity.py.
"""
from __future__ import annotations

import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _daemon_harness import DaemonProc  # noqa: E402

from unimoe_audio.integrations import reaper_unimoe as rs  # noqa: E402
from unimoe_audio.integrations.blender_vse_score import pick_channel, scene_rate, strip_request, text_request  # noqa: E402
from unimoe_audio.integrations.hostjob import HostJob, connect  # noqa: E402
from unimoe_audio.integrations.timeline import wav_frames  # noqa: E402


# -- REAPER (the script run as REAPER runs it: tests/test_integrations_reaper.py) --------------------
def test_reaper_plan_request():
    p = rs.plan_request("music", 1.0, 3.5, prompt="warm pads", tempo=96.0, project_rate=44100, folder="/p")
    assert p.kind == "music" and p.position == 1.0 and p.samples == 110250 and p.length == 2.5
    assert p.fields == {"caption": "warm pads", "tempo_bpm": 96.0, "seconds": 2.5, "sample_rate": 44100,
                        "fit_length": True, "folder": "/p"}
    # sample-exact at a position that is not on a sample boundary: end sample - start sample
    p = rs.plan_request("speech", 0.1, 0.35, prompt="Hello.", project_rate=0, voice="narrator")
    assert p.fields["sample_rate"] == 48000 and p.samples == 16800 - 4800 and p.fields["voice"] == "narrator"
    assert p.fields["seconds"] == 12000 / 48000
    with pytest.raises(ValueError, match="no time selection"):
        rs.plan_request("music", 2.0, 2.0, prompt="x")
    with pytest.raises(ValueError, match="caption"):
        rs.plan_request("music", 0, 1, prompt="  ")
    with pytest.raises(ValueError, match="kind"):
        rs.plan_request("noise", 0, 1, prompt="x")
    assert rs.parse_inputs("music,slow, dark strings,") == ("music", "slow, dark strings", "")
    assert rs.parse_inputs("speech,Hello there,narrator") == ("speech", "Hello there", "narrator")


# -- Blender -----------------------------------------------------------------------------------------
def test_blender_scene_rate_and_strip_request():
    assert scene_rate(24, 1.0010000467300415) == Fraction(24000, 1001)
    assert scene_rate(30, 1.001) == Fraction(30000, 1001)
    assert scene_rate(25, 1.0) == 25
    # a strip whose clip starts at frame 100, trimmed so it shows frames 112..136 of the timeline
    r = strip_request("/v/a.mov", 100.0, 112, 136, 24, 1.0010000467300415, strip_fps=23.976)
    assert r.fps == "24000/1001" and r.frames == 24 and r.start_frame == 112 and r.samples == 48048
    assert r.in_seconds == pytest.approx(12 * 1001 / 24000) and r.out_seconds == pytest.approx(36 * 1001 / 24000)
    assert not r.warning
    assert "scene rate" in strip_request("/v/a.mov", 0, 0, 10, 25, 1.0, strip_fps=30.0).warning
    with pytest.raises(ValueError):
        strip_request("/v/a.mov", 0, 10, 10, 25, 1.0)
    f = r.fields(caption="tense", folder="/out", seed=1, name="a-score")
    assert f["frames"] == 24 and f["fps"] == "24000/1001" and f["fit_length"] and f["folder"] == "/out"


def test_blender_text_request():
    r = text_request("  Hello there.  ", 70, 120, 24, 1.0010000467300415)
    assert (r.text, r.frames, r.fps, r.start_frame, r.samples) == ("Hello there.", 50, "24000/1001", 70, 100100)
    f = r.fields(voice="narrator", folder="/out", name="line1-speech")
    assert f == {"text": "Hello there.", "frames": 50, "fps": "24000/1001", "fit_length": True,
                 "sample_rate": 48000, "voice": "narrator", "folder": "/out", "name": "line1-speech"}
    with pytest.raises(ValueError, match="no text"):
        text_request("  ", 0, 10, 25, 1.0)
    with pytest.raises(ValueError, match="no length"):
        text_request("x", 10, 10, 25, 1.0)


def test_blender_pick_channel():
    strips = [(1, 0, 100), (2, 0, 50), (3, 60, 80), (4, 0, 1000)]
    assert pick_channel(strips, 50, 60, above=1) == 2  # channel 2 ends where we start
    assert pick_channel(strips, 40, 70, above=1) == 5
    assert pick_channel([], 0, 10, above=7) == 8


def test_blender_request_runs_on_the_daemon(daemon):
    video = daemon.home / "strip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=2:size=96x64:rate=24000/1001", "-pix_fmt", "yuv420p", str(video)],
                   check=True, capture_output=True)
    req = strip_request(str(video), 10.0, 22, 34, 24, 1.0010000467300415)
    client = connect(daemon.settings)
    try:
        job = HostJob(client, "score", req.fields(caption="tense", folder=str(daemon.home / "blend"), name="strip"))
        job.submit()
        deadline = time.monotonic() + 240
        res = job.poll()
        while not res.final and time.monotonic() < deadline:
            time.sleep(0.5)
            res = job.poll()
    finally:
        client.close()
    assert res.state == "done", res
    assert wav_frames(res.path)[:2] == (req.samples, 48000) == (24024, 48000)


# -- the non-blocking job follower the hosts use -------------------------------------------------------
def test_jobwatch_reads_events_and_notices_a_dead_daemon(tmp_path):
    from unimoe_audio.client.client import Client

    d = DaemonProc(tmp_path).start()
    try:
        with Client(d.settings, auto_start=False) as c:
            job = c.submit("music", caption="a long bed", seconds=60.0)
            watch = c.watch(job.id, resync_s=0.5, resync_timeout=0.25)
            first = watch.poll()  # the opening snapshot
            assert first is not None and first.job_id == job.id and watch.requests == 1
            t0 = time.monotonic()
            deadline = t0 + 240
            seen = []
            while time.monotonic() < deadline:
                upd = watch.poll()
                if upd is not None:
                    seen.append(upd.kind)
                    if upd.kind == "progress":
                        break
                time.sleep(0.05)
            assert "progress" in seen, seen
            # events arrive without asking; a request only after each quiet spell of resync_s
            assert watch.requests <= 1 + (time.monotonic() - t0) / watch.resync_s + 1
            d.kill9()
            final = None
            deadline = time.monotonic() + 60
            while final is None and time.monotonic() < deadline:
                upd = watch.poll()
                if upd is not None and upd.final:
                    final = upd
                time.sleep(0.05)
            assert final is not None and final.kind == "failed"
            assert final.event.error.code == "not_running" and "crashed or was killed" in final.event.error.message
            assert watch.poll() is None  # nothing new after the end
    finally:
        d.close()
