"""Output for timelines: rate, channels, loudness, exact length and atomic WAV files read back by ffprobe."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from unimoe_audio.model import audio_out
from unimoe_audio.model.errors import InvalidInput


def ffprobe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["streams"][0]


def noise(seconds: float, sr: int = 16000, level: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(0).standard_normal(int(seconds * sr)) * level).astype(np.float32)


@pytest.mark.parametrize("bits,fmt", [(16, "s16"), (24, "s32"), (32, "flt")])
def test_wav_formats_read_back(tmp_path, bits, fmt):
    x = audio_out.to_channels(audio_out.to_rate(noise(1.0), 16000, 48000), 2)
    path = audio_out.write_wav(tmp_path / "out.wav", x, 48000, bit_depth=bits)
    s = ffprobe(path)
    assert (int(s["sample_rate"]), s["channels"], int(s["duration_ts"])) == (48000, 2, 48000)
    assert s["sample_fmt"] == fmt
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temp file left behind


def test_exact_length_at_ntsc_rates():
    x = noise(2.3)
    for target in (120120, 48000 * 3, 5):
        y = audio_out.fit_length(x, target, 16000)
        assert y.shape == (1, target)
    padded = audio_out.fit_length(x, 48000, 16000)
    assert np.all(padded[:, x.size:] == 0) and abs(padded[0, x.size - 1]) < 1e-6


def test_loudness_target_and_true_peak_ceiling():
    x = audio_out.to_channels(noise(3.0, 48000, 0.05), 2)
    y, info = audio_out.normalize_loudness(x, 48000, -16.0, -1.0)
    assert abs(audio_out.integrated_loudness(y, 48000) - (-16.0)) < 0.5
    assert audio_out.true_peak_db(y, 48000) <= -1.0 + 1e-3
    # A loud target on peaky material is held back by the ceiling.
    clicks = np.zeros((1, 48000 * 2), dtype=np.float32)
    clicks[0, ::4800] = 0.5
    z, info = audio_out.normalize_loudness(clicks, 48000, -5.0, -1.0)
    assert info["limited_by_true_peak"] and audio_out.true_peak_db(z, 48000) <= -1.0 + 1e-3


def test_silence_is_left_alone_and_bad_depth_named(tmp_path):
    y, info = audio_out.normalize_loudness(np.zeros((2, 48000), np.float32), 48000, -16.0)
    assert info["skipped"] == "silent" and not y.any()
    with pytest.raises(InvalidInput) as err:
        audio_out.write_wav(tmp_path / "x.wav", noise(0.1), 16000, bit_depth=12)
    assert err.value.field == "bit_depth"
