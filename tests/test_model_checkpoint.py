"""Checkpoint loading: both key namings, shards, strict errors, full-size layout on the meta device."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from unimoe_audio.model.checkpoint import load_model, normalize_key
from unimoe_audio.model.config import ModelConfig, load_config
from unimoe_audio.model.decoder import UniMoEAudioModel
from unimoe_audio.model.errors import CheckpointError
from unimoe_audio.model.rope_index import positions_from_mask
from unimoe_audio.model.tiny import make_tiny_checkpoint

SHARD1 = "model-00001-of-00002.safetensors"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", size="tiny", seed=0)


@pytest.fixture()
def tiny_copy(tiny_dir, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_dir, dst)
    return dst


def _logits(model, ids):
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        return model(model.embed(ids), positions_from_mask(mask), logits="last").logits


def test_layout_of_tiny_checkpoint(tiny_dir):
    index = json.loads((tiny_dir / "model.safetensors.index.json").read_text())
    files = set(index["weight_map"].values())
    assert len(files) == 2 and all((tiny_dir / f).is_file() for f in files)
    keys = list(index["weight_map"])
    assert "model.embed_tokens.weight" in keys and "model.layers.0.mlp.gate.weight" in keys
    assert not any(k.startswith("language_model.") for k in keys)
    assert {"visual.patch_embed.proj.weight", "lm_head.weight", "codec_head.weight"} <= set(keys)
    for f in ("config.json", "vocab.json", "merges.txt", "tokenizer_config.json", "added_tokens.json"):
        assert (tiny_dir / f).is_file()


def test_same_seed_same_files(tiny_dir, tmp_path):
    other = make_tiny_checkpoint(tmp_path / "again", size="tiny", seed=0)
    for f in sorted(p.name for p in tiny_dir.iterdir()):
        assert (tiny_dir / f).read_bytes() == (other / f).read_bytes(), f


def test_both_key_namings_give_identical_outputs(tiny_dir, tmp_path):
    # rewrite as one file with the in-memory ("language_model.") names
    single = tmp_path / "single"
    single.mkdir()
    shutil.copy(tiny_dir / "config.json", single / "config.json")
    tensors = {}
    for f in sorted(tiny_dir.glob("*.safetensors")):
        tensors.update({normalize_key(k): v for k, v in load_file(str(f)).items()})
    assert "language_model.layers.1.mlp.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.3.up_proj.weight" in tensors
    save_file(tensors, str(single / "model.safetensors"))
    a = load_model(tiny_dir, dtype=torch.float32)
    b = load_model(single / "model.safetensors", dtype=torch.float32)
    ids = torch.tensor([[480, 82, 331, 426, 198, 502]])
    la, lb = _logits(a, ids), _logits(b, ids)
    assert torch.equal(la, lb) and la.abs().max() > 0
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


def test_dtypes_and_skips(tiny_dir):
    m = load_model(tiny_dir, dtype=torch.bfloat16, load_vision=False)
    assert m.visual is None and m.lm_head is None
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    assert not any(p.is_meta for p in m.parameters())
    m2 = load_model(tiny_dir, dtype=torch.float16, load_lm_head=True)
    assert m2.lm_head.weight.dtype == torch.float16 and m2.visual is not None


def test_five_dim_patch_embedding_is_accepted(tiny_copy):
    index = json.loads((tiny_copy / "model.safetensors.index.json").read_text())
    shard = index["weight_map"]["visual.patch_embed.proj.weight"]
    t = load_file(str(tiny_copy / shard))
    w4 = t["visual.patch_embed.proj.weight"]
    t["visual.patch_embed.proj.weight"] = w4.reshape(w4.shape[0], 3, 2, 14, 14).contiguous()
    save_file(t, str(tiny_copy / shard))
    m = load_model(tiny_copy, dtype=torch.float32)
    assert torch.equal(m.visual.patch_embed.proj.weight, w4.float())


def _edit_shard(folder, fn):
    path = folder / SHARD1
    t = load_file(str(path))
    fn(t)
    save_file(t, str(path))
    return t


def test_missing_key_is_named(tiny_copy):
    index_path = tiny_copy / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    victim = next(k for k, v in index["weight_map"].items() if v == SHARD1 and k.startswith("model.layers"))
    _edit_shard(tiny_copy, lambda t: t.pop(victim))
    with pytest.raises(CheckpointError, match="lacks.*" + victim.replace(".", r"\.")):
        load_model(tiny_copy)
    del index["weight_map"][victim]
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="missing tensors.*" + victim.replace(".", r"\.")):
        load_model(tiny_copy)


def test_wrong_shape_is_named(tiny_copy):
    def widen(t):
        k = next(k for k in t if k.endswith("self_attn.q_proj.bias"))
        t[k] = torch.zeros(t[k].shape[0] + 1, dtype=t[k].dtype)
    _edit_shard(tiny_copy, widen)
    with pytest.raises(CheckpointError, match=r"q_proj\.bias in model-00001-of-00002\.safetensors has shape"):
        load_model(tiny_copy)


def test_unexpected_key_is_named(tiny_copy):
    _edit_shard(tiny_copy, lambda t: t.update({"model.layers.0.mlp.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors.*model\.layers\.0\.mlp\.extra\.weight"):
        load_model(tiny_copy)


def test_truncated_and_corrupt_shards_name_the_file(tiny_copy):
    path = tiny_copy / SHARD1
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=SHARD1):
        load_model(tiny_copy)
    path.write_bytes(b"\x07garbage" + data[8:200])
    with pytest.raises(CheckpointError, match=SHARD1):
        load_model(tiny_copy)
    path.unlink()
    with pytest.raises(CheckpointError, match=SHARD1):
        load_model(tiny_copy)


def test_missing_config_or_weights(tmp_path):
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no safetensors"):
        load_model(tmp_path)


def test_full_size_model_on_meta(fixtures_dir):
    cfg = load_config(fixtures_dir / "model" / "full-config.json")
    assert cfg.text.vocab_size == 151676 and cfg.raw["vocab_size"] == 151936  # top-level value unused
    with torch.device("meta"):
        m = UniMoEAudioModel(cfg, vision=True, lm_head=True)
    sd = m.state_dict()
    assert len(sd) == 1846
    assert sum(p.numel() for p in m.parameters()) == 7_159_504_896
    expert = "language_model.layers.35.mlp.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.7"
    shapes = {
        "visual.patch_embed.proj.weight": (1280, 6, 14, 14),
        "visual.blocks.31.attn.qkv.weight": (3840, 1280),
        "visual.blocks.0.mlp.gate_proj.bias": (3420,),
        "visual.merger.ln_q.weight": (1280,),
        "visual.merger.mlp.0.weight": (5120, 5120),
        "visual.merger.mlp.2.weight": (2048, 5120),
        "language_model.embed_tokens.weight": (151676, 2048),
        "language_model.layers.0.self_attn.q_proj.bias": (2048,),
        "language_model.layers.0.self_attn.k_proj.weight": (256, 2048),
        "language_model.layers.0.self_attn.v_proj.bias": (256,),
        "language_model.layers.0.self_attn.o_proj.weight": (2048, 2048),
        "language_model.layers.0.mlp.gate.weight": (11, 2048),
        "language_model.layers.0.mlp.fixed_real_moe.1.down_proj.weight": (2048, 1376),
        f"{expert}.gate_proj.weight": (2752, 2048),
        f"{expert}.down_proj.weight": (2048, 2752),
        "language_model.norm.weight": (2048,),
        "lm_head.weight": (151676, 2048),
        "codec_embed_tokens.11.weight": (1027, 2048),
        "codec_head.weight": (12324, 2048),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    assert "language_model.layers.0.self_attn.o_proj.bias" not in sd
    # no persistent buffers: rotary tables are recomputed, as the checkpoint has none
    assert not list(m.buffers())
    text = sum(p.numel() for n, p in m.named_parameters() if not n.startswith(("visual.", "lm_head")))
    assert text == 7_159_504_896 - 668_684_288 - 310_632_448


def test_config_sizes_match_files(fixtures_dir):
    from unimoe_audio.model.config import config_dict

    assert config_dict("tiny") == json.loads((fixtures_dir / "model" / "config.json").read_text())
    assert config_dict("small") == json.loads((fixtures_dir / "model" / "small-config.json").read_text())
    assert config_dict("full") == json.loads((fixtures_dir / "model" / "full-config.json").read_text())
    full = ModelConfig.from_dict(config_dict("full"))
    assert (full.codec_placeholder_value, full.video_token_id, full.pad_token_id) == (151665, 151656, 151643)
    assert full.text.head_dim == 128 and full.text.num_gate_logits == 11
    with pytest.raises(CheckpointError):
        ModelConfig.from_dict({"text_config": {}})
