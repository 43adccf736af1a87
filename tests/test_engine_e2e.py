"""End to end on the tiny random bundle (LM + DAC): speech from an espeak-ng recording, music of an
exact length (with continuation windows), video scoring of an NTSC-rate test clip, batching."""
from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from unimoe_audio.model import audio_out
from unimoe_audio.model.engine import Engine
from unimoe_audio.model.requests import (Length, MusicRequest, Progress, SamplingParams, SpeechRequest,
                                         VideoScoreRequest)
from unimoe_audio.model.tiny_bundle import ensure_tiny_model

SR = 16000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="module")
def eng(bundle):
    # A tiny window (60 frames = 1.2 s, 20 frames of context) so continuation runs in tests.
    e = Engine.load(bundle, device="cpu", dtype="fp32", window_frames=60, context_frames=20)
    e.speech_max_chars = 30  # sentence chunks even for short test texts
    yield e
    e.close()


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    subprocess.run(["espeak-ng", "-w", str(d / "ref.wav"), "This is my voice, speaking clearly."], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=duration=2.5:size=160x120:rate=24000/1001", "-pix_fmt", "yuv420p",
                    str(d / "clip.mp4")], check=True)
    return d


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)["streams"][0]
    return {"rate": int(s["sample_rate"]), "channels": int(s["channels"]),
            "samples": int(s.get("duration_ts") or round(float(s["duration"]) * int(s["sample_rate"])))}


def _probe_video_seconds(path: Path) -> Fraction:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames", "-show_entries",
                          "stream=nb_read_frames,r_frame_rate", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    s = json.loads(out.stdout)["streams"][0]
    return Fraction(int(s["nb_read_frames"])) / Fraction(s["r_frame_rate"])


def test_tiny_bundle_is_marked_and_idempotent(bundle):
    assert "NOISE" in (bundle / "README.txt").read_text()
    cfg = json.loads((bundle / "config.json").read_text())
    assert cfg["unimoe_audio_tiny"] is True
    stamp = (bundle / "config.json").stat().st_mtime_ns
    assert ensure_tiny_model(bundle) == bundle
    assert (bundle / "config.json").stat().st_mtime_ns == stamp
    assert (bundle / "dac").is_dir()
    assert not [p for p in bundle.parent.iterdir() if ".tmp-" in p.name]


def test_engine_info(eng):
    i = eng.info
    assert i["device"] == "cpu" and i["dtype"] == "float32" and i["parameters"] > 0
    assert len(i["sha256"]) == 64 and i["tiny"] is True


def test_speech_from_espeak_reference(eng, media_dir, tmp_path):
    seen: list[Progress] = []
    req = SpeechRequest(text="Hello there. This is a test of the engine.", reference_audio=str(media_dir / "ref.wav"),
                        reference_text="This is my voice, speaking clearly.",
                        length=Length(max_seconds=1.0), sampling=SamplingParams(seed=7))
    res = eng.speech(req, progress=seen.append)
    assert res.sample_rate == SR and res.audio.dtype == np.float32 and res.audio.shape[0] == 1
    assert res.seed == 7 and res.task == "speech" and res.info["chunks"] == 2
    assert np.isfinite(res.audio).all() and res.codes.shape[1] == 12
    # two chunks joined by a 0.25 s pause
    assert res.audio.shape[1] >= int(0.25 * SR) + 2 * 320
    stages = [p.stage for p in seen]
    assert stages[0] == "prepare" and stages[-1] == "finish" and "generate" in stages and "encode" in stages
    fr = [p.fraction for p in seen]
    assert fr == sorted(fr) and fr[-1] == 1.0
    out = tmp_path / "speech.wav"
    audio_out.write_wav(out, res.audio, SR)
    info = ffprobe(out)
    assert info == {"rate": SR, "channels": 1, "samples": res.audio.shape[1]}
    # a saved voice (encode_voice) gives the same audio as the recording
    codes = eng.encode_voice(str(media_dir / "ref.wav"), "This is my voice, speaking clearly.")
    assert codes.ndim == 2 and codes.shape[1] == 12 and codes.shape[0] > 50
    res2 = eng.speech(SpeechRequest(text=req.text, voice_codes=codes, reference_text=req.reference_text,
                                    length=req.length, sampling=SamplingParams(seed=7)))
    np.testing.assert_array_equal(res2.audio, res.audio)


def test_music_exactly_three_seconds_with_continuation(eng, tmp_path):
    res = eng.music(MusicRequest(caption="calm piano", tempo_bpm=90, key="C major", length=Length(seconds=3.0),
                                 sampling=SamplingParams(seed=3)))
    assert res.audio.shape == (1, 48000)
    assert res.codes.shape == (150, 12)  # 3 s at 50 frames/s: windows of 60, 40, 40, 10 new frames
    assert res.info["rounds"] == 4 and "Tempo 90 BPM" in res.info["caption"]
    # the layers above convert rate and channels: still sample exact
    stereo = audio_out.to_channels(audio_out.to_rate(res.audio, SR, 44100), 2)
    out = tmp_path / "music.wav"
    audio_out.write_wav(out, stereo, 44100)
    assert ffprobe(out) == {"rate": 44100, "channels": 2, "samples": 132300}


def test_music_frames_at_ntsc_rate_and_bars(eng):
    r = eng.music(MusicRequest(caption="synth pad", length=Length(frames=48, fps=Fraction(24000, 1001)),
                               sampling=SamplingParams(seed=4)))
    assert r.audio.shape == (1, 32032)  # 48 * 1001 / 24000 s at 16 kHz, exactly
    b = eng.music(MusicRequest(caption="synth pad", tempo_bpm=240, bars=1, sampling=SamplingParams(seed=4)))
    assert b.audio.shape == (1, 16000)  # 1 bar of 4/4 at 240 BPM = 1 s


def test_video_score_matches_clip_duration(eng, media_dir, tmp_path):
    clip = media_dir / "clip.mp4"
    dur = _probe_video_seconds(clip)  # 60 frames at 24000/1001
    want = int(round(dur * SR))
    res = eng.video_score(VideoScoreRequest(video=str(clip), caption="a test pattern", frames_per_second=2.0,
                                            sampling=SamplingParams(seed=5)))
    assert res.audio.shape == (1, want)
    assert res.info["mode"] == "vision" and res.info["video_tokens"] > 0
    out = tmp_path / "score.wav"
    audio_out.write_wav(out, res.audio, SR)
    assert ffprobe(out) == {"rate": SR, "channels": 1, "samples": want}
    # timeline frames at the clip's own rate: 60 frames at 24000/1001 fps is the same length
    res_f = eng.video_score(VideoScoreRequest(video=str(clip), caption="a test pattern", frames_per_second=2.0,
                                              length=Length(frames=60, fps=Fraction(24000, 1001)),
                                              sampling=SamplingParams(seed=5)))
    assert res_f.audio.shape == (1, want)


def test_video_conditioning_changes_output_and_reference_equals_caption(eng, media_dir):
    clip = str(media_dir / "clip.mp4")
    sp = SamplingParams(seed=9, temperature=0.0)
    ln = Length(seconds=0.4)
    vis = eng.video_score(VideoScoreRequest(video=clip, caption="waves", length=ln, sampling=sp))
    ref = eng.video_score(VideoScoreRequest(video=clip, caption="waves", mode="reference", length=ln, sampling=sp))
    txt = eng.music(MusicRequest(caption="waves", length=ln, sampling=sp))
    assert not np.array_equal(vis.codes, ref.codes)
    np.testing.assert_array_equal(ref.codes, txt.codes)
    # a clip sub-range (in/out) sets the default length
    part = eng.video_score(VideoScoreRequest(video=clip, caption="waves", in_seconds=0.5, out_seconds=1.75,
                                             sampling=sp))
    assert part.audio.shape == (1, 20000)


def test_run_batch_equals_single_runs(eng):
    reqs = [MusicRequest(caption="drums", length=Length(seconds=0.3), sampling=SamplingParams(seed=1)),
            MusicRequest(caption="a long caption for a string quartet piece", length=Length(seconds=0.6),
                         sampling=SamplingParams(seed=2)),
            MusicRequest(caption="", length=Length(seconds=1.0))]  # invalid: empty caption
    out = eng.run_batch(reqs, [None, None, None])
    assert out[0].audio.shape == (1, 4800) and out[1].audio.shape == (1, 9600)
    assert getattr(out[2], "field", None) == "caption"
    for r, q in zip(out[:2], reqs[:2]):
        np.testing.assert_array_equal(r.codes, eng.music(q).codes)
