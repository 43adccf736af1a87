"""DAC 16 kHz codec: parity with the original package's outputs (tests/fixtures/dac/README.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unimoe_audio.model.codec import DECODE_TRIM, HOP, DacCodec, make_tiny_dac, to_original_state_dict
from unimoe_audio.model.errors import CheckpointError, InvalidInput
from unimoe_audio.model.resample import resample

FIX = Path(__file__).parent / "fixtures" / "dac"


@pytest.fixture(scope="module")
def codec() -> DacCodec:
    return DacCodec.load(FIX / "dac_small_random.pth")


def test_encode_matches_original_codes(codec):
    codes = codec.encode(np.load(FIX / "input_16k.npy"))
    assert codes.shape == (75, 12)
    np.testing.assert_array_equal(codes.numpy(), np.load(FIX / "codes.npy")[0].T)


@pytest.mark.parametrize("codes_file,audio_file", [("codes.npy", "decoded.npy"), ("codes_random.npy", "decoded_random.npy")])
def test_decode_matches_original_audio(codec, codes_file, audio_file):
    audio = codec.decode(np.load(FIX / codes_file)[0].T)
    ref = np.load(FIX / audio_file)[0, 0]
    assert audio.shape == ref.shape == (HOP * 75 - DECODE_TRIM,)
    assert np.abs(audio - ref).max() <= 1e-5


def test_44k_stereo_prompt_path_gives_original_codes(codec):
    stereo = np.load(FIX / "input_44k_stereo.npy")
    mono16 = resample(0.5 * (stereo[0] + stereo[1]), 44100, 16000)
    # Bit-equality of the resampler depends on the conv kernel torch picks for the shape; the codes do not.
    assert np.abs(mono16 - np.load(FIX / "resampled_16k_torchaudio.npy")).max() <= 5e-7
    np.testing.assert_array_equal(codec.encode(mono16).numpy(), np.load(FIX / "codes_44k.npy")[0].T)


def test_batch_encode_decode_equals_single(codec):
    x = np.load(FIX / "input_16k.npy")
    batch = codec.encode(np.stack([x, x[::-1].copy()]))
    np.testing.assert_array_equal(batch[0].numpy(), codec.encode(x).numpy())
    audio = codec.decode(batch)
    assert audio.shape == (2, HOP * 75 - DECODE_TRIM)
    assert np.abs(audio[0] - codec.decode(batch[0])).max() < 1e-5


def test_encode_pads_to_hop_like_preprocess(codec):
    x = np.load(FIX / "input_16k.npy")[:23900]
    assert codec.encode(x).shape == (75, 12)


def test_streaming_chunks_concatenate_to_full_decode(codec):
    codes = np.load(FIX / "codes_random.npy")[0].T
    full = codec.decode(codes)
    blocks = list(codec.iter_decode(codes, chunk_frames=16, context_frames=12))
    assert len(blocks) == 5
    joined = np.concatenate(blocks)
    assert joined.shape == full.shape
    assert np.abs(joined - full).max() < 1e-4


def test_hf_folder_round_trip(codec, tmp_path):
    codec.save_hf(tmp_path / "hf")
    again = DacCodec.load(tmp_path / "hf")
    codes = np.load(FIX / "codes.npy")[0].T
    np.testing.assert_array_equal(again.decode(codes), codec.decode(codes))
    np.testing.assert_array_equal(again.encode(np.load(FIX / "input_16k.npy")).numpy(), codes)


def test_original_format_round_trip(codec, tmp_path):
    sd = to_original_state_dict(codec.model, 4)
    original = torch.load(FIX / "dac_small_random.pth", map_location="cpu", weights_only=True)["state_dict"]
    assert set(sd) == set(original) and len(sd) == 322


def test_tiny_dac_is_original_format_and_codes_vary(tmp_path):
    path = make_tiny_dac(tmp_path / "dac", seed=3)
    assert path.name == "weights_16khz.pth"
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert any(k.endswith("weight_g") for k in blob["state_dict"]) and blob["metadata"]["kwargs"]["n_codebooks"] == 12
    tiny = DacCodec.load(tmp_path / "dac")
    codes = tiny.encode(np.load(FIX / "input_16k.npy")).numpy()
    assert min(len(set(codes[:, c])) for c in range(12)) > 10
    audio = tiny.decode(codes)
    assert np.isfinite(audio).all() and 0.001 < audio.std() and np.abs(audio).max() < 0.99


def test_bad_weights_and_codes_are_named(tmp_path, codec):
    bad = tmp_path / "weights_16khz.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="weights_16khz.pth"):
        DacCodec.load(bad)
    with pytest.raises(CheckpointError, match="no DAC weights"):
        DacCodec.load(tmp_path / "missing")
    blob = torch.load(FIX / "dac_small_random.pth", map_location="cpu", weights_only=True)
    del blob["state_dict"]["decoder.model.0.bias"]
    torch.save(blob, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="missing.*decoder.conv1.bias"):
        DacCodec.load(tmp_path / "cut.pth")
    with pytest.raises(InvalidInput) as err:
        codec.decode(np.full((4, 12), 1024))
    assert err.value.field == "codes"
