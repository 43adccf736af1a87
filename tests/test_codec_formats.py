"""DAC: weight formats (original, HF folders with either weight-norm spelling), dtype, streaming closeness,
and the whole prompt path from a real 44.1 kHz stereo file to the original codes."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from unimoe_audio.model import media
from unimoe_audio.model.codec import DacCodec
from unimoe_audio.model.errors import CheckpointError, InvalidInput

FIX = Path(__file__).parent / "fixtures" / "dac"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def codec() -> DacCodec:
    return DacCodec.load(FIX / "dac_small_random.pth")


def _codes(name: str = "codes.npy") -> np.ndarray:
    return np.load(FIX / name)[0].T  # [T, 12]


def _write_hf(codec: DacCodec, folder: Path, spelling: str) -> Path:
    """An HF folder whose weights use ``spelling``: "parametrizations" (new API) or "legacy" (weight_g/v)."""
    folder.mkdir()
    codec.model.config.to_json_file(folder / "config.json")
    model = copy.deepcopy(codec.model)
    model.apply_weight_norm()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    assert sum(k.endswith("original0") for k in sd) == 84
    if spelling == "legacy":
        sd = {k.replace(".parametrizations.weight.original0", ".weight_g")
               .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in sd.items()}
        torch.save(sd, folder / "pytorch_model.bin")
    else:
        save_file(sd, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize("spelling", ["parametrizations", "legacy"])
def test_hf_folder_with_weight_norm_keys(codec, tmp_path, spelling):
    hf = DacCodec.load(_write_hf(codec, tmp_path / "hf", spelling))
    ref = np.load(FIX / "decoded.npy")[0, 0]
    assert np.abs(hf.decode(_codes()) - ref).max() <= 1e-5
    np.testing.assert_array_equal(hf.encode(np.load(FIX / "input_16k.npy")).numpy(), _codes())


def test_hf_folder_missing_half_of_a_pair_is_named(codec, tmp_path):
    folder = _write_hf(codec, tmp_path / "hf", "parametrizations")
    from safetensors.torch import load_file

    sd = load_file(str(folder / "model.safetensors"))
    del sd["decoder.conv1.parametrizations.weight.original1"]
    save_file(sd, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        DacCodec.load(folder)
    assert err.value.field == "dac" and "decoder.conv1" in str(err.value)


def test_properties_and_dtype(codec):
    assert (codec.sample_rate, codec.hop, codec.n_codebooks) == (16000, 320, 12)
    assert codec.dtype == torch.float32
    half = DacCodec.load(FIX / "dac_small_random.pth", dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16
    audio = half.decode(_codes())
    assert audio.dtype == np.float32 and np.abs(audio - np.load(FIX / "decoded.npy")[0, 0]).max() < 0.05
    assert half.encode(np.load(FIX / "input_16k.npy")).shape == (75, 12)


def test_bad_audio_is_refused(codec):
    x = np.load(FIX / "input_16k.npy").copy()
    x[100] = np.nan
    with pytest.raises(InvalidInput) as err:
        codec.encode(x)
    assert err.value.field == "audio"


@pytest.mark.parametrize("chunk,context", [(1, 12), (7, 12), (16, 16), (50, 12), (200, 12)])
def test_streaming_equals_full_decode_when_context_covers_the_receptive_field(codec, chunk, context):
    # The decoder sees about 11 frames either side, so 12 context frames leave only float rounding.
    codes = _codes("codes_random.npy")
    full = codec.decode(codes)
    blocks = list(codec.iter_decode(codes, chunk_frames=chunk, context_frames=context))
    assert len(blocks) == -(-75 // chunk)
    assert [b.size for b in blocks[:-1]] == [chunk * 320] * (len(blocks) - 1)
    joined = np.concatenate(blocks)
    assert joined.shape == full.shape == (75 * 320 - 8,)
    assert np.abs(joined - full).max() < 1e-5


def test_streaming_without_enough_context_is_measurably_off(codec):
    # Guards the test above: too little context must show up, so that test can fail.
    codes = _codes("codes_random.npy")
    joined = np.concatenate(list(codec.iter_decode(codes, chunk_frames=16, context_frames=2)))
    assert np.abs(joined - codec.decode(codes)).max() > 1e-3


def test_prompt_path_from_a_44k_stereo_file_gives_the_original_codes(codec, tmp_path):
    # The UniMoE prompt path end to end: a float WAV at 44.1 kHz stereo, decoded by ffmpeg, averaged,
    # resampled with the torchaudio recipe (bit-exact), then encoded.
    stereo = np.load(FIX / "input_44k_stereo.npy")
    wav = tmp_path / "prompt.wav"
    sf.write(wav, stereo.T, 44100, subtype="FLOAT")
    mono16 = media.load_audio(wav)
    np.testing.assert_array_equal(mono16, np.load(FIX / "resampled_16k_torchaudio.npy"))
    np.testing.assert_array_equal(codec.encode(mono16).numpy(), np.load(FIX / "codes_44k.npy")[0].T)
