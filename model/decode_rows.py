"""Where the decode rows of a generation live between steps: the KV cache and its row bookkeeping.

A :class:`~.generation.DecodeSession` adds rows (after their prefill), steps all its rows at once
and removes rows when their item is done. Two stores implement that:

* :class:`StaticRows` (the default on CUDA): the rows sit in a :class:`~.decoder.StaticBatch` of
  the model's :class:`~.decoder.StaticDecoder`, a preallocated cache of a fixed number of rows
  (2, 4, 8, 16) and KV slots (a power of two), whose step is a CUDA graph captured once per shape.
  Each row writes at its own slot, so rows that joined later (shorter) share the batch. A finished
  row is only masked (freed for the next join); the batch moves to another bucket (rows copied)
  only when the rows or slots needed no longer fit, or when the live rows fit a smaller bucket.
* :class:`EagerRows`: the ordinary forward on a packed :class:`~.kv_cache.KVCache` whose rows
  advance together: a join right-aligns the new rows' prefill to the others (padding before),
  a finished row is dropped at once (``keep``). No fixed shapes; the fallback, and the CPU default.

Row ids are stable handles; the physical row of an id may change when the store compacts or moves.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

from .kv_cache import KVCache


class RowStore(Protocol):
    def add(self, cache: KVCache, need: int) -> list[int]:
        """Take the rows of a prefilled cache; ``need``: decode steps they may still run. Returns ids."""

    def remove(self, ids: Sequence[int]) -> None: ...

    def step(self, ids: Sequence[int], embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """One decode step. ``ids`` = every live row, any order; embeds [n, 1, H], positions [n] (in
        ``ids`` order). Returns float32 logits [n, C, V] in ``ids`` order."""


class EagerRows:
    def __init__(self, lm: Any):
        self.lm = lm
        self.cache: KVCache | None = None
        self.order: list[int] = []  # ids in physical row order
        self.left: dict[int, int] = {}  # id -> steps it may still run
        self._next = 0

    def add(self, cache: KVCache, need: int) -> list[int]:
        ids = list(range(self._next, self._next + cache.rows))
        self._next += cache.rows
        if self.cache is None:
            if cache.capacity < cache.length + need + 1:
                cache._grow(cache.length + need + 1)
            self.cache = cache
        else:
            room = max([need] + [self.left[i] for i in self.order])
            length = max(self.cache.length, cache.length)
            self.cache = self.lm.join_caches([self.cache, cache], length + room + 1)
        self.order += ids
        for i in ids:
            self.left[i] = need
        return ids

    def close(self) -> None:
        self.cache = None
        self.order.clear()
        self.left.clear()

    def remove(self, ids: Sequence[int]) -> None:
        gone = set(ids)
        keep = [k for k, i in enumerate(self.order) if i not in gone]
        for i in gone:
            self.left.pop(i, None)
        self.order = [self.order[k] for k in keep]
        if not self.order:
            self.cache = None
        elif len(keep) != self.cache.rows:
            self.cache = self.lm.keep_rows(self.cache, torch.tensor(keep, dtype=torch.long, device=self.lm.device))

    def step(self, ids: Sequence[int], embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        where = {i: k for k, i in enumerate(ids)}
        if len(where) != len(self.order) or any(i not in where for i in self.order):
            raise ValueError("an eager step runs every live row")
        perm = torch.tensor([where[i] for i in self.order], dtype=torch.long, device=embeds.device)
        emb = embeds.index_select(0, perm)
        pos = positions.to(perm.device).index_select(0, perm).view(1, -1, 1).expand(3, -1, 1).contiguous()
        logits = self.lm.step(self.cache, emb, pos).float()
        for i in self.order:
            self.left[i] -= 1
        back = torch.empty_like(perm)
        back[perm] = torch.arange(perm.numel(), device=perm.device)
        return logits.index_select(0, back.to(logits.device))


class StaticRows:
    def __init__(self, lm: Any, decoder: Any = None):
        self.lm = lm
        self.dec = decoder if decoder is not None else lm.static_decoder()
        self.batch: Any = None  # StaticBatch
        self.phys: dict[int, int] = {}  # id -> row of the batch
        self.slot: dict[int, int] = {}  # id -> slot its next key goes to (= its length)
        self.end: dict[int, int] = {}  # id -> slots it may need in all
        self.moves = 0  # how often the rows moved to another bucket (tests, diagnostics)
        self._next = 0

    def _shape(self, extra_rows: int = 0, extra_end: int = 0) -> tuple[int, int]:
        n = len(self.phys) + extra_rows
        end = max([extra_end] + list(self.end.values()))
        return self.dec.shape_for(n, end)

    def _move(self, shape: tuple[int, int]) -> None:
        """Bring the live rows into the pooled batch of ``shape`` (rows 0..n-1, same slots)."""
        new = self.dec.batch(*shape, owner=self)
        old = self.batch
        ids = sorted(self.phys, key=self.phys.get)
        src = [self.phys[i] for i in ids]
        n = len(ids)
        span = min(old.capacity, new.capacity, max(self.slot[i] for i in ids)) if old is not None and ids else 0
        nc = new.cache
        if old is not None and n and old.cache.shares_memory_with(nc):
            # both are views of the decoder's arena: a row's keys are already in place; rows that
            # must close up move down one at a time in ascending order (a source is never a row
            # already written), which needs no copy of the whole live set
            oc = old.cache  # a source row may lie past the new view's rows
            for k, r in enumerate(src):
                if r != k:
                    nc.k[:, k, :, :span] = oc.k[:, r, :, :span]
                    nc.v[:, k, :, :span] = oc.v[:, r, :, :span]
                    nc.valid[k, :span] = oc.valid[r, :span]
            nc.valid[n:] = False
            nc.valid[:n, span:] = False
        else:
            nc.valid.zero_()
            if old is not None and n:
                idx = torch.tensor(src, dtype=torch.long, device=nc.k.device)
                nc.k[:, :n, :, :span] = old.cache.k[:, idx, :, :span]
                nc.v[:, :n, :, :span] = old.cache.v[:, idx, :, :span]
                nc.valid[:n, :span] = old.cache.valid[idx, :span]
        self.phys = {i: k for k, i in enumerate(ids)}
        self.dec.give_back(old, self)
        self.batch = new
        self.moves += 1

    def add(self, cache: KVCache, need: int) -> list[int]:
        n, L = cache.rows, cache.length
        shape = self._shape(n, L + need + 1)
        if self.batch is None or shape != (self.batch.rows, self.batch.capacity):
            if self.batch is None or shape[0] > self.batch.rows or shape[1] > self.batch.capacity:
                self._move(shape)
        ids = list(range(self._next, self._next + n))
        self._next += n
        used = set(self.phys.values())
        free = [r for r in range(self.batch.rows) if r not in used][:n]
        c = self.batch.cache
        dst = torch.tensor(free, dtype=torch.long, device=c.k.device)
        c.k[:, dst, :, :L] = cache.k[:, :, :, :L]
        c.v[:, dst, :, :L] = cache.v[:, :, :, :L]
        c.valid[dst] = False
        c.valid[dst, :L] = cache.valid[:, :L]
        for i, r in zip(ids, free):
            self.phys[i] = r
            self.slot[i] = L
            self.end[i] = L + need + 1
        return ids

    def remove(self, ids: Sequence[int]) -> None:
        rows = [self.phys.pop(i) for i in ids if i in self.phys]
        for i in ids:
            self.slot.pop(i, None)
            self.end.pop(i, None)
        if not self.phys:
            self.dec.give_back(self.batch, self)  # stays in the decoder's pool for the next generation
            self.batch = None
            return
        if rows:
            # masked, not compacted: the row is free for the next join
            self.batch.cache.valid[torch.tensor(rows, dtype=torch.long, device=self.batch.cache.k.device)] = False
        shape = self._shape()
        if shape[0] < self.batch.rows:
            self._move(shape)  # the live rows fit a smaller bucket: cheaper steps

    def close(self) -> None:
        """Give the batch back (a session that stops early: errors, all its items cancelled)."""
        self.dec.give_back(self.batch, self)
        self.batch = None
        self.phys.clear()
        self.slot.clear()
        self.end.clear()

    def step(self, ids: Sequence[int], embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        b = self.batch
        dev = b.emb.device
        phys = torch.tensor([self.phys[i] for i in ids], dtype=torch.long, device=dev)
        emb = torch.zeros_like(b.emb)
        emb[phys] = embeds.to(device=dev, dtype=emb.dtype)
        pos = torch.zeros(b.rows, dtype=torch.long, device=dev)
        pos[phys] = positions.to(dev)
        slots = torch.zeros(b.rows, dtype=torch.long, device=dev)
        slots[phys] = torch.tensor([self.slot[i] for i in ids], dtype=torch.long, device=dev)
        out = b.step(emb, pos, slots)
        for i in ids:
            self.slot[i] += 1
        return out.index_select(0, phys)
