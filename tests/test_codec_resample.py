"""The torchaudio-recipe resampler: bit-exact against the fixture, lengths, kinds, and the exact vs fast paths."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unimoe_audio.model.resample import output_length, resample

FIX = Path(__file__).parent / "fixtures" / "dac"


pytestmark = pytest.mark.usefixtures("one_thread")


def test_exact_path_is_bit_identical_to_torchaudio():
    stereo = np.load(FIX / "input_44k_stereo.npy")
    ref = np.load(FIX / "resampled_16k_torchaudio.npy")
    y = resample(0.5 * (stereo[0] + stereo[1]), 44100, 16000, exact=True)
    assert y.dtype == np.float32 and y.shape == ref.shape == (4800,)
    np.testing.assert_array_equal(y, ref)
    # batched rows are independent and identical to the single row; tensors come back as tensors
    rows = resample(torch.from_numpy(np.stack([0.5 * (stereo[0] + stereo[1])] * 2)), 44100, 16000, exact=True)
    assert isinstance(rows, torch.Tensor) and rows.shape == (2, 4800)
    np.testing.assert_array_equal(rows.numpy(), np.stack([ref, ref]))


def test_fast_path_is_within_float_rounding_of_the_exact_one():
    x = (np.random.default_rng(0).standard_normal((2, 22050)) * 0.2).astype(np.float32)
    for orig, new in ((44100, 16000), (22050, 16000), (48000, 16000), (16000, 44100), (16000, 48000)):
        a = resample(x, orig, new, exact=True)
        b = resample(x, orig, new)
        assert a.shape == b.shape == (2, output_length(x.shape[1], orig, new))
        assert np.abs(a - b).max() < 1e-6, (orig, new)


def test_lengths_and_identity():
    assert output_length(48000, 16000, 44100) == 132300  # 3 s, exactly
    assert output_length(32032, 16000, 48000) == 96096
    assert output_length(13230, 44100, 16000) == 4800
    assert output_length(1, 44100, 16000) == 1  # ceil, never zero for a non-empty input
    x = np.arange(10, dtype=np.float32)
    assert resample(x, 16000, 16000) is not None and np.array_equal(resample(x, 16000, 16000), x)
    assert resample(np.zeros((2, 0), np.float32), 16000, 48000).shape == (2, 0)
    with pytest.raises(ValueError):
        resample(x, 0, 16000)


def test_passband_kept_and_aliases_removed():
    sr = 44100
    t = np.arange(sr) / sr
    tone = np.sin(2 * np.pi * 1000 * t).astype(np.float32)  # well inside 8 kHz
    alias = np.sin(2 * np.pi * 15000 * t).astype(np.float32)  # above the new Nyquist
    y_tone = resample(tone, sr, 16000)[2000:-2000]
    y_alias = resample(alias, sr, 16000)[2000:-2000]
    assert abs(np.sqrt(np.mean(y_tone**2)) - np.sqrt(0.5)) < 0.01
    assert np.sqrt(np.mean(y_alias**2)) < 1e-3
