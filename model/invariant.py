"""Batch-invariant decode steps: an item's numbers do not depend on which other items share its batch.

Why a seeded take changed when another job joined (measured on CPU, tiny and small configs, bf16 and
fp32: bench/bench_invariance.py): every layer's inputs for the item were equal, and these ops still
gave different last bits, because the library picks another kernel or blocking when a shape changes:

* **matmuls whose row count changes** (the qkv/o projections, the router gate, the experts and the
  codec head): a joined job adds rows, and an expert's share of tokens changes with the routing of
  others. E.g. bf16 [M, 512] x [512, 12324] gives row 0 different bits for M >= 4 than for M = 2;
  in fp32 M = 1 (gemv) differs from M >= 2 and M >= 16 from M < 16. At a fixed M a row's result
  did not depend on its position or on the other rows (measured for every layer shape).
* **attention over a longer key axis**: eager joins right-align rows (padding before a row's keys)
  and static buckets grow; SDPA's result moves with the padded length (bf16 ~1e-3, fp32 ~1e-7).
* RMSNorm, rotary, routing maths, embeddings and the MoE combine are per row and were invariant.

So, inside :func:`batch_invariant` (every decode step of a :class:`~.generation.DecodeSession`):

* :func:`rowwise` runs a row-wise op on fixed blocks of :data:`ROWS` rows (zero rows pad the last
  block): every row always goes through the same kernel shape. Cost: compute on pad rows (a step with
  fewer rows than ``ROWS``) and one more weight read per extra block.
* :func:`decode_attention` splits each row's keys into chunks of :data:`CHUNK` slots anchored at
  the row's own first key (left for static rows, which start at slot 0; right for eager rows, which
  end at the last slot) and merges the chunks' partial softmaxes with a fixed pairwise tree. A chunk
  that is all padding merges as an exact no-op (weight exp(-inf) = 0, x*1 + 0 = x), so neither the
  padding before nor the capacity after a row changes its bits. No host sync, static shapes: fine
  inside a captured CUDA graph.

Invariance holds for a fixed device, dtype and kernel library; it makes joined = solo exact, not
CPU = GPU. The grouped expert matmul of the CUDA "chosen" MoE path is outside it (its per-expert
row counts follow the routing of every row).
"""
from __future__ import annotations

import contextlib
import math
import threading
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

ROWS = 8  # rows per matmul call (4 CFG items); a step's rows are padded to a multiple of it
CHUNK = 64  # key slots per attention chunk (the smallest KV length bucket)

_state = threading.local()


def enabled() -> bool:
    return getattr(_state, "on", False)


@contextlib.contextmanager
def batch_invariant(on: bool = True) -> Iterator[None]:
    """Run the forward passes inside with batch-invariant matmuls and decode attention."""
    prev = enabled()
    _state.on = on
    try:
        yield
    finally:
        _state.on = prev


def rowwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows: int = ROWS,
            out_row_dim: int = 0) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn`` of x [M, ...], computed on blocks of exactly ``rows`` rows when
    batch-invariance is on (else one call). ``out_row_dim``: where the rows are in fn's output."""
    if not enabled():
        return fn(x)
    m = x.shape[0]
    pad = (-m) % rows
    if pad:
        x = torch.cat([x, x.new_zeros((pad,) + tuple(x.shape[1:]))], dim=0)
    outs = [fn(x[i:i + rows]) for i in range(0, m + pad, rows)]
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=out_row_dim)
    return out.narrow(out_row_dim, 0, m) if pad else out


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` over x [..., K], batch-invariant when enabled."""
    if not enabled():
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    return rowwise(lambda c: F.linear(c, weight, bias), flat).reshape(*x.shape[:-1], weight.shape[0])


def module(mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``mod(x)`` for a row-wise module (a Linear, quantized or not) over x [..., K]."""
    if not enabled():
        return mod(x)
    flat = x.reshape(-1, x.shape[-1])
    out = rowwise(mod, flat)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None,
                     scale: float, anchor: str) -> torch.Tensor:
    """One-query attention, invariant to the padding around each row's keys.

    q [rows, kvh, g, d] (the g query heads of each kv head), k/v [rows, kvh, S, d], key_valid
    [rows, S] bool or None (all valid). ``anchor``: "left" when each row's keys start at slot 0
    (static rows), "right" when they end at slot S-1 (eager rows). Returns [rows, kvh, g, d] in q's dtype.
    """
    rows, kvh, S, d = k.shape
    if key_valid is None:
        key_valid = torch.ones((rows, S), dtype=torch.bool, device=k.device)
    n = max(1, math.ceil(S / CHUNK))
    nch = 1 << (n - 1).bit_length()  # a power of two: the merge tree's shape
    pad = nch * CHUNK - S
    if pad:
        # padding on the side away from the anchor: whole padding chunks merge as exact no-ops
        side = (0, 0, 0, pad) if anchor == "left" else (0, 0, pad, 0)
        k = F.pad(k, side)
        v = F.pad(v, side)
        key_valid = F.pad(key_valid, (0, pad) if anchor == "left" else (pad, 0), value=False)
    kc = k.reshape(rows, kvh, nch, CHUNK, d)
    vc = v.reshape(rows, kvh, nch, CHUNK, d)
    mc = key_valid.reshape(rows, 1, nch, 1, CHUNK)
    # per chunk: scores [rows, kvh, nch, g, CHUNK] in fp32, fixed-shape batched matmuls
    s = torch.matmul(q.unsqueeze(2).float(), kc.float().transpose(-1, -2)) * scale
    s = s.masked_fill(~mc, float("-inf"))
    m = s.amax(-1, keepdim=True)  # [rows, kvh, nch, g, 1]
    m_safe = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m_safe)
    l = p.sum(-1, keepdim=True)
    o = torch.matmul(p, vc.float())  # [rows, kvh, nch, g, d]
    if anchor != "left":  # chunk 0 must be the one holding the row's anchor (its last keys): reorder
        m, l, o = m.flip(2), l.flip(2), o.flip(2)  # the small per-chunk results, not the keys
    # merge pairs (0,1), (2,3), ... then again: a fixed tree, so trailing all-padding chunks are no-ops
    while m.shape[2] > 1:
        m1, m2 = m[:, :, 0::2], m[:, :, 1::2]
        mm = torch.maximum(m1, m2)
        mm_safe = torch.where(torch.isinf(mm), torch.zeros_like(mm), mm)
        e1, e2 = torch.exp(m1 - mm_safe), torch.exp(m2 - mm_safe)
        l = l[:, :, 0::2] * e1 + l[:, :, 1::2] * e2
        o = o[:, :, 0::2] * e1 + o[:, :, 1::2] * e2
        m = mm
    out = o[:, :, 0] / l[:, :, 0].clamp_min(torch.finfo(torch.float32).tiny)
    return out.to(q.dtype)
