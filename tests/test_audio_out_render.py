"""Output rendering details: true peak between samples, short clips, rate/channel shapes, WAV safety."""
from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.model import audio_out
from unimoe_audio.model.errors import InvalidInput


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    s = json.loads(out)["streams"][0]
    return {"rate": int(s["sample_rate"]), "channels": int(s["channels"]), "samples": int(s["duration_ts"])}


def test_true_peak_sees_the_peak_between_samples():
    # A sine at fs/4 with a 45 degree phase: every sample is at 0.707 of the real peak (-3 dB).
    sr = 48000
    n = np.arange(sr)
    x = (0.9 * np.sin(2 * np.pi * n / 4 + np.pi / 4)).astype(np.float32)[None]
    sample_peak_db = 20 * np.log10(np.abs(x).max())
    assert sample_peak_db == pytest.approx(20 * np.log10(0.9 * np.sqrt(0.5)), abs=0.01)
    tp = audio_out.true_peak_db(x, sr)
    # (the abrupt start and end of the tone ring slightly above 0.9 once band-limited: allow +0.2 dB)
    assert 20 * np.log10(0.9) - 0.1 <= tp <= 20 * np.log10(0.9) + 0.2 and tp > sample_peak_db + 2.5
    # Its loudness is about its true peak + 0.3 dB (K-weighting lifts 12 kHz), so a 0 LUFS target would put
    # the samples at -3.3 dBFS (a sample-peak check passes) but the true peak at -0.3 dBTP: over the ceiling.
    y, info = audio_out.normalize_loudness(x, sr, 0.0, -1.0)
    assert 20 * np.log10(np.abs(y).max()) < -3.0
    assert info["limited_by_true_peak"] and audio_out.true_peak_db(y, sr) <= -1.0 + 0.01


def test_loudness_of_a_clip_shorter_than_one_gating_block():
    sr = 16000
    x = (np.random.default_rng(1).standard_normal((1, 3000)) * 0.05).astype(np.float32)  # 0.19 s
    y, info = audio_out.normalize_loudness(x, sr, -20.0, -1.0)
    assert y.shape == x.shape and info["gain_db"] != 0.0
    assert audio_out.integrated_loudness(y, sr) == pytest.approx(-20.0, abs=0.5)


@pytest.mark.parametrize("sr_out,n_out", [(44100, 132300), (48000, 144000), (16000, 48000), (24000, 72000)])
def test_rate_conversion_is_sample_exact_and_written_as_asked(tmp_path, sr_out, n_out):
    x = (np.random.default_rng(2).standard_normal(48000) * 0.1).astype(np.float32)  # 3 s at 16 kHz
    y = audio_out.to_channels(audio_out.to_rate(x[None], 16000, sr_out), 2)
    assert y.shape == (2, n_out) and y.dtype == np.float32
    path = audio_out.write_wav(tmp_path / "o.wav", y, sr_out, bit_depth=16)
    assert ffprobe(path) == {"rate": sr_out, "channels": 2, "samples": n_out}


def test_channels_up_and_down():
    stereo = np.stack([np.full(10, 0.2, np.float32), np.full(10, 0.4, np.float32)])
    assert np.allclose(audio_out.to_channels(stereo, 1), 0.3)
    mono = np.full(10, 0.5, np.float32)
    assert audio_out.to_channels(mono, 2).shape == (2, 10)
    with pytest.raises(InvalidInput):
        audio_out.to_channels(mono, 0)


def test_fit_length_fades_at_the_cut_and_keeps_the_rest(tmp_path):
    sr = 16000
    x = np.full((1, 2 * sr), 0.5, np.float32)
    y = audio_out.fit_length(x, sr + 7, sr, fade_ms=10.0)
    assert y.shape == (1, sr + 7)
    assert abs(float(y[0, -1])) < 1e-6 and np.all(y[0, : sr - 200] == 0.5)  # only the last 10 ms move


def test_wav_is_readable_by_others_clipped_and_refuses_garbage(tmp_path):
    x = np.array([[0.0, 1.5, -2.0, 0.25]], np.float32)
    path = audio_out.write_wav(tmp_path / "clip.wav", x, 16000, bit_depth=16)
    assert stat.S_IMODE(os.stat(path).st_mode) & 0o044 == 0o044  # not mkstemp's 0600
    back, _ = sf.read(path, dtype="float32")
    assert back[1] == pytest.approx(1.0, abs=1e-4) and back[2] == -1.0  # clipped, not wrapped around
    floaty = audio_out.write_wav(tmp_path / "f.wav", x, 16000, bit_depth=32)
    np.testing.assert_array_equal(sf.read(floaty, dtype="float32")[0], x[0])  # float keeps overs
    bad = x.copy()
    bad[0, 1] = np.nan
    with pytest.raises(InvalidInput) as err:
        audio_out.write_wav(tmp_path / "nan.wav", bad, 16000)
    assert err.value.field == "audio"
    with pytest.raises(InvalidInput):
        audio_out.write_wav(tmp_path / "t.wav", np.zeros((16000, 2), np.float32), 16000)  # [n, channels]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.wav", "f.wav"]  # no temp files left
