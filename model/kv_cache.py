"""A preallocated KV cache for step-by-step decoding of CFG row pairs.

One tensor per K and V for all layers, ``[layers, rows, kv_heads, capacity, head_dim]``, plus a
``valid`` key mask ``[rows, capacity]`` (False at left padding). All rows advance together: a forward
writes its L new keys at slots ``length .. length+L`` of every row. Positions are passed explicitly
to the model, so the slot index of a key has no meaning beyond order; that is what lets
:meth:`KVCache.keep` drop rows and then cut the columns that are padding in every remaining row.
"""
from __future__ import annotations

from typing import Sequence

import torch


class KVCache:
    def __init__(self, num_layers: int, rows: int, kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (num_layers, rows, kv_heads, max(int(capacity), 1), head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.valid = torch.zeros((rows, shape[3]), dtype=torch.bool, device=device)
        self.length = 0  # slots in use (the same for every row)
        self.has_padding = False  # any invalid slot among the used ones

    @classmethod
    def view_of(cls, arena: "KVCache", rows: int, capacity: int) -> "KVCache":
        """The first ``rows`` x ``capacity`` of ``arena`` as a cache of that shape, sharing its memory
        (the static decoder's buckets: one KV arena for all of them, since one steps at a time).
        The row and slot strides are the arena's, so a row keeps its keys when a session moves to a
        bucket of another shape."""
        if rows > arena.rows or capacity > arena.capacity:
            raise ValueError(f"a {rows} x {capacity} view does not fit a {arena.rows} x {arena.capacity} arena")
        out = cls.__new__(cls)
        out.k = arena.k[:, :rows, :, :capacity]
        out.v = arena.v[:, :rows, :, :capacity]
        out.valid = arena.valid[:rows, :capacity]
        out.length = 0
        out.has_padding = False
        return out

    def shares_memory_with(self, other: "KVCache") -> bool:
        return self.k.untyped_storage().data_ptr() == other.k.untyped_storage().data_ptr()

    # -- shape ------------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return self.k.shape[1]

    @property
    def capacity(self) -> int:
        return self.k.shape[3]

    def _grow(self, need: int) -> None:
        new = max(need, 2 * self.capacity)
        pad = new - self.capacity
        self.k = torch.nn.functional.pad(self.k, (0, 0, 0, pad))
        self.v = torch.nn.functional.pad(self.v, (0, 0, 0, pad))
        self.valid = torch.nn.functional.pad(self.valid, (0, pad), value=False)

    # -- used by the model's forward ----------------------------------------------------------------
    def begin(self, q_len: int, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        """Reserve ``q_len`` slots and record which new keys are real. Returns the key-valid mask
        [rows, length + q_len], or None when no used slot is padding."""
        end = self.length + q_len
        if end > self.capacity:
            self._grow(end)
        if attention_mask is None:
            self.valid[:, self.length:end] = True
        else:
            m = attention_mask.to(device=self.valid.device, dtype=torch.bool)
            self.valid[:, self.length:end] = m
            if not self.has_padding and not bool(m.all()):
                self.has_padding = True
        self._pending = q_len
        return self.valid[:, :end] if self.has_padding else None

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store post-RoPE k, v [rows, kv_heads, L, d] of ``layer``; return all keys/values so far."""
        end = self.length + k.shape[2]
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def write_rows(self, layer: int, k: torch.Tensor, v: torch.Tensor, rows: torch.Tensor,
                   slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Static-shape write with one slot per row (continuous batching: rows joined at different
        moments sit at different lengths). k, v [rows, kv_heads, 1, d]; ``rows`` = arange(rows) and
        ``slots`` [rows] long tensors on the cache's device. Returns the whole capacity (the caller
        masks slots past each row's own)."""
        self.k[layer][rows, :, slots] = k[:, :, 0]
        self.v[layer][rows, :, slots] = v[:, :, 0]
        return self.k[layer], self.v[layer]

    def commit(self) -> None:
        self.length += self._pending
        self._pending = 0

    # -- used by generation -------------------------------------------------------------------------
    def keep(self, rows: torch.Tensor | Sequence[int]) -> "KVCache":
        """Keep only ``rows`` (in that order), e.g. drop finished CFG pairs. Columns that are padding
        in every kept row are cut from the left. Returns self."""
        idx = torch.as_tensor(rows, dtype=torch.long, device=self.k.device)
        self.k = self.k.index_select(1, idx)
        self.v = self.v.index_select(1, idx)
        self.valid = self.valid.index_select(0, idx)
        if self.length and self.rows:
            used = self.valid[:, :self.length]
            any_valid = used.any(0)
            first = int(any_valid.int().argmax()) if bool(any_valid.any()) else 0
            if first:
                self.k = self.k[:, :, :, first:].contiguous()
                self.v = self.v[:, :, :, first:].contiguous()
                self.valid = self.valid[:, first:].contiguous()
                self.length -= first
            self.has_padding = not bool(self.valid[:, :self.length].all())
        return self

    @staticmethod
    def concat(caches: Sequence["KVCache"], capacity: int = 0) -> "KVCache":
        """The rows of several caches in one (eager joins of items at a step boundary). Each cache's
        used slots are right-aligned to the longest one's; the slots before are padding (invalid).
        Positions are explicit, so shifting a row's keys to later slots changes nothing but their
        order's offset. ``capacity``: at least this many slots (the room the steps still need)."""
        length = max(c.length for c in caches)
        a = caches[0]
        out = KVCache(a.k.shape[0], sum(c.rows for c in caches), a.k.shape[2], a.k.shape[4],
                      max(capacity, length + 1), a.k.dtype, a.k.device)
        r = 0
        for c in caches:
            n, off = c.rows, length - c.length
            out.k[:, r:r + n, :, off:length] = c.k[:, :, :, :c.length]
            out.v[:, r:r + n, :, off:length] = c.v[:, :, :, :c.length]
            out.valid[r:r + n, off:length] = c.valid[:, :c.length]
            r += n
        out.length = length
        out.has_padding = not bool(out.valid[:, :length].all())
        return out

    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2
