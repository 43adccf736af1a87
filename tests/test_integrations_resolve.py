"""The DaVinci Resolve script, run as Resolve runs it (Workspace > Scripts: the file as ``__main__`` with the
``resolve`` global) against tests/_resolve_host.py, a stand-in that follows Resolve's scripting README and fails on
anything undocumented; scored by a real daemon (tiny model). Resolve itself cannot run here."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_integrations_interchange import make_video  # noqa: E402

from unimoe_audio.integrations.timeline import samples_for_frames, wav_frames  # noqa: E402

pytestmark = pytest.mark.timeout(900)
HERE = Path(__file__).resolve().parent
SCRIPT = HERE.parent / "integrations" / "resolve_unimoe.py"
CLIPS = [(12, 24, 0), (36, 18, 48)]  # record (from the timeline's start), frames, source in


def run_in_resolve(daemon, tmp: Path, script: Path, markers: bool = False) -> tuple[subprocess.CompletedProcess, dict]:
    media = daemon.home / "media"
    media.mkdir(exist_ok=True)
    video = media / "clip.mp4"
    if not video.exists():
        make_video(video)
    spec = {"timeline": "Reel 1", "fps": "24000/1001", "start": 86400,
            "clips": [{"path": str(video), "record": r, "frames": n, "src_in": s,
                       **({"markers": ["low drone"]} if markers and i == 1 else {})} for i, (r, n, s) in enumerate(CLIPS)]}
    (tmp / "project.json").write_text(json.dumps(spec))
    env = {**daemon.env, "TMPDIR": str(daemon.home)}  # the daemon reads only inside its allowed roots
    proc = subprocess.run([sys.executable, str(HERE / "_resolve_host.py"), str(script), str(tmp / "project.json"),
                           str(tmp / "state.json")], env=env, capture_output=True, text=True, timeout=800)
    return proc, json.loads((tmp / "state.json").read_text())


def test_scores_the_timeline_onto_a_new_audio_track(daemon, tmp_path):
    proc, st = run_in_resolve(daemon, tmp_path, SCRIPT)
    assert proc.returncode == 0 and st["error"] is None, proc.stdout + proc.stderr
    console = proc.stdout
    assert "exported 'Reel 1'" in console and "scoring 2 clips of 'Reel 1' at 01:00:00:00" in console
    assert console.count("queued as") == 2 and "done: 2/2 clips scored" in console
    (tl,) = st["timelines"]
    audio = tl["tracks"]["audio"]
    assert [t["name"] for t in audio] == ["Audio 1", "unimoe score"]
    placed = audio[1]["items"]
    assert [(i["start"], i["duration"], i["left"]) for i in placed] == [(86400 + r, n, 0) for r, n, _ in CLIPS]
    for item, (_, n, _) in zip(placed, CLIPS):
        assert wav_frames(item["path"]) == (samples_for_frames(n, "24000/1001"), 48000, 2)
    assert tl["tracks"]["video"][0]["items"][0]["start"] == 86412  # the picture untouched
    # the documented calls it made, in order
    calls = [c.split("(")[0] for c in st["calls"]]
    for call in ("Timeline.Export", "MediaPool.ImportMedia", "Timeline.AddTrack", "Timeline.SetTrackName",
                 "MediaPool.AppendToTimeline"):
        assert call in calls, calls
    assert "Timeline.AddTrack('audio', 'stereo')" in st["calls"]


def test_new_timeline_mode_and_marker_captions(daemon, tmp_path):
    # a user's edit of the constants: the scored OTIO comes back as a new timeline; markers are captions
    script = tmp_path / "resolve_unimoe.py"
    text = SCRIPT.read_text()
    assert 'RESULT = "track"' in text and "MARKED_ONLY = False" in text
    script.write_text(text.replace('RESULT = "track"', 'RESULT = "timeline"').replace("MARKED_ONLY = False",
                                                                                      "MARKED_ONLY = True"))
    proc, st = run_in_resolve(daemon, tmp_path, script, markers=True)
    assert proc.returncode == 0 and st["error"] is None, proc.stdout + proc.stderr
    assert "clip 1 skipped: no marker" in proc.stdout and "scoring 1 clips" in proc.stdout
    new = next(t for t in st["timelines"] if t["name"] == "Reel 1 (scored)")
    assert new["start"] == 86400
    score = next(t for t in new["tracks"]["audio"] if t["name"] == "unimoe score")
    r, n, _ = CLIPS[1]
    assert [(i["start"], i["duration"]) for i in score["items"]] == [(86400 + r, n)]
    from unimoe_audio.client import bwf

    assert bwf.read_ixml(Path(score["items"][0]["path"]))["NOTE"] == "low drone"


def test_the_stand_in_refuses_undocumented_calls(tmp_path):
    # the stand-in is strict: a script calling something Resolve does not document fails the run
    bad = tmp_path / "bad.py"
    bad.write_text("resolve.GetProjectManager().GetCurrentProject().GetCurrentTimeline().AddAudioTrack()\n")
    video = make_video(tmp_path / "clip.mp4")
    (tmp_path / "p.json").write_text(json.dumps({"timeline": "T", "fps": "25", "start": 90000, "clips": [
        {"path": str(video), "record": 0, "frames": 10, "src_in": 0}]}))
    proc = subprocess.run([sys.executable, str(HERE / "_resolve_host.py"), str(bad), str(tmp_path / "p.json"),
                           str(tmp_path / "s.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3
    assert "Timeline.AddAudioTrack is not in Resolve's scripting API" in json.loads((tmp_path / "s.json").read_text())["error"]
