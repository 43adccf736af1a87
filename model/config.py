"""Model configuration: parse the published ``config.json`` into typed dataclasses (spec section 1).

The modules are built from ``text_config`` and ``vision_config`` only. The top-level copies of hidden
size, vocabulary and so on are ignored on purpose: the published top-level ``vocab_size`` (151,936)
is not the text vocabulary actually used (151,676, from ``text_config``). Top-level keys that *are*
used are the codec settings and the special token ids.

``config_dict(size)`` writes configs of the same architecture and layout: ``"tiny"`` (the golden
fixture's: hidden 64, 2 layers), ``"small"`` (the CPU benchmark's: hidden 512, 8 layers) and
``"full"`` (the published UniMoE-Audio values).
"""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CheckpointError


@dataclass(frozen=True)
class TextConfig:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: tuple[int, ...]
    vocab_size: int
    hidden_act: str
    num_routed_experts: int  # mlp_dynamic_expert_num: real routed experts
    num_null_experts: int  # mlp_dynamic_null_expert_num: routing slots with no module
    num_shared_experts: int  # mlp_fixed_expert_num
    dynamic_intermediate_size: int
    shared_intermediate_size: int
    top_p: float
    top_k: float
    router_jitter_noise: float  # the mixer's relative band is 2 * this, also at inference
    tie_word_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_dynamic_slots(self) -> int:
        """Routed + null slots: the columns Top-P routes over."""
        return self.num_routed_experts + self.num_null_experts

    @property
    def num_gate_logits(self) -> int:
        return self.num_dynamic_slots + self.num_shared_experts


@dataclass(frozen=True)
class VisionConfig:
    depth: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    patch_size: int
    temporal_patch_size: int
    spatial_merge_size: int
    window_size: int
    fullatt_block_indexes: tuple[int, ...]
    out_hidden_size: int
    tokens_per_second: float
    in_channels: int
    hidden_act: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size


@dataclass(frozen=True)
class ModelConfig:
    text: TextConfig
    vision: VisionConfig
    codec_channels: int
    codec_vocab_size: int
    codec_delay_pattern: tuple[int, ...]
    codec_eos_value: int
    codec_pad_value: int
    codec_bos_value: int
    codec_placeholder_value: int
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    vision_end_token_id: int
    vision_token_id: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int  # the text pad id used for left padding (= <|endoftext|> = bos in Qwen2.5)
    torch_dtype: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def hidden_size(self) -> int:
        return self.text.hidden_size

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "ModelConfig":
        try:
            return _parse(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: bad or missing config value ({exc!r})", field="config") from exc

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.raw)


def _parse(d: dict[str, Any]) -> ModelConfig:
    t = d["text_config"]
    v = d["vision_config"]
    rope = t.get("rope_scaling") or {}
    text = TextConfig(
        hidden_size=int(t["hidden_size"]),
        num_hidden_layers=int(t["num_hidden_layers"]),
        num_attention_heads=int(t["num_attention_heads"]),
        num_key_value_heads=int(t["num_key_value_heads"]),
        rms_norm_eps=float(t.get("rms_norm_eps", 1e-6)),
        rope_theta=float(t.get("rope_theta", 1e6)),
        mrope_section=tuple(int(x) for x in rope["mrope_section"]),
        vocab_size=int(t["vocab_size"]),
        hidden_act=str(t.get("hidden_act", "silu")),
        num_routed_experts=int(t["mlp_dynamic_expert_num"]),
        num_null_experts=int(t.get("mlp_dynamic_null_expert_num", 0)),
        num_shared_experts=int(t.get("mlp_fixed_expert_num", 0)),
        dynamic_intermediate_size=int(t["dynamic_intermediate_size"]),
        shared_intermediate_size=int(t["shared_intermediate_size"]),
        top_p=float(t.get("mlp_dynamic_top_p", 0.0)),
        top_k=float(t.get("mlp_dynamic_top_k", 0.0)),
        router_jitter_noise=float(t.get("router_jitter_noise", 0.0)),
        # the Qwen2.5-VL text default is False; the top-level flag is ignored by the reference (spec 2.4)
        tie_word_embeddings=bool(t.get("tie_word_embeddings", False)),
    )
    if text.hidden_size % text.num_attention_heads or text.num_attention_heads % text.num_key_value_heads:
        raise ValueError("hidden_size / heads / kv heads do not divide")
    if 2 * sum(text.mrope_section) != text.head_dim:
        raise ValueError(f"mrope_section {text.mrope_section} does not cover head_dim {text.head_dim}")
    if text.top_p <= 0.0:
        raise ValueError("only Top-P routing (mlp_dynamic_top_p > 0) is supported")
    vis = VisionConfig(
        depth=int(v["depth"]),
        hidden_size=int(v["hidden_size"]),
        num_heads=int(v["num_heads"]),
        intermediate_size=int(v["intermediate_size"]),
        patch_size=int(v.get("patch_size", 14)),
        temporal_patch_size=int(v.get("temporal_patch_size", 2)),
        spatial_merge_size=int(v.get("spatial_merge_size", 2)),
        window_size=int(v.get("window_size", 112)),
        fullatt_block_indexes=tuple(int(x) for x in v.get("fullatt_block_indexes", ())),
        out_hidden_size=int(v["out_hidden_size"]),
        tokens_per_second=float(v.get("tokens_per_second", 2)),
        in_channels=int(v.get("in_channels", v.get("in_chans", 3))),
        hidden_act=str(v.get("hidden_act", "silu")),
    )
    delays = tuple(int(x) for x in d["codec_delay_pattern"])
    if len(delays) != int(d["codec_channels"]):
        raise ValueError("codec_delay_pattern length differs from codec_channels")
    bos = d.get("bos_token_id")
    return ModelConfig(
        text=text,
        vision=vis,
        codec_channels=int(d["codec_channels"]),
        codec_vocab_size=int(d["codec_vocab_size"]),
        codec_delay_pattern=delays,
        codec_eos_value=int(d["codec_eos_value"]),
        codec_pad_value=int(d["codec_pad_value"]),
        codec_bos_value=int(d["codec_bos_value"]),
        codec_placeholder_value=int(d["codec_placeholder_value"]),
        image_token_id=int(d["image_token_id"]),
        video_token_id=int(d["video_token_id"]),
        vision_start_token_id=int(d["vision_start_token_id"]),
        vision_end_token_id=int(d["vision_end_token_id"]),
        vision_token_id=int(d["vision_token_id"]),
        bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if d.get("eos_token_id") is None else int(d["eos_token_id"]),
        pad_token_id=int(d.get("pad_token_id") if d.get("pad_token_id") is not None else bos),
        torch_dtype=str(d.get("torch_dtype", "bfloat16")),
        raw=copy.deepcopy(d),
    )


def load_config(path: str | Path) -> ModelConfig:
    """Read ``config.json`` (a file, or a folder that holds one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "config.json"
    try:
        d = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise CheckpointError(f"no config.json at {p}", field="config") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: unreadable config ({exc})", field="config") from exc
    return ModelConfig.from_dict(d, source=str(p))


# --- configs of the same architecture ---------------------------------------------------------------

# Per size: (text/top-level overrides, vision overrides, special-token block start).
# The Qwen2.5 special block 151643..151675 is shifted to 479..511 for the 512-token test vocabularies.
_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden=64, layers=2, heads=4, kv=2, inter=128, mrope=[2, 3, 3], dyn=32, shared=16, experts=4,
                 vocab=512, top_vocab=512, special0=479,
                 vision=dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=48, fullatt_block_indexes=[1])),
    "small": dict(hidden=512, layers=8, heads=4, kv=2, inter=1376, mrope=[16, 24, 24], dyn=688, shared=344,
                  experts=8, vocab=512, top_vocab=512, special0=479,
                  vision=dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=48, fullatt_block_indexes=[1])),
    "full": dict(hidden=2048, layers=36, heads=16, kv=2, inter=11008, mrope=[16, 24, 24], dyn=2752, shared=1376,
                 experts=8, vocab=151676, top_vocab=151936, special0=151643,
                 vision=dict(depth=32, hidden_size=1280, num_heads=16, intermediate_size=3420,
                             fullatt_block_indexes=[7, 15, 23, 31])),
}

# Offsets of the ids inside the special block (Qwen2.5 layout + the 11 audio tokens).
_OFF = dict(bos=0, eos=2, vision_start=9, vision_end=10, vision_token=11, image=12, video=13, placeholder=22)


def config_dict(size: str = "tiny") -> dict[str, Any]:
    """A complete config.json dict (published key layout) for ``size`` in tiny / small / full."""
    if size not in _SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(_SIZES)}")
    s = _SIZES[size]
    sp = s["special0"]
    rope = {"mrope_section": list(s["mrope"]), "rope_type": "default", "type": "default"}
    ids = {k: sp + o for k, o in _OFF.items()}
    text = {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"], "attention_dropout": 0.0,
        "avg_hidden_states_last": False, "bos_token_id": ids["bos"], "capacity_factor": 6.0, "drop_policy": "probs",
        "drop_token_num_print": True, "dynamic_intermediate_size": s["dyn"],
        "enable_expert_tensor_parallelism": False, "eos_token_id": ids["eos"], "ep_size": 1, "fixed_ep_size": 1,
        "fp32_gate": True, "hidden_act": "silu", "hidden_size": s["hidden"], "ignore_differentiable_router": True,
        "image_token_id": None, "initializer_range": 0.02, "input_jitter_noise": 0.01,
        "intermediate_size": s["inter"], "l_aux_weight": 0.025, "l_aux_weight_decay_steps": 10000,
        "layer_types": ["full_attention"] * s["layers"], "max_position_embeddings": 128000,
        "max_window_layers": 70, "min_capacity": 8, "min_l_aux_weight": 0.001,
        "mlp_dynamic_expert_num": s["experts"], "mlp_dynamic_null_expert_num": 1, "mlp_dynamic_top_k": 0.0,
        "mlp_dynamic_top_p": 0.7, "mlp_fixed_expert_num": 2, "model_type": "qwen2_5_vl_moe_text",
        "num_attention_heads": s["heads"], "num_hidden_layers": s["layers"], "num_key_value_heads": s["kv"],
        "rms_norm_eps": 1e-06, "rope_scaling": copy.deepcopy(rope), "rope_theta": 1000000.0,
        "router_jitter_noise": 0.01, "shared_intermediate_size": s["shared"], "sliding_window": None,
        "token_drop": False, "torch_dtype": "bfloat16", "use_cache": True, "use_sliding_window": False,
        "video_token_id": None, "vision_end_token_id": ids["vision_end"],
        "vision_start_token_id": ids["vision_start"], "vision_token_id": ids["vision_token"],
        "vocab_size": s["vocab"],
    }
    vision = {
        "depth": 0, "fullatt_block_indexes": [], "hidden_act": "silu", "hidden_size": 0, "in_channels": 3,
        "in_chans": 3, "initializer_range": 0.02, "intermediate_size": 0, "model_type": "qwen2_5_vl",
        "num_heads": 0, "out_hidden_size": s["hidden"], "patch_size": 14, "spatial_merge_size": 2,
        "spatial_patch_size": 14, "temporal_patch_size": 2, "tokens_per_second": 2, "torch_dtype": "bfloat16",
        "window_size": 112,
    }
    vision.update(copy.deepcopy(s["vision"]))
    return {
        "architectures": ["UniAudioRVQQwen2_5VLMoEForConditionalGeneration"], "attention_dropout": 0.0,
        "bos_token_id": ids["bos"], "codec_bos_value": 1026, "codec_channels": 12,
        "codec_delay_pattern": [0, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18], "codec_eos_value": 1024,
        "codec_pad_value": 1025, "codec_placeholder_value": ids["placeholder"], "codec_vocab_size": 1027,
        "drop_token_num_print": True, "eos_token_id": ids["eos"], "ep_size": 1, "hidden_act": "silu",
        "hidden_size": s["hidden"], "image_token_id": ids["image"], "initializer_range": 0.02,
        "intermediate_size": s["inter"], "max_position_embeddings": 128000, "max_window_layers": 70,
        "model_type": "uni_audio_rvq_qwen2_5vl_moe", "num_attention_heads": s["heads"],
        "num_hidden_layers": s["layers"], "num_key_value_heads": s["kv"], "rms_norm_eps": 1e-06,
        "rope_scaling": copy.deepcopy(rope), "rope_theta": 1000000.0, "sliding_window": 32768,
        "text_config": text, "token_drop": False, "torch_dtype": "bfloat16", "transformers_version": "4.53.1",
        "use_cache": True, "use_sliding_window": False, "video_token_id": ids["video"], "vision_config": vision,
        "vision_end_token_id": ids["vision_end"], "vision_start_token_id": ids["vision_start"],
        "vision_token_id": ids["vision_token"], "vocab_size": s["top_vocab"],
    }


def tiny_config() -> ModelConfig:
    return ModelConfig.from_dict(config_dict("tiny"), source="tiny")


def small_config() -> ModelConfig:
    return ModelConfig.from_dict(config_dict("small"), source="small")


def full_config() -> ModelConfig:
    return ModelConfig.from_dict(config_dict("full"), source="full")
