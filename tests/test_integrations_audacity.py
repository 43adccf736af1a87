"""The Audacity script against the real Audacity (Debian's 3.2 package) under Xvfb, through its
mod-script-pipe (tests/_audacity_host.py), and a real daemon on the tiny model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _audacity_host import AudacityHost  # noqa: E402

from unimoe_audio.client.client import Client  # noqa: E402
from unimoe_audio.integrations import audacity_unimoe as au  # noqa: E402
from unimoe_audio.integrations.timeline import wav_frames  # noqa: E402

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def daemon(voice_daemon):
    return voice_daemon


@pytest.fixture(scope="module")
def audacity(tmp_path_factory):
    for tool in ("audacity", "Xvfb", "xdotool", "import"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: apt-get install audacity xvfb xdotool imagemagick (.ci/run does)",
                        pytrace=False)
    host = AudacityHost(tmp_path_factory.mktemp("audacity"))
    try:
        yield host.start()
    finally:
        host.close()


def clips(pipe: au.AudacityPipe) -> list[dict]:
    return list(pipe.json("GetInfo: Type=Clips Format=JSON") or [])


def test_plan_request_is_sample_exact():
    p = au.plan_request("music", 1.25, 3.0, "warm pads", sample_rate=44100)
    assert p.samples == 132300 - 55125 and p.fields["seconds"] == p.samples / 44100 and p.fields["caption"] == "warm pads"
    assert au.plan_request("speech", 0, 1, "Hi.", voice="narrator").fields["voice"] == "narrator"
    with pytest.raises(ValueError, match="no selection"):
        au.plan_request("music", 2.0, 2.0, "x")
    with pytest.raises(ValueError, match="kind"):
        au.plan_request("noise", 0, 1, "x")


def test_no_audacity_is_told(tmp_path):
    with pytest.raises(au.PipeError, match="mod-script-pipe"):
        au.AudacityPipe((str(tmp_path / "to"), str(tmp_path / "from")), connect_timeout=0.5)


def test_fills_the_selection_in_audacity(audacity, daemon, tmp_path):
    pipe = audacity.pipe
    pipe.command("NewMonoTrack:")  # the user's track: left alone
    pipe.command("SelectTime: Start=1.25 End=3.0")
    assert au.selection(pipe) == (1.25, 3.0) and au.selection(pipe) == (1.25, 3.0)  # reading keeps it
    rate = au.default_rate(pipe)
    with Client(daemon.settings, auto_start=False) as client:
        report = au.fill_selection(pipe, client, "music", "soft marimba", timeout=300)
    assert report["sample_rate"] == rate and report["samples"] == round(3.0 * rate) - round(1.25 * rate)
    assert wav_frames(report["path"])[:2] == (report["samples"], rate)
    names = [t["name"] for t in au.tracks(pipe)]
    assert names == ["Audio 1", "music-soft-marimba"] and report["track"] == 1
    (clip,) = [c for c in clips(pipe) if c["track"] == 1]
    assert clip["start"] == pytest.approx(1.25, abs=1e-9)
    assert clip["end"] - clip["start"] == pytest.approx(report["samples"] / rate, abs=1e-9)
    assert au.selection(pipe) == (1.25, 3.0)  # the user's selection is back

    # speech through the command line, as a user runs it next to Audacity
    pipe.command("SelectTime: Start=4.0 End=5.5")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update({k: v for k, v in daemon.env.items() if k.startswith("UNIMOE_AUDIO_")})
    pipe.close()  # the script opens the pipe itself (Audacity serves one client at a time)
    try:
        out = subprocess.run([sys.executable, "-m", "unimoe_audio.integrations.audacity_unimoe", "speech",
                              "Welcome back.", "--voice", "narrator", "--timeout", "300"], env=env,
                             capture_output=True, text=True, timeout=600)
    finally:
        audacity.pipe = pipe = au.AudacityPipe(connect_timeout=30)
        pipe.sync()
    assert out.returncode == 0, out.stderr
    speech = json.loads(out.stdout)
    assert speech["track_name"] == "speech-Welcome-back" and speech["track"] == 2
    (sclip,) = [c for c in clips(pipe) if c["track"] == 2]
    assert sclip["start"] == pytest.approx(4.0, abs=1e-9)
    assert sclip["end"] - sclip["start"] == pytest.approx(1.5, abs=1e-9)
    # reading the selection again (label + Undo) left the music where it was
    assert [c["start"] for c in clips(pipe) if c["track"] == 1] == [pytest.approx(1.25, abs=1e-9)]

    # what Audacity plays: silence before the music, sound where the clips are
    mix = tmp_path / "mix.wav"
    pipe.command("SelectAll:")  # Export2 writes the selection
    pipe.command(f'Export2: Filename="{mix}" NumChannels=1', timeout=120)
    with wave.open(str(mix)) as w:
        r, width, data = w.getframerate(), w.getsampwidth(), w.readframes(w.getnframes())
    assert width == 2
    samples = memoryview(data).cast("h")

    assert len(samples) == round(5.5 * r)

    def peak(a: float, b: float) -> int:
        return max((abs(x) for x in samples[round(a * r):round(b * r)]), default=0)

    # silence (Audacity's 16-bit export dithers: a few LSB) before and between the clips, sound in them
    assert peak(0.0, 1.2) < 64 and peak(3.05, 3.95) < 64
    assert peak(1.3, 2.95) > 1000 and peak(4.05, 5.45) > 1000
    pipe.command("SelectTracks: Track=1 TrackCount=1 Mode=Set")
    pipe.command("SelectTime: Start=1.25 End=3.0")
    pipe.command("FitV:")  # View > Track Size > Fit to Height: every track in the screenshot
    pipe.sync()
    shot = audacity.screenshot(tmp_path / "audacity.png")
    assert shot.stat().st_size > 10_000
    if os.environ.get("UNIMOE_SCREENSHOT_DIR"):  # how docs/img/audacity.png was taken
        shutil.copy(shot, Path(os.environ["UNIMOE_SCREENSHOT_DIR"]) / "audacity.png")


def test_continue_selection_in_audacity(audacity, daemon, tmp_path):
    """Continue selection: the selected audio goes to the daemon, the new part comes back on a new track
    butted to the selection's end, and it is the continuation of exactly what was selected."""
    import numpy as np
    import soundfile as sf

    from test_music_continue import music_clip

    pipe = audacity.pipe
    take = daemon.home / "take.wav"
    music_clip(take, 3.0, au.default_rate(pipe), 1, "PCM_16")
    n_before = len(au.tracks(pipe))
    pipe.command(f'Import2: Filename="{take}"', timeout=120)
    pipe.command(f"SelectTracks: Track={n_before} TrackCount=1 Mode=Set")
    pipe.command("SelectTime: Start=0.5 End=2.5")
    rate = au.default_rate(pipe)
    folder = str(daemon.home / "audacity-out")
    with Client(daemon.settings, auto_start=False) as client:
        report = au.continue_selection(pipe, client, "same groove", 1.0, folder=folder, seed=11, timeout=600)
    assert report["selection"] == [0.5, 2.5] and report["samples"] == rate
    assert report["track"] == n_before + 1 and report["track_name"] == "continue-same-groove"
    (clip,) = [c for c in clips(pipe) if c["track"] == report["track"]]
    assert clip["start"] == pytest.approx(2.5, abs=1e-9) and clip["end"] == pytest.approx(3.5, abs=1e-9)
    assert au.selection(pipe) == (0.5, 2.5)  # the user's selection is back
    assert not list(Path(folder).glob(".audacity-selection-*"))  # the exported selection is cleaned up
    new = sf.read(report["path"], dtype="int16", always_2d=True)[0]
    assert new.shape[0] == rate
    # the new part starts where the selection's audio leaves off: no step bigger than the music's own
    src = sf.read(str(take), dtype="float32", always_2d=True)[0][:, 0]
    end = src[int(2.5 * rate) - 1]
    first = new[0].astype(np.float32).mean() / 32768
    steps = np.abs(np.diff(src[int(0.5 * rate):int(2.5 * rate)]))
    assert abs(first - end) <= np.percentile(steps, 99.9) + 2 / 32768
