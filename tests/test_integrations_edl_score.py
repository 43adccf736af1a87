"""edl_score: an EDL of a real ffmpeg testsrc video scored by a real daemon (tiny model), sample-exact."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from unimoe_audio.integrations.edl_score import cue_for_range, plan_edl  # noqa: E402
from unimoe_audio.integrations.timeline import wav_frames, write_edl  # noqa: E402

RATE = "24000/1001"
SCRIPT = [sys.executable, "-m", "unimoe_audio.integrations.edl_score"]


def make_video(path: Path, seconds: float = 4.0, rate: str = RATE) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=96x64:rate={rate}",
                    "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture(scope="module")
def media(daemon):
    folder = daemon.home / "media"
    folder.mkdir()
    make_video(folder / "clip.mp4")
    return folder


def test_plan_edl_events(daemon, media, tmp_path):
    # relative source names are found in --media folders; black and audio events are skipped
    text = write_edl("t", [("clip.mp4", 12, 36, 86400, 86424), ("missing.mov", 0, 24, 86424, 86448)], RATE) + \
        "003  BL       V     C        00:00:00:00 00:00:01:00 01:00:01:00 01:00:02:00\n"
    edl = tmp_path / "cut.edl"
    edl.write_text(text)
    cues, skipped = plan_edl(edl, RATE, [media], source_start="00:00:00:00")
    assert [c.name for c in cues] == ["cut-001"]
    c = cues[0]
    assert c.video == str(media / "clip.mp4") and c.frames == 24 and c.fps == RATE
    assert c.in_seconds == pytest.approx(12 * 1001 / 24000) and c.out_seconds == pytest.approx(36 * 1001 / 24000)
    assert c.expected_samples == 48048 and c.record_in == "01:00:00:00"
    assert [s["event"] for s in skipped] == [2, 3] and "not found" in skipped[0]["why"] and skipped[1]["why"] == "black"
    # a source timecode later than the event's source in is refused, not silently clamped
    cues, skipped = plan_edl(edl, RATE, [media], source_start="00:00:01:00")
    assert not cues and "before the clip's start" in skipped[0]["why"]


def test_edl_cues_are_sample_exact_against_the_daemon(daemon, media, tmp_path):
    edl = daemon.home / "reel1.edl"
    edl.write_text(write_edl("reel 1", [(str(media / "clip.mp4"), 0, 12, 86400, 86412),
                                        (str(media / "clip.mp4"), 48, 66, 86412, 86430)], RATE))
    out = daemon.home / "score"
    rep_path = tmp_path / "report.json"
    proc = subprocess.run([*SCRIPT, str(edl), "--rate", RATE, "--caption", "tense strings", "--folder", str(out),
                           "--report", str(rep_path), "--seed", "3", "--no-start"],
                          env=daemon.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rep = json.loads(rep_path.read_text())
    assert rep["ok"] and rep["rate"] == RATE and rep["sample_rate"] == 48000
    assert [c["frames"] for c in rep["cues"]] == [12, 18]
    for cue, expected in zip(rep["cues"], (24024, 36036)):
        res = cue["result"]
        assert res["status"] == "done" and res["exact"] is True
        assert cue["expected_samples"] == expected == res["samples"]
        p = Path(res["path"])
        assert p.is_file() and p.parent == out.resolve() and p.name.startswith("reel1-00")
        assert wav_frames(p)[:2] == (expected, 48000)
    assert rep["cues"][1]["in_seconds"] == pytest.approx(48 * 1001 / 24000)


def test_single_video_range_and_rejection(daemon, media, tmp_path):
    # one video + timecode in/out (25 fps timeline): 15 frames = 0.6 s = 28800 samples
    rep_path = tmp_path / "one.json"
    proc = subprocess.run([*SCRIPT, "--video", str(media / "clip.mp4"), "--in", "00:00:01:00", "--out", "00:00:01:15",
                           "--rate", "25", "--folder", str(daemon.home / "one"), "--report", str(rep_path),
                           "--no-start"], env=daemon.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    cue = json.loads(rep_path.read_text())["cues"][0]
    assert cue["frames"] == 15 and cue["result"]["samples"] == 28800 == cue["expected_samples"]
    # a video the daemon may not read: the report names the field, the exit status says it failed
    outside = Path("/proc/self/clip.mp4")
    cue = cue_for_range(outside, "0", "24", 24)
    assert cue.in_seconds == 0 and cue.out_seconds == 1.0
    proc = subprocess.run([*SCRIPT, "--video", str(outside), "--out", "24", "--rate", "24", "--no-start"],
                          env=daemon.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    res = json.loads(proc.stdout)["cues"][0]["result"]
    assert res["status"] == "rejected" and res["field"] and "video" in res["field"]


def test_bad_arguments_exit_2(daemon):
    proc = subprocess.run([*SCRIPT, "--video", "x.mp4", "--in", "00:00:02:00", "--out", "00:00:01:00", "--rate", "25",
                           "--no-start"], env=daemon.env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not after" in proc.stderr
