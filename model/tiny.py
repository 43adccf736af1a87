"""Write a complete random UniMoE-Audio checkpoint folder in the published layout (tests, CI, benches).

    make_tiny_checkpoint(path, size="tiny", seed=0) -> Path

The folder holds ``config.json``, two bf16 safetensors shards plus ``model.safetensors.index.json``
(on-disk ``model.`` key naming, as ``save_pretrained`` writes it) and tokenizer files
(``vocab.json``, ``merges.txt``, ``tokenizer_config.json``, ``added_tokens.json``,
``special_tokens_map.json``): a byte-level BPE trained deterministically on a few sentences with 479
ordinary tokens, then the 33 Qwen2.5 + audio special tokens at ids 479..511, like the golden fixture.
Sizes: ``"tiny"`` (hidden 64, 2 layers), ``"small"`` (the CPU benchmark's, hidden 512, 8 layers) and
``"full"`` (the published 7.16 B shape, about 14.3 GB of bf16 in 4 GiB shards). tiny and small are
initialised in memory; full is streamed to disk tensor by tensor from a seeded pool of noise (see
:func:`write_full_weights`), so writing it needs ~100 MB of memory, not the model's 14 GB, and runs
at disk speed. Its tokenizer keeps the trained 479 tokens and fills ids 479..151642 with unreachable
placeholders, so the 33 special tokens sit at the published ids 151643..151675.
The same seed gives byte-identical files. The weights are random: the model produces noise.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import BinaryIO

import torch

from .config import ModelConfig, config_dict
from .decoder import UniMoEAudioModel

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
    "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
    "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
    "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
    "<|AUDIO_PLACEHOLDER|>", "<|AUDIO_START|>", "<|AUDIO_END|>", "<|SPEECH_START|>", "<|SPEECH_END|>",
    "<|VOICE_PROMPT_START|>", "<|VOICE_PROMPT_END|>", "<|SPEECH_PROMPT_START|>", "<|SPEECH_PROMPT_END|>",
    "<|MUSIC_START|>", "<|MUSIC_END|>",
)
N_ORDINARY = 479  # 256 byte tokens + 223 merges; specials follow at 479..511

_CORPUS = [
    "You are a helpful assistant.",
    "A calm piano melody with soft strings and a slow, gentle rhythm.",
    "Upbeat electronic dance track with heavy bass, bright synths and claps.",
    "Hello world, this is a short test sentence read by a friendly voice.",
    "This is the reference voice speaking slowly and clearly in a quiet room.",
    "Music for a video of waves on a beach at sunset, with guitars and drums.",
    "Low quality. Rain on a tin roof; thunder rolls in the distance.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "An orchestra plays a dramatic theme: violins, cellos, horns and timpani.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Jazz trio with upright bass, brushed drums and a warm electric piano solo.",
    "Numbers 0 1 2 3 4 5 6 7 8 9, 2024, 100 and 3.14 appear in the text too!",
    "user assistant system speech music audio video prompt start end placeholder",
]

# per size: (router gate std, norm jitter); other weights std 0.02, biases std 0.02
_INIT = {"tiny": (0.15, 0.1), "small": (0.08, 0.0), "full": (0.08, 0.0)}
SIZES = tuple(_INIT)
FULL_SHARD_BYTES = 4 << 30  # the published layout: a few multi-GB shards + index
_NORM_SUFFIXES = ("norm.weight", "layernorm.weight", "ln_q.weight", "norm1.weight", "norm2.weight")


def init_rule(name: str, std: float, gate_std: float, norm_jitter: float) -> tuple[float, float]:
    """(mean, std) of one parameter's random init: norms ``1 + norm_jitter*N``, router gates
    ``gate_std*N``, everything else ``std*N`` (one rule for in-memory and streamed weights)."""
    if name.endswith(_NORM_SUFFIXES):
        return 1.0, norm_jitter
    if name.endswith("mlp.gate.weight"):
        return 0.0, gate_std
    return 0.0, std


def init_random_weights(model: torch.nn.Module, seed: int = 0, std: float = 0.02, gate_std: float = 0.08,
                        norm_jitter: float = 0.0, round_bf16: bool = True) -> None:
    """Deterministic random init in ``named_parameters()`` order with one generator: norms
    ``1 + norm_jitter*N``, router gates ``gate_std*N``, everything else ``std*N``; optionally rounded
    to bf16 values so fp32 and bf16 copies hold the same numbers."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float32)
            mean, sd = init_rule(name, std, gate_std, norm_jitter)
            val = mean + sd * noise if mean else sd * noise
            if round_bf16:
                val = val.to(torch.bfloat16).float()
            p.copy_(val.to(p.dtype))


def random_model(size: str | ModelConfig = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32,
                 vision: bool = True, lm_head: bool = True, gate_std: float | None = None,
                 norm_jitter: float | None = None) -> UniMoEAudioModel:
    """An in-memory random model (no files)."""
    cfg = size if isinstance(size, ModelConfig) else ModelConfig.from_dict(config_dict(size), source=size)
    key = size if isinstance(size, str) else "small"
    gs, nj = _INIT.get(key, _INIT["small"])
    model = UniMoEAudioModel(cfg, vision=vision, lm_head=lm_head)
    init_random_weights(model, seed, gate_std=gs if gate_std is None else gate_std,
                        norm_jitter=nj if norm_jitter is None else norm_jitter)
    return model.to(dtype).eval()


def _train_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import models, pre_tokenizers, trainers

    from .tokenizer import build_bpe

    tk = build_bpe({}, [])
    tk.model = models.BPE()
    trainer = trainers.BpeTrainer(vocab_size=N_ORDINARY, min_frequency=0, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tk.train_from_iterator(_CORPUS * 3, trainer=trainer)
    model = json.loads(tk.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if len(vocab) != N_ORDINARY:
        raise RuntimeError(f"tiny BPE training gave {len(vocab)} tokens, wanted {N_ORDINARY}")
    return vocab, merges


def write_tokenizer(folder: Path, special0: int = N_ORDINARY) -> None:
    """The tokenizer files; ``special0`` is the first special token's id (ids between the trained tokens
    and it are placeholders no merge can produce, so text never encodes to them)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = _train_bpe()
    full = dict(sorted(vocab.items(), key=lambda kv: kv[1]))
    for i in range(N_ORDINARY, special0):
        full[f"<|unused_{i}|>"] = i
    for i, t in enumerate(SPECIAL_TOKENS):
        full[t] = special0 + i
    (folder / "vocab.json").write_text(json.dumps(full, ensure_ascii=False, indent=1), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    decoder = {str(special0 + i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                     "single_word": False, "special": True} for i, t in enumerate(SPECIAL_TOKENS)}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "added_tokens_decoder": decoder, "additional_special_tokens": list(SPECIAL_TOKENS[1:]), "bos_token": None,
        "clean_up_tokenization_spaces": False, "eos_token": "<|endoftext|>", "errors": "replace",
        "model_max_length": 131072, "pad_token": "<|endoftext|>", "padding_side": "left",
        "split_special_tokens": False, "tokenizer_class": "Qwen2Tokenizer", "unk_token": None,
    }, indent=1))
    (folder / "added_tokens.json").write_text(json.dumps({t: special0 + i for i, t in enumerate(SPECIAL_TOKENS)},
                                                         indent=1))
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "additional_special_tokens": list(SPECIAL_TOKENS[1:]), "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>"}, indent=1))


def write_weights(model: torch.nn.Module, folder: Path, shards: int = 2, dtype: torch.dtype = torch.bfloat16) -> None:
    """Shards + index with the on-disk (``model.``) names."""
    from safetensors.torch import save_file

    from .keys import to_disk_key

    items = [(to_disk_key(n), p.detach().to(dtype).contiguous()) for n, p in model.state_dict().items()]
    total = sum(t.numel() * t.element_size() for _, t in items)
    groups: list[list[tuple[str, torch.Tensor]]] = [[] for _ in range(shards)]
    acc = 0
    for name, t in items:
        groups[min(shards - 1, acc * shards // max(total, 1))].append((name, t))
        acc += t.numel() * t.element_size()
    weight_map = {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file(dict(group), str(folder / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n, _ in group})
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))


class _NoisePool:
    """Seeded N(0, 1) noise, scaled per (mean, std) and stored as doubled bf16 bytes, so any window of
    up to ``size`` values is one contiguous slice: a tensor of any size is written as slices taken at
    seeded offsets, without ever being built in memory."""

    def __init__(self, seed: int, size: int = (1 << 24) + 1021):
        g = torch.Generator().manual_seed(seed)
        self.size = size
        self._noise = torch.randn(size, generator=g, dtype=torch.float32)
        self._bytes: dict[tuple[float, float], memoryview] = {}
        self._rng = random.Random(seed)

    def _pool(self, mean: float, std: float) -> memoryview:
        key = (mean, std)
        if key not in self._bytes:
            vals = (mean + std * self._noise).to(torch.bfloat16)
            doubled = torch.cat([vals, vals]).view(torch.uint8)
            self._bytes[key] = memoryview(doubled.numpy()).cast("B")
        return self._bytes[key]

    def write(self, fh: BinaryIO, numel: int, mean: float, std: float) -> None:
        pool = self._pool(mean, std)
        left = numel
        while left:
            n = min(left, self.size)
            off = self._rng.randrange(self.size)
            fh.write(pool[2 * off: 2 * (off + n)])
            left -= n


def _shard_groups(specs: list[tuple[str, tuple[int, ...]]], shard_bytes: int, width: int
                  ) -> list[list[tuple[str, tuple[int, ...]]]]:
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in specs:
        nbytes = width * _numel(shape)
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nbytes
    return groups


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def write_full_weights(cfg: ModelConfig, folder: Path, seed: int = 0, shard_bytes: int = FULL_SHARD_BYTES,
                       size: str = "full", progress=None) -> int:
    """Random bf16 weights of ``cfg`` as safetensors shards + index, streamed tensor by tensor (the model
    is built on the meta device for its names and shapes only). Returns the bytes written."""
    from .keys import to_disk_key
    from .safetensors_stream import write_safetensors

    gate_std, norm_jitter = _INIT.get(size, _INIT["small"])
    with torch.device("meta"):
        model = UniMoEAudioModel(cfg, vision=True, lm_head=True)
    specs = sorted((to_disk_key(n), tuple(p.shape)) for n, p in model.state_dict().items())
    rules = {to_disk_key(n): init_rule(n, 0.02, gate_std, norm_jitter) for n in model.state_dict()}
    del model
    pool = _NoisePool(seed)
    groups = _shard_groups(specs, shard_bytes, 2)
    weight_map: dict[str, str] = {}
    total = 0
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"

        def fill(name: str, fh: BinaryIO, shape: tuple[int, ...]) -> None:
            pool.write(fh, _numel(shape), *rules[name])

        total += write_safetensors(folder / fname, [(n, "BF16", s) for n, s in group], fill,
                                   metadata={"format": "pt"})
        weight_map.update({n: fname for n, _ in group})
        if progress is not None:
            progress(i + 1, len(groups), fname)
    index = {"metadata": {"total_size": sum(2 * _numel(s) for _, s in specs)}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
    return total


def make_tiny_checkpoint(path: str | Path, size: str = "tiny", seed: int = 0, progress=None) -> Path:
    """Write the checkpoint folder of ``size`` (config, weights, tokenizer; no DAC: tiny_bundle adds it)."""
    if size not in _INIT:
        raise ValueError(f"unknown size {size!r}; expected one of {sorted(_INIT)}")
    folder = Path(path).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    cfg_dict = config_dict(size)
    (folder / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    if size == "full":
        write_full_weights(ModelConfig.from_dict(cfg_dict, source=size), folder, seed, progress=progress)
    else:
        write_weights(random_model(size, seed), folder)
    write_tokenizer(folder, special0=int(cfg_dict["bos_token_id"]))
    return folder
