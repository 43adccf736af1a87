"""UniMoE-Audio language model: a Qwen2.5-VL-shaped MoE decoder with codec embeddings and head.

Public API (what generation and the engine use)::

    from unimoe_audio.model.checkpoint import load_model   # the loader lives there (checkpoint.py)
    from unimoe_audio.model.decoder import UniMoEAudioModel
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

Decode steps with static shapes (CUDA graphs on CUDA) are :class:`StaticDecoder`'s buckets of
:class:`StaticBatch`, driven by generation through ``decode_rows.StaticRows``: one captured step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from . import invariant
from .buckets import ROW_BUCKETS, length_bucket, row_bucket
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

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The text head (only if built with ``lm_head=True``)."""
        if self.lm_head is None:
            raise RuntimeError("model was built without lm_head")
        return self.lm_head(hidden).float()


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

    def __init__(self, model: "UniMoEAudioModel", rows: int, capacity: int, use_graph: bool, pool=None,
                 arena: KVCache | None = None):
        self.model = model
        # a view of the decoder's KV arena (shared by the buckets), or a cache of its own
        self.shared = arena is not None
        self.cache = KVCache.view_of(arena, rows, capacity) if arena is not None else model.new_cache(rows, capacity)
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
        """Warm up on a side stream (stacks the experts' weights, picks kernels), then capture, on
        the model's own device (a model on cuda:1 must not capture on the current device 0)."""
        dev = self.emb.device
        with torch.cuda.device(dev):
            s = torch.cuda.Stream(device=dev)
            s.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(s):
                for _ in range(2):
                    self._body()
            torch.cuda.current_stream(dev).wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self._pool, stream=torch.cuda.Stream(device=dev)):
                self._body()
        self._captured(g)

    def _captured(self, graph: Any) -> None:
        """Record a capture: the graph, the weights it replays (raw pointers) and the decode mode whose
        kernels it holds; :meth:`run` captures again when either changes."""
        self.graph = graph
        self._weights = _weight_ptrs(self.model)
        self._invariant = invariant.enabled()
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
        """What this bucket keeps: KV cache and mask (unless they are the shared arena's), static
        inputs, the logits its graph writes."""
        ts = [self.emb, self.pos, self.slots, self._rows, self._true, self._arange]
        if not self.shared:
            ts.append(self.cache.valid)
        n = (0 if self.shared else self.cache.nbytes()) + sum(t.numel() * t.element_size() for t in ts)
        return n + (self.out.numel() * self.out.element_size() if self.out is not None else 0)

    def release(self) -> None:
        """Drop the graph and the buffers (the decoder evicted this bucket)."""
        self.graph = None
        self.out = None
        self.cache = None  # type: ignore[assignment]


def _weight_ptrs(model: "UniMoEAudioModel") -> tuple[int, ...]:
    moe = model.language_model.layers[0].mlp
    return (model.codec_head.weight.data_ptr(), moe.experts[0].gate_proj.weight.data_ptr()
            if len(moe.experts) else 0, model.language_model.layers[-1].self_attn.q_proj.weight.data_ptr())


class StaticDecoder:
    """Bucketed static-shape decode steps for generation: a pool of :class:`StaticBatch`, one per
    (row bucket, length bucket), each made (and on CUDA captured as a graph) on first use or at
    :meth:`warmup`, then reused by every later generation of that shape. Graphs share one memory
    pool (only one replays at a time; outputs are cloned).

    The pooled buckets share one KV arena of ``arena_rows`` x ``arena_slots`` (each bucket is a view
    of its first rows and slots, made with the first bucket): only one steps at a time, so a KV cache
    per bucket would hold the same keys many times over (12 warm buckets at full size: 4 GB of KV
    instead of 1.2). Rows keep their place and slots when a session moves to a bucket of another
    shape, so a move copies nothing. A bucket larger than the arena has a cache of its own; so does
    one asked for while another session holds arena buckets (it is not pooled).

    ``budget_bytes`` (None: no limit) caps what the pooled buckets keep together, the arena
    included (memory.py's :func:`~.memory.bucket_extra_bytes` each, :func:`~.memory.arena_bytes`
    once): before a new bucket is made, buckets no session holds are released, least recently used
    first, until it fits. Held buckets are never released; the row cap of the session
    (``max_rows``) is what keeps the held ones within the plan."""

    def __init__(self, model: "UniMoEAudioModel", use_graph: bool | None = None,
                 row_buckets: tuple[int, ...] = ROW_BUCKETS, budget_bytes: int | None = None,
                 arena: tuple[int, int] | None = None):
        from .memory import KV_TOKENS, Dims

        self.model = model
        self.arena_rows, self.arena_slots = arena or (max(row_buckets), length_bucket(KV_TOKENS))
        self._arena: KVCache | None = None
        self.use_graph = model.device.type == "cuda" if use_graph is None else bool(use_graph)
        self.row_buckets = tuple(row_buckets)
        self.budget_bytes = budget_bytes
        self.pool: dict[tuple[int, int], StaticBatch] = {}
        self.evictions = 0  # buckets released under memory pressure (status, tests)
        self._used: dict[tuple[int, int], int] = {}  # key -> tick of its last use (LRU)
        self._tick = 0
        self._dims = Dims.of(model.config)
        self._mempool = None
        if self.use_graph and model.device.type == "cuda":
            with torch.cuda.device(model.device):
                self._mempool = torch.cuda.graph_pool_handle()

    def shape_for(self, rows: int, length: int) -> tuple[int, int]:
        return row_bucket(rows, self.row_buckets), length_bucket(length)

    def set_arena(self, rows: int, slots: int) -> None:
        """Size the shared KV arena (the memory plan's row cap x the longest length bucket); a
        different size releases every bucket first (their views point into the old arena)."""
        if (rows, slots) != (self.arena_rows, self.arena_slots):
            self.release()
            self.arena_rows, self.arena_slots = int(rows), int(slots)

    def fits_arena(self, rows: int, slots: int) -> bool:
        return rows <= self.arena_rows and slots <= self.arena_slots

    def cost(self, rows: int, slots: int) -> int:
        """Bytes a new (rows, slots) bucket adds (the estimate's figures, before it exists): a view
        of the arena adds its extras (and the arena itself when none is made yet)."""
        from .memory import arena_bytes, bucket_bytes, bucket_extra_bytes

        wb = self.model.dtype.itemsize
        if not self.fits_arena(rows, slots):
            return bucket_bytes(self._dims, rows, slots, wb)
        extra = bucket_extra_bytes(self._dims, rows, slots, wb)
        return extra + (0 if self._arena is not None else arena_bytes(self._dims, self.arena_rows, self.arena_slots, wb))

    def arena_nbytes(self) -> int:
        return 0 if self._arena is None else self._arena.nbytes() + self._arena.valid.numel()

    def _arena_holder(self) -> object:
        """The session holding arena buckets now (None: free)."""
        return next((b.owner for b in self.pool.values() if b.shared and b.owner is not None), None)

    def _touch(self, key: tuple[int, int]) -> None:
        self._tick += 1
        self._used[key] = self._tick

    def _make_room(self, need: int, keep: tuple[int, int] | None = None) -> bool:
        """Release idle buckets (least recently used first) until ``need`` more bytes fit the
        budget. False when they do not fit even so (held buckets are never released)."""
        if self.budget_bytes is None:
            return True
        while self.nbytes() + need > self.budget_bytes:
            idle = [k for k, b in self.pool.items() if b.owner is None and k != keep]
            if not idle:
                return False
            self.evict(min(idle, key=lambda k: self._used.get(k, 0)))
        return True

    def evict(self, key: tuple[int, int]) -> None:
        b = self.pool.pop(key)
        self._used.pop(key, None)
        b.release()
        self.evictions += 1

    def _new(self, key: tuple[int, int], pooled: bool = True) -> StaticBatch:
        arena = None
        if pooled and self.fits_arena(*key):
            if self._arena is None:
                self._arena = self.model.new_cache(self.arena_rows, self.arena_slots)
            arena = self._arena
        return StaticBatch(self.model, key[0], key[1], self.use_graph, self._mempool, arena=arena)

    def batch(self, rows: int, length: int, owner: object = None) -> StaticBatch:
        """The pooled batch for at least ``rows`` rows and ``length`` KV slots, held by ``owner``
        until :meth:`give_back` (another owner meanwhile gets a batch of its own, not pooled: also
        when the pooled one is a view of the arena another owner's rows live in)."""
        key = self.shape_for(rows, length)
        b = self.pool.get(key)
        arena_busy = owner is not None and self.fits_arena(*key) and self._arena_holder() not in (None, owner)
        if arena_busy or (owner is not None and b is not None and b.owner not in (None, owner)):
            fresh = self._new(key, pooled=False)
            fresh.owner = owner
            return fresh
        if b is None:
            self._make_room(self.cost(*key))  # over budget even so: made anyway (the step needs it)
            b = self.pool[key] = self._new(key)
        self._touch(key)
        if owner is not None:
            b.owner = owner
        return b

    def give_back(self, batch: StaticBatch | None, owner: object) -> None:
        if batch is not None and batch.owner is owner:
            batch.owner = None

    def warmup(self, shapes: list[tuple[int, int]] | tuple[int, ...],
               rows: tuple[int, ...] | None = None, invariant_steps: bool = True) -> int:
        """Make (and on CUDA capture) these (rows, slots) batches now, in order, so no request pays
        for a capture; a shape that would not fit the budget is skipped (nothing warmed earlier is
        released for it). ``shapes`` may also be KV-slot lengths, crossed with ``rows`` (default:
        every row bucket). Returns how many graphs were captured."""
        if shapes and isinstance(next(iter(shapes)), int):
            shapes = [(r, L) for r in rows or self.row_buckets for L in shapes]  # type: ignore[misc]
        n = 0
        for r, L in shapes:  # type: ignore[misc]
            key = self.shape_for(r, L)
            if key not in self.pool:
                if self.budget_bytes is not None and self.nbytes() + self.cost(*key) > self.budget_bytes:
                    continue
                self.pool[key] = self._new(key)
            self._touch(key)
            b = self.pool[key]
            if b.use_graph and b.graph is None:
                # in the decode mode the caller steps in (batch-invariant by default: model/invariant.py)
                with torch.inference_mode(), invariant.batch_invariant(invariant_steps):
                    b.capture()
                n += 1
        return n

    @property
    def captures(self) -> int:
        return sum(b.captures for b in self.pool.values())

    def nbytes(self) -> int:
        """What the pooled buckets keep now, their arena included (a bucket not yet run counts its
        logits by the formula)."""
        from .memory import bucket_bytes, bucket_extra_bytes

        def formula(b: StaticBatch) -> int:
            f = bucket_extra_bytes if b.shared else bucket_bytes
            return f(self._dims, b.rows, b.capacity, self.model.dtype.itemsize)

        return self.arena_nbytes() + sum(b.nbytes() if b.out is not None else formula(b) for b in self.pool.values())

    def stats(self) -> dict:
        """For status: the buckets held, their bytes, the budget and how many were released."""
        return {"buckets": sorted(self.pool), "bytes": self.nbytes(), "budget_bytes": self.budget_bytes,
                "evictions": self.evictions, "captures": self.captures}

    def release(self) -> None:
        for key in list(self.pool):
            self.evict(key)
        self.evictions = 0
        self._arena = None


__all__ = ["UniMoEAudioModel", "DecoderOutput", "StaticDecoder", "StaticBatch", "positions_from_mask", "KVCache"]
