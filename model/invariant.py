"""Batch-invariant decode steps: an item's numbers do not depend on which other items share its batch.

Why a seeded take changed when another job joined (measured on CPU, tiny and small configs, bf16 and
fp32: bench/bench_invariance.py): every layer's inputs for the item were equal, and these ops still
gave different last bits, because the library picks another kernel or blocking when a shape changes:

* **matmuls whose row count changes** (the qkv/o projections, the router gate, the experts and the
  codec head): a joined job adds rows, and an expert's share of tokens changes with the routing of
  others. The library gives row counts of one *row class* the same kernel and bits, and other counts
  other ones: fp32 {1} | {2..15} | {16} on a 2-core Xeon, bf16 {1} | {2, 3} | {4, 6, .., 16} | each
  odd count from 5 (model/row_classes.py measures them). Within a class a row's bits did not depend
  on its place in the block or on the other rows.
* **attention over a longer key axis**: eager joins right-align rows (padding before a row's keys)
  and static buckets grow; SDPA's result moves with the padded length (bf16 ~1e-3, fp32 ~1e-7).
* RMSNorm, rotary, routing maths, embeddings and the MoE combine are per row and were invariant.

So, inside :func:`batch_invariant` (every decode step of a :class:`~.generation.DecodeSession`):

* :func:`rowwise` runs a row-wise op in calls whose row counts all come from one row class of its
  matmuls (:class:`RowPlan`), measured once per shape, dtype, device and thread count on the real
  kernels (row_classes.py). The class is the one that runs the site's usual row counts (a step:
  2, 4, 8, 16; one expert's tokens: 1-4) in the fewest calls and pad rows: fp32 on the Xeon above
  runs 2..15 rows as one call (so most steps cost what they cost without invariance), 16 rows as
  8 + 8, and 1 row padded to 2. The choice depends on the measured classes only, never on timings,
  so a seed repeats its take after a restart. Kernels that are not measured (quantized linears) run
  fixed blocks (:data:`FIXED_ROWS`).
* :func:`decode_attention` splits each row's keys into chunks of :data:`CHUNK` slots anchored at
  the row's own first key (left for static rows, which start at slot 0; right for eager rows, which
  end at the last slot) and merges the chunks' partial softmaxes with a fixed pairwise tree. A chunk
  that is all padding merges as an exact no-op (weight exp(-inf) = 0, x*1 + 0 = x), so neither the
  padding before nor the capacity after a row changes its bits. No host sync, static shapes: fine
  inside a captured CUDA graph.

Invariance holds for a fixed device, dtype and kernel library; it makes joined = solo exact, not
CPU = GPU. The grouped expert matmul of the CUDA "chosen" MoE path gives each expert as many rows as
the routing of every row sends it; invariant steps use it only where
:func:`~.kernels.grouped_mm_invariant` measured its bits independent of that (else the "all" path).
"""
from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from . import row_classes
from .buckets import ROW_BUCKETS

CHUNK = 64  # key slots per attention chunk (the smallest KV length bucket)
SITES = {"step": ROW_BUCKETS,  # a matmul over all of a step's rows: the row buckets are the usual counts
         "expert": (1, 2, 3, 4)}  # one expert over the tokens routed to it in a step: a few
FIXED_ROWS = {"step": 8, "expert": 2}  # rows per call where the kernel is not measured (quantized linears)
PAD_COST = {"cuda": 1 / 16}  # a pad row, in calls: next to free where a matmul reads its weights anyway
CPU_PAD_COST = 0.5  # elsewhere a pad row costs about half a call (measured on CPU: fp32 and bf16 small-M)

_state = threading.local()
_plans: dict[tuple, "RowPlan"] = {}


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


@dataclass(frozen=True)
class RowPlan:
    """The row counts one op's calls may have in invariant steps: one row class of its kernels."""

    sizes: frozenset[int]

    @classmethod
    def fixed(cls, rows: int) -> "RowPlan":
        return cls(frozenset({rows}))

    def blocks(self, m: int) -> list[tuple[int, int]]:
        """(rows, rows with padding) of each call for ``m`` rows: one call where m is a size of the
        plan; else the fewest near-equal blocks, each padded up to the next size."""
        if m in self.sizes:
            return [(m, m)]
        sizes = sorted(self.sizes)
        k = max(1, -(-m // sizes[-1]))
        while True:
            base, extra = divmod(m, k)
            parts = [base + 1] * extra + [base] * (k - extra)
            ups = [next((s for s in sizes if s >= p), None) for p in parts]
            if None not in ups:
                return list(zip(parts, ups))  # type: ignore[arg-type]
            k += 1

    def cost(self, counts: tuple[int, ...], pad_cost: float) -> float:
        return sum(1 + pad_cost * (up - r) for m in counts for r, up in self.blocks(m))

    @classmethod
    def choose(cls, part: row_classes.Partition, site: str, device_type: str) -> "RowPlan":
        """The class that runs the site's usual row counts in the fewest calls and pad rows; a
        function of the measured classes only (never of timings), so a seed repeats its take after
        a restart on the same machine."""
        pad = PAD_COST.get(device_type, CPU_PAD_COST)
        plans = [cls(c) for c in part]
        return min(plans, key=lambda p: (p.cost(SITES[site], pad), min(p.sizes)))


_FIXED_PLANS = {site: RowPlan.fixed(rows) for site, rows in FIXED_ROWS.items()}


def plan_for(site: str, ops: tuple[row_classes.Op, ...] | None, x: torch.Tensor) -> RowPlan:
    """The :class:`RowPlan` of a block running ``ops`` (its matmuls, row_classes.Op) at ``site`` for x's
    dtype and device; ``ops`` None (a kernel that is not measured): fixed blocks."""
    if ops is None:
        return _FIXED_PLANS[site]
    key = (site, ops, x.dtype, str(x.device), torch.get_num_threads())
    plan = _plans.get(key)
    if plan is None:
        part = row_classes.common([row_classes.classes(op, x.dtype, x.device) for op in ops])
        plan = _plans.setdefault(key, RowPlan.choose(part, site, x.device.type))
    return plan


def plans() -> dict[str, str]:
    """The row plans chosen so far, for reports: {"site ops dtype device": "the row counts a call may have"}."""
    return {f"{k[0]} {list(k[1])} {str(k[2]).replace('torch.', '')} {k[3]}": row_classes.describe(p.sizes)
            for k, p in list(_plans.items())}


def rowwise(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, plan: RowPlan,
            out_row_dim: int = 0) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn`` of x [M, ...]; when batch-invariance is on, in calls whose row
    counts are all of ``plan`` (zero rows pad a block up to its size). ``out_row_dim``: where the rows
    are in fn's output."""
    if not enabled():
        return fn(x)
    outs, start = [], 0
    for r, up in plan.blocks(x.shape[0]):
        block = x[start:start + r]
        start += r
        if up > r:
            block = torch.cat([block, block.new_zeros((up - r,) + tuple(x.shape[1:]))])
            outs.append(fn(block).narrow(out_row_dim, 0, r))
        else:
            outs.append(fn(block))
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=out_row_dim)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear`` over a step's rows x [..., K], batch-invariant when enabled."""
    if not enabled():
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    plan = plan_for("step", _linear_ops(weight, bias, flat), flat)
    return rowwise(lambda c: F.linear(c, weight, bias), flat, plan).reshape(*x.shape[:-1], weight.shape[0])


def _linear_ops(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> tuple[row_classes.Op, ...] | None:
    """A plain linear in x's dtype, as the probe lays it out, is measured as its matmul; else None."""
    if weight.dtype == x.dtype and weight.is_contiguous() and weight.dim() == 2:
        return (("mm", weight.shape[1], weight.shape[0], bias is not None),)
    return None


def _module_ops(mod: torch.nn.Module, x: torch.Tensor) -> tuple[row_classes.Op, ...] | None:
    """An ``nn.Linear`` is measured as its matmul; other kernels (quantized linears, experts) are not."""
    if type(mod) is torch.nn.Linear:
        return _linear_ops(mod.weight, mod.bias, x)
    return None


def module(mod: torch.nn.Module, x: torch.Tensor, site: str = "step") -> torch.Tensor:
    """``mod(x)`` for a row-wise module (a Linear, quantized or not, an expert) over x [..., K]."""
    if not enabled():
        return mod(x)
    flat = x.reshape(-1, x.shape[-1])
    out = rowwise(mod, flat, plan_for(site, _module_ops(mod, flat), flat))
    return out.reshape(*x.shape[:-1], out.shape[-1])


_scratch = threading.local()


def _chunk_of(x: torch.Tensor, anchor: str, which: str) -> torch.Tensor:
    """x [rows, kvh, part, d] (part < CHUNK) as one CHUNK-slot chunk, zeros on the side away from the
    anchor. On the CPU it is written into a buffer kept per shape and thread: a fresh tensor of a MiB
    or more is a new mapping there (allocator.py pins glibc's mmap threshold at 1 MiB), and faulting
    its pages in cost more than the rest of the attention."""
    rows, kvh, part, d = x.shape
    side = (0, 0, 0, CHUNK - part) if anchor == "left" else (0, 0, CHUNK - part, 0)
    if x.device.type != "cpu":
        return F.pad(x, side)
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None:
        bufs = _scratch.bufs = {}
    key = (which, rows, kvh, d, x.dtype, torch.is_inference_mode_enabled())
    buf = bufs.get(key)
    if buf is None:
        buf = bufs[key] = torch.zeros((rows, kvh, CHUNK, d), dtype=x.dtype)
    live, pad = (slice(0, part), slice(part, CHUNK)) if anchor == "left" else (slice(CHUNK - part, CHUNK),
                                                                                 slice(0, CHUNK - part))
    buf[:, :, live].copy_(x)
    buf[:, :, pad].zero_()  # masked, but 0 * a stale NaN would still be NaN
    return buf


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None,
                     scale: float, anchor: str) -> torch.Tensor:
    """One-query attention, invariant to the padding around each row's keys.

    q [rows, kvh, g, d] (the g query heads of each kv head), k/v [rows, kvh, S, d], key_valid
    [rows, S] bool or None (all valid). ``anchor``: "left" when each row's keys start at slot 0
    (static rows), "right" when they end at slot S-1 (eager rows). Returns [rows, kvh, g, d] in q's dtype.

    The whole chunks are views of the cache (no copy of K/V); only the one partial chunk, on the side
    away from the anchor, is padded. Chunks missing up to the merge tree's power of two enter as
    (max -inf, sum 0, out 0): bit for bit what an all-padding chunk gives.
    """
    rows, kvh, S, d = k.shape
    if key_valid is None:
        key_valid = torch.ones((rows, S), dtype=torch.bool, device=k.device)
    full, part = divmod(S, CHUNK)
    qf = q.float().unsqueeze(2)  # [rows, kvh, 1, g, d]

    def stats(kc: torch.Tensor, vc: torch.Tensor, mc: torch.Tensor):
        """kc/vc [rows, kvh, n, CHUNK, d], mc [rows, n, CHUNK] -> each chunk's max, sum, unnormalised out."""
        s = torch.matmul(qf, kc.float().transpose(-1, -2)) * scale  # [rows, kvh, n, g, CHUNK], fixed shapes
        s = s.masked_fill(~mc[:, None, :, None, :], float("-inf"))
        m = s.amax(-1, keepdim=True)
        p = torch.exp(s - torch.nan_to_num(m, neginf=0.0))  # an all-padding chunk: exp(-inf - 0) = 0
        return m, p.sum(-1, keepdim=True), torch.matmul(p, vc.float())

    # slot ranges of the whole chunks and of the partial one, by anchor
    f0, p0 = (0, full * CHUNK) if anchor == "left" else (part, 0)
    groups = []
    if full:
        sl = slice(f0, f0 + full * CHUNK)
        groups.append(stats(k[:, :, sl].unflatten(2, (full, CHUNK)), v[:, :, sl].unflatten(2, (full, CHUNK)),
                            key_valid[:, sl].unflatten(1, (full, CHUNK))))
    if part:
        sl = slice(p0, p0 + part)
        mside = (0, CHUNK - part) if anchor == "left" else (CHUNK - part, 0)
        groups.append(stats(_chunk_of(k[:, :, sl], anchor, "k").unsqueeze(2),
                            _chunk_of(v[:, :, sl], anchor, "v").unsqueeze(2),
                            F.pad(key_valid[:, sl], mside, value=False).unsqueeze(1)))
    m, l, o = (torch.cat(t, dim=2) if len(t) > 1 else t[0] for t in zip(*groups))
    if anchor != "left":  # chunk 0 must be the one holding the row's anchor (its last keys): reorder
        if full:  # the whole chunks run left to right: reverse them; the partial one stays last
            idx = torch.arange(full - 1, -1, -1, device=m.device)
            if part:
                idx = torch.cat([idx, idx.new_tensor([full])])
            m, l, o = m.index_select(2, idx), l.index_select(2, idx), o.index_select(2, idx)
    n = m.shape[2]
    nch = 1 << (n - 1).bit_length()  # a power of two: the merge tree's shape
    if nch > n:  # the chunks past the keys, as all-padding chunks would give them
        extra = nch - n
        m = torch.cat([m, m.new_full(m.shape[:2] + (extra,) + m.shape[3:], float("-inf"))], dim=2)
        l = torch.cat([l, l.new_zeros(l.shape[:2] + (extra,) + l.shape[3:])], dim=2)
        o = torch.cat([o, o.new_zeros(o.shape[:2] + (extra,) + o.shape[3:])], dim=2)
    # merge pairs (0,1), (2,3), ... then again: a fixed tree, so trailing all-padding chunks are no-ops
    while m.shape[2] > 1:
        m1, m2 = m[:, :, 0::2], m[:, :, 1::2]
        mm = torch.maximum(m1, m2)
        mm_safe = torch.nan_to_num(mm, neginf=0.0)
        e1, e2 = torch.exp(m1 - mm_safe), torch.exp(m2 - mm_safe)
        l = l[:, :, 0::2] * e1 + l[:, :, 1::2] * e2
        o = o[:, :, 0::2] * e1 + o[:, :, 1::2] * e2
        m = mm
    out = o[:, :, 0] / l[:, :, 0].clamp_min(torch.finfo(torch.float32).tiny)
    return out.to(q.dtype)
