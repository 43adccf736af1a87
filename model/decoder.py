"""UniMoE-Audio language model: a Qwen2.5-VL-shaped MoE decoder with codec embeddings and head.

Public API (what generation and the engine use)::

    from unimoe_audio.model.decoder import load_model, UniMoEAudioModel
    model = load_model(path, device="cpu", dtype=torch.float32, load_vision=True)   # or UniMoEAudioModel(cfg)
    cfg = model.config                                    # ModelConfig (config.py)

    emb = model.embed(input_ids, codec_frames=None, video_embeds=None)
        # input_ids [rows, L] -> [rows, L, H]. codec_frames [N, 12] fill the codec placeholder
        # positions row-major (row by row, left to right); video_embeds [M, H] fill video_token_id.
    emb = model.embed_codec(frames)                       # [..., 12] codec ids -> [..., H] (sum of 12 tables)
    pos = positions_from_mask(attention_mask)             # rope_index.py: [rows, L] (1-D RoPE, pads = 1)
    pos, deltas = model.rope_index(input_ids, attention_mask, video_grid_thw, second_per_grid_ts)  # [3, rows, L]
    cache = model.new_cache(rows, max_len)                # KVCache (kv_cache.py); cache.keep(rows) drops rows
    out = model(emb, pos, attention_mask=mask, cache=cache, logits="last")
        # pos [rows, L] or [3, rows, L]; attention_mask [rows, L] (1 real, 0 pad) for the NEW tokens,
        # None = all real. With a cache the new tokens are appended to it.
        # out.logits: float32 [rows, L or 1, 12, 1027] ("all" / "last"; "none" skips the head),
        # out.hidden: [rows, L, H] after the final norm, out.routing: per-layer Routing if asked.
    feats = model.visual(pixel_values, grid_thw)          # vision tower -> [sum t*h*w/4, H] (if loaded)

A decode step of CFG rows is ``model(model.embed_codec(frames[:, None]), pos[:, None], cache=cache,
logits="last")`` with ``pos`` = number of real tokens of each row so far.
Always call under ``torch.inference_mode()``.

Faster decode steps on a GPU (same numbers within rounding; see :class:`DecodeRunner`)::

    runner = model.decode_runner(cache)                   # after the prefill; CUDA graph on CUDA
    logits = runner.step(model.embed_codec(frames[:, None]), pos[:, None])   # [rows, 1, C, V] float32
    # like model(..., cache=cache, logits="last").logits; the cache advances the same way.
    # cache.keep(rows) is fine between steps (the runner captures again for the new shape).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from . import invariant
from .config import ModelConfig, TextConfig
from .kv_cache import KVCache
from .layers import Attention, AttnMask, MRotary, RMSNorm, sdpa_context
from .moe import Routing, SparseMoE, moe_path
from .rope_index import positions_from_mask, rope_index


@dataclass
class DecoderOutput:
    hidden: torch.Tensor  # [rows, L, H] after the final norm
    logits: torch.Tensor | None  # float32 [rows, L or 1, C, V]
    routing: list[Routing] | None = None  # one per layer, tokens flattened row-major


class DecoderLayer(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SparseMoE(cfg)

    def forward(self, h, cos, sin, mask: AttnMask, cache, index: int, token_mask, want_routing: bool):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, mask, cache, index)
        r = self.mlp(self.post_attention_layernorm(h), token_mask, return_routing=want_routing)
        if want_routing:
            y, rt = r
            return h + y, rt
        return h + r, None


class TextModel(nn.Module):
    """``language_model``: embed_tokens, layers, norm (checkpoint names)."""

    def __init__(self, cfg: TextConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class UniMoEAudioModel(nn.Module):
    """Module tree and parameter names match the reference's in-memory state_dict (spec 2.2)."""

    def __init__(self, config: ModelConfig, *, vision: bool = True, lm_head: bool = False):
        super().__init__()
        self.config = config
        t = config.text
        if vision:
            from .vision import VisionTower

            self.visual = VisionTower(config.vision)
        else:
            self.visual = None
        self.language_model = TextModel(t)
        # the text head is unused by audio generation; built only on request (it is untied)
        self.lm_head = nn.Linear(t.hidden_size, t.vocab_size, bias=False) if lm_head else None
        self.codec_embed_tokens = nn.ModuleList(nn.Embedding(config.codec_vocab_size, t.hidden_size)
                                                for _ in range(config.codec_channels))
        self.codec_head = nn.Linear(t.hidden_size, config.codec_channels * config.codec_vocab_size, bias=False)
        self.rotary = MRotary(t.head_dim, t.rope_theta, t.mrope_section)

    # -- properties -------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.codec_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.codec_head.weight.dtype

    @property
    def hidden_size(self) -> int:
        return self.config.text.hidden_size

    @property
    def has_vision(self) -> bool:
        return self.visual is not None

    # -- embeddings -------------------------------------------------------------------------------------
    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.embed_tokens(input_ids)

    def embed_codec(self, frames: torch.Tensor) -> torch.Tensor:
        """[..., C] codec ids -> [..., H]: the C per-codebook embeddings summed in order 0..C-1."""
        frames = frames.to(device=self.device, dtype=torch.long)
        out = self.codec_embed_tokens[0](frames[..., 0])
        for c in range(1, self.config.codec_channels):
            out = out + self.codec_embed_tokens[c](frames[..., c])
        return out

    def embed(self, input_ids: torch.Tensor, codec_frames: torch.Tensor | None = None,
              video_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Text embeddings with codec frames / video features scattered into their placeholder
        positions in row-major order (like ``masked_scatter``)."""
        input_ids = input_ids.to(self.device)
        emb = self.embed_tokens(input_ids)
        for ids_value, values, name in ((self.config.codec_placeholder_value, codec_frames, "codec frames"),
                                        (self.config.video_token_id, video_embeds, "video features")):
            if values is None:
                continue
            sel = input_ids == ids_value
            n = int(sel.sum())
            if n != values.shape[0]:
                raise ValueError(f"{n} placeholder tokens for {values.shape[0]} {name}")
            vec = self.embed_codec(values) if name == "codec frames" else values.to(self.device, emb.dtype)
            emb[sel] = vec.to(emb.dtype)
        return emb

    # -- positions --------------------------------------------------------------------------------------
    def rope_index(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   video_grid_thw: torch.Tensor | None = None,
                   second_per_grid_ts: torch.Tensor | None = None,
                   image_grid_thw: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_index(self.config, input_ids, attention_mask, video_grid_thw=video_grid_thw,
                          second_per_grid_ts=second_per_grid_ts, image_grid_thw=image_grid_thw)

    # -- cache ------------------------------------------------------------------------------------------
    def new_cache(self, rows: int, max_len: int, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> KVCache:
        t = self.config.text
        return KVCache(t.num_hidden_layers, rows, t.num_key_value_heads, t.head_dim, max_len,
                       dtype or self.dtype, device or self.device)

    # -- forward ----------------------------------------------------------------------------------------
    def forward(self, embeds: torch.Tensor, position_ids: torch.Tensor,
                attention_mask: torch.Tensor | None = None, cache: KVCache | None = None, *,
                logits: Literal["all", "last", "none"] = "all", output_routing: bool = False,
                mask_padded_routing: bool = True) -> DecoderOutput:
        rows, L, _ = embeds.shape
        h = embeds.to(self.dtype)
        device = h.device
        if position_ids.dim() == 3 and position_ids.shape[0] == 3 and bool(
                (position_ids[0] == position_ids[1]).all() and (position_ids[0] == position_ids[2]).all()):
            position_ids = position_ids[0]  # equal axes: plain 1-D RoPE, cheaper
        cos, sin = self.rotary(position_ids.to(device), h.dtype)

        if cache is not None:
            past = cache.length
            key_valid = cache.begin(L, attention_mask)
        else:
            past = 0
            key_valid = None
            if attention_mask is not None and not bool(attention_mask.all()):
                key_valid = attention_mask.to(device=device, dtype=torch.bool)
        mask = AttnMask.build(key_valid, L, past, device)
        token_mask = None
        if mask_padded_routing and attention_mask is not None and key_valid is not None:
            token_mask = attention_mask.to(device=device, dtype=torch.bool).reshape(-1)

        routing: list[Routing] | None = [] if output_routing else None
        with sdpa_context(device, L):
            for i, layer in enumerate(self.language_model.layers):
                h, rt = layer(h, cos, sin, mask, cache, i, token_mask, output_routing)
                if routing is not None:
                    routing.append(rt)
        if cache is not None:
            cache.commit()
        h = self.language_model.norm(h)
        out_logits = None
        if logits != "none":
            src = h[:, -1:] if logits == "last" else h
            out_logits = invariant.module(self.codec_head, src).float().view(rows, src.shape[1], self.config.codec_channels,
                                                           self.config.codec_vocab_size)
        return DecoderOutput(hidden=h, logits=out_logits, routing=routing)

    def decode_runner(self, cache: KVCache, use_graph: bool | None = None) -> "DecodeRunner":
        """A :class:`DecodeRunner` for decode steps on ``cache`` (CUDA graph by default on CUDA)."""
        return DecodeRunner(self, cache, use_graph)

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The text head (only if built with ``lm_head=True``)."""
        if self.lm_head is None:
            raise RuntimeError("model was built without lm_head")
        return self.lm_head(hidden).float()


class _SlotCache:
    """What a layer sees of the cache in a static decode step: writes go to a device-side slot."""

    def __init__(self, cache: KVCache, slot: torch.Tensor):
        self.cache = cache
        self.slot = slot

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.write_slot(layer, k, v, self.slot)


class DecodeRunner:
    """Decode steps (one new token per row) with static shapes, replayed as one CUDA graph.

    ``step(embeds [rows, 1, H], positions [rows, 1])`` returns what
    ``model(embeds, positions, cache=cache, logits="last").logits`` returns ([rows, 1, C, V] float32)
    and advances ``cache`` the same way. Inside, nothing depends on host values: the inputs, the
    position and the cache slot live in device tensors, attention runs over the cache's whole
    capacity with a mask (valid keys up to the slot), and the MoE blocks take their sync-free
    "fast" path. So on CUDA the step is captured once as a graph and replayed (the host's launch
    overhead for the ~3,900 kernels of a full-size step goes away: 13.8 ms instead of 72 ms eager
    on an H100, see bench/bench_gpu.py); on CPU, or with ``use_graph=False``, the same
    static step runs eagerly.

    The graph is captured again when the cache's tensors change (``cache.keep`` after items finish,
    or growth). A step on a full cache falls back to the ordinary forward, which grows it, so give
    ``new_cache`` the capacity the generation needs. Logits come back as a fresh tensor. Moving or
    replacing the model's weights between steps also leads to a new capture; in-place updates
    need nothing.
    """

    def __init__(self, model: UniMoEAudioModel, cache: KVCache, use_graph: bool | None = None):
        self.model = model
        self.cache = cache
        self.use_graph = cache.k.is_cuda if use_graph is None else bool(use_graph)
        self.captures = 0  # how many graphs were captured (tests, diagnostics)
        self._bound: tuple[torch.Tensor, ...] | None = None
        self._graph = None

    def _bind(self) -> None:
        """Static inputs for the cache's current tensors (and a new graph)."""
        c = self.cache
        dev = c.k.device
        self._graph = None
        self._emb = torch.zeros((c.rows, 1, self.model.hidden_size), dtype=self.model.dtype, device=dev)
        self._pos = torch.zeros((c.rows, 1), dtype=torch.long, device=dev)
        self._slot = torch.zeros(1, dtype=torch.long, device=dev)
        self._arange = torch.arange(c.capacity, device=dev)
        self._bound = (c.k, c.v, c.valid)

    def _weight_ptrs(self) -> tuple[int, ...]:
        # a graph replays raw pointers: moving or replacing the weights (model.to(), a load with
        # assign=True) must lead to a new capture
        moe = self.model.language_model.layers[0].mlp
        return (self.model.codec_head.weight.data_ptr(), moe.experts[0].gate_proj.weight.data_ptr()
                if len(moe.experts) else 0, self.model.language_model.layers[-1].self_attn.q_proj.weight.data_ptr())

    def _body(self) -> None:
        m, c = self.model, self.cache
        h = self._emb
        cos, sin = m.rotary(self._pos, h.dtype)
        c.valid.index_fill_(1, self._slot, True)
        key_valid = c.valid & (self._arange <= self._slot)
        mask = AttnMask(key_valid[:, None, None, :], False)
        sc = _SlotCache(c, self._slot)
        with moe_path(m, "fast"), sdpa_context(h.device, 1):
            for i, layer in enumerate(m.language_model.layers):
                h, _ = layer(h, cos, sin, mask, sc, i, None, False)
        h = m.language_model.norm(h)
        self._out = m.codec_head(h).float().view(c.rows, 1, m.config.codec_channels, m.config.codec_vocab_size)

    def _capture(self) -> None:
        # warm-up on a side stream (stacks the experts' weights, picks kernels), then capture
        s = torch.cuda.Stream(device=self._emb.device)
        s.wait_stream(torch.cuda.current_stream(self._emb.device))
        with torch.cuda.stream(s):
            for _ in range(2):
                self._body()
        torch.cuda.current_stream(self._emb.device).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            self._body()
        self._graph = g
        self._weights = self._weight_ptrs()  # after the warm-up stacked the experts' weights
        self.captures += 1

    def step(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        c = self.cache
        if c.length >= c.capacity:
            out = self.model(embeds, positions, cache=c, logits="last").logits  # grows the cache
            self._bound = None
            return out
        b = self._bound
        if b is None or b[0] is not c.k or b[1] is not c.v or b[2] is not c.valid:
            self._bind()
        elif self._graph is not None and self._weights != self._weight_ptrs():
            self._bind()
        self._emb.copy_(embeds.reshape(self._emb.shape))
        self._pos.copy_(positions.reshape(self._pos.shape))
        self._slot.fill_(c.length)  # the slot is written after the inputs: warm-up writes it too
        if not self.use_graph:
            self._body()
        elif self._graph is None:
            self._capture()  # its warm-up and capture leave this step's result in place
            self._graph.replay()
        else:
            self._graph.replay()
        c.length += 1
        return self._out.clone()


ROW_BUCKETS = (2, 4, 8, 16)  # rows of a static decode batch (a CFG item takes 2)
MIN_LENGTH_BUCKET = 64


def row_bucket(n: int, buckets: tuple[int, ...] = ROW_BUCKETS) -> int:
    """The smallest row bucket holding ``n`` rows (past the largest: its multiples)."""
    for b in buckets:
        if n <= b:
            return b
    top = buckets[-1]
    return -(-n // top) * top


def length_bucket(n: int) -> int:
    """The smallest power of two >= ``n`` (at least MIN_LENGTH_BUCKET): KV slots of a static batch."""
    b = MIN_LENGTH_BUCKET
    while b < n:
        b *= 2
    return b


class _RowSlotCache:
    """What a layer sees of the cache in a bucketed static step: each row writes at its own slot."""

    def __init__(self, cache: KVCache, rows: torch.Tensor, slots: torch.Tensor):
        self.cache, self.rows, self.slots = cache, rows, slots

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cache.write_rows(layer, k, v, self.rows, self.slots)


class StaticBatch:
    """One (rows, capacity) bucket of :class:`StaticDecoder`: its preallocated KV cache, the static
    inputs of a decode step, and (on CUDA) the step captured as a graph.

    Rows are independent: row ``r`` feeds ``emb[r]`` at position ``pos[r]``, writes its key at
    ``slots[r]`` and attends to its valid slots ``<= slots[r]``. So rows may sit at different lengths
    (items joined at different steps) and a free row costs a little compute but changes nothing
    (it attends to its own slot only; its logits are ignored). ``cache.length`` is not used.
    """

    def __init__(self, model: "UniMoEAudioModel", rows: int, capacity: int, use_graph: bool, pool=None):
        self.model = model
        self.cache = model.new_cache(rows, capacity)
        dev = self.cache.k.device
        self.emb = torch.zeros((rows, 1, model.hidden_size), dtype=model.dtype, device=dev)
        self.pos = torch.zeros((rows, 1), dtype=torch.long, device=dev)
        self.slots = torch.zeros(rows, dtype=torch.long, device=dev)
        self._rows = torch.arange(rows, device=dev)
        self._true = torch.ones(rows, dtype=torch.bool, device=dev)
        self._arange = torch.arange(self.cache.capacity, device=dev)
        self.use_graph = use_graph
        self.graph = None
        self.captures = 0
        self._pool = pool
        self._weights: tuple[int, ...] = ()
        self.out: torch.Tensor | None = None
        self.owner: object = None  # the session whose rows live here (StaticDecoder.batch)

    @property
    def rows(self) -> int:
        return self.cache.rows

    @property
    def capacity(self) -> int:
        return self.cache.capacity

    def _body(self) -> None:
        m, c = self.model, self.cache
        h = self.emb
        cos, sin = m.rotary(self.pos, h.dtype)
        # a device tensor of True, not a Python bool: nothing may come from the host while capturing
        c.valid.index_put_((self._rows, self.slots), self._true)
        key_valid = c.valid & (self._arange[None, :] <= self.slots[:, None])
        mask = AttnMask(key_valid[:, None, None, :], False, anchor="left")  # rows start at slot 0
        sc = _RowSlotCache(c, self._rows, self.slots)
        with moe_path(m, "fast"), sdpa_context(h.device, 1):
            for i, layer in enumerate(m.language_model.layers):
                h, _ = layer(h, cos, sin, mask, sc, i, None, False)
        h = m.language_model.norm(h)
        self.out = invariant.module(m.codec_head, h[:, 0]).float().view(c.rows, m.config.codec_channels, m.config.codec_vocab_size)

    def capture(self) -> None:
        """Warm up on a side stream (stacks the experts' weights, picks kernels), then capture."""
        dev = self.emb.device
        s = torch.cuda.Stream(device=dev)
        s.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(s):
            for _ in range(2):
                self._body()
        torch.cuda.current_stream(dev).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self._pool):
            self._body()
        self.graph = g
        self._weights = _weight_ptrs(self.model)
        self._invariant = invariant.enabled()  # the graph holds the kernels of the mode it was captured in
        self.captures += 1

    def run(self) -> torch.Tensor:
        """One step on the static inputs as they are; returns a fresh [rows, C, V] float32 tensor."""
        if not self.use_graph:
            self._body()
        else:
            if self.graph is not None and (self._weights != _weight_ptrs(self.model)
                                           or getattr(self, "_invariant", None) != invariant.enabled()):
                self.graph = None  # weights moved (a graph replays raw pointers), or the other decode mode
            if self.graph is None:
                self.capture()  # its warm-up and capture leave this step's result in place
            self.graph.replay()
        return self.out.clone()

    def step(self, embeds: torch.Tensor, positions: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """embeds [rows, 1, H], positions [rows] or [rows, 1], slots [rows] -> logits [rows, C, V]."""
        self.emb.copy_(embeds.reshape(self.emb.shape))
        self.pos.copy_(positions.reshape(self.pos.shape))
        self.slots.copy_(slots.reshape(self.slots.shape))
        return self.run()

    def nbytes(self) -> int:
        return self.cache.nbytes()


def _weight_ptrs(model: "UniMoEAudioModel") -> tuple[int, ...]:
    moe = model.language_model.layers[0].mlp
    return (model.codec_head.weight.data_ptr(), moe.experts[0].gate_proj.weight.data_ptr()
            if len(moe.experts) else 0, model.language_model.layers[-1].self_attn.q_proj.weight.data_ptr())


class StaticDecoder:
    """Bucketed static-shape decode steps for generation: a pool of :class:`StaticBatch`, one per
    (row bucket, length bucket), each made (and on CUDA captured as a graph) on first use or at
    :meth:`warmup`, then reused by every later generation of that shape. Graphs share one memory
    pool (only one replays at a time; outputs are cloned)."""

    def __init__(self, model: "UniMoEAudioModel", use_graph: bool | None = None,
                 row_buckets: tuple[int, ...] = ROW_BUCKETS):
        self.model = model
        self.use_graph = model.device.type == "cuda" if use_graph is None else bool(use_graph)
        self.row_buckets = tuple(row_buckets)
        self.pool: dict[tuple[int, int], StaticBatch] = {}
        self._mempool = torch.cuda.graph_pool_handle() if self.use_graph else None

    def shape_for(self, rows: int, length: int) -> tuple[int, int]:
        return row_bucket(rows, self.row_buckets), length_bucket(length)

    def batch(self, rows: int, length: int, owner: object = None) -> StaticBatch:
        """The pooled batch for at least ``rows`` rows and ``length`` KV slots, held by ``owner``
        until :meth:`give_back` (another owner meanwhile gets a batch of its own, not pooled)."""
        key = self.shape_for(rows, length)
        b = self.pool.get(key)
        if b is None:
            b = self.pool[key] = StaticBatch(self.model, key[0], key[1], self.use_graph, self._mempool)
        if owner is not None:
            if b.owner is not None and b.owner is not owner:
                b = StaticBatch(self.model, key[0], key[1], self.use_graph, self._mempool)
            b.owner = owner
        return b

    def give_back(self, batch: StaticBatch | None, owner: object) -> None:
        if batch is not None and batch.owner is owner:
            batch.owner = None

    def warmup(self, lengths: tuple[int, ...], rows: tuple[int, ...] | None = None) -> int:
        """Make (and on CUDA capture) the batches for these row buckets x length buckets now, so no
        request pays for a capture. Returns how many graphs were captured."""
        n = 0
        for r in rows or self.row_buckets:
            for L in lengths:
                b = self.batch(r, L)
                if b.use_graph and b.graph is None:
                    # batch-invariant, as DecodeSession steps by default (model/invariant.py)
                    with torch.inference_mode(), invariant.batch_invariant():
                        b.capture()
                    n += 1
        return n

    @property
    def captures(self) -> int:
        return sum(b.captures for b in self.pool.values())

    def nbytes(self) -> int:
        return sum(b.nbytes() for b in self.pool.values())

    def release(self) -> None:
        self.pool.clear()


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
               load_vision: bool = True, load_lm_head: bool = False) -> UniMoEAudioModel:
    """Load a checkpoint folder or a single ``.safetensors`` file (see checkpoint.py)."""
    from .checkpoint import load_model as _load

    return _load(path, device=device, dtype=dtype, load_vision=load_vision, load_lm_head=load_lm_head)


__all__ = ["UniMoEAudioModel", "DecoderOutput", "DecodeRunner", "StaticDecoder", "StaticBatch", "load_model", "positions_from_mask", "KVCache"]
