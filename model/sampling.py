"""One decode step's sampling for every item at once, on the logits' device (spec 6.3 steps 3-6).

``sample_step`` takes the step's float32 logits ``[rows, C, V]`` and one :class:`ItemParams` row per
item (which rows are its uncond/cond pair, its settings, its seed and step) and returns one code per
codebook per item, plus a per-item flag for bad logits. Everything is batched tensor maths: no
Python loop over items, no per-item host round trip and no ``torch.Generator`` (CUDA refuses a CPU
generator for CUDA logits, and a generator per item means a kernel launch per item).

Randomness is counter-based: the noise for (item, step, codebook, token) is a hash of the item's
64-bit seed, its own step counter and the cell, computed with integer ops on the logits' device
(:func:`uniform`). So an item's draws depend only on its seed and how far it has got, never on which
other items share the batch or in which row it sits, and a graph could hold this step (no host
value is read). A draw is the Gumbel-max trick on the top-k/top-p filtered logits, which picks
token i with probability softmax(x)_i, as ``torch.multinomial`` does, but from our own noise.

Semantics kept from the reference (same order of operations, float32): CFG ``cond + s*(cond -
uncond)``; EOS allowed on codebook 0 only once ``min_frames`` exist, its *logit* times
``eos_factor``; temperature; EOS only when it is the argmax; top-k; top-p with the crossing token
kept; greedy = argmax of the masked logits (bit-identical to :func:`~.generation.sample_codes`, so
greedy runs still reproduce the reference's codes). A sampled draw matches the reference's
distribution but not its random stream: a seed gives the same take again on the same device and
dtype (the logits themselves differ between devices and dtypes in their last bits).

The reference-exact sampler (one CPU ``torch.Generator`` per item, ``torch.multinomial``, as the
original code) stays in :func:`~.generation.sample_codes` for parity checks (``sampler="reference"``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .errors import BadLogits  # noqa: F401 - raised by the session for a flagged item
from .prompts import CODEC_EOS

_M32 = 0xFFFFFFFF
# Multipliers below 2**31, so a 32-bit value times one stays below 2**63 in int64 (no overflow on any
# device). 0x45d9f3b is the constant of the well-known "hash32" integer mixer; the second is odd and
# unrelated, used to separate the key streams.
_MUL = 0x45D9F3B
_MUL2 = 0x2C1B3C6D


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer on int64 tensors holding values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * _MUL) & _M32
    x = x ^ (x >> 16)
    x = (x * _MUL) & _M32
    return x ^ (x >> 16)


def item_keys(seed_lo: torch.Tensor, seed_hi: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 32-bit keys per item from its seed halves and step counter (int64 tensors [N])."""
    a = _mix(seed_lo ^ _mix(step & _M32))
    b = _mix(seed_hi ^ _mix((a * _MUL2 + 1) & _M32))
    return a, b


def uniform(cells: torch.Tensor, key_a: torch.Tensor, key_b: torch.Tensor) -> torch.Tensor:
    """Uniform floats in (0, 1) for integer ``cells`` [N, ...] (codebook * V + token) under per-item keys [N]."""
    shape = (-1,) + (1,) * (cells.dim() - 1)
    h = _mix(_mix(cells ^ key_a.view(shape)) ^ key_b.view(shape))
    h = _mix((h * _MUL2 + key_a.view(shape)) & _M32)
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


@dataclass
class ItemParams:
    """One item of a step, as plain values (the session builds these)."""

    cond_row: int
    uncond_row: int  # == cond_row when the item runs without CFG
    cfg_scale: float
    enable_eos: bool
    eos_factor: float
    temperature: float
    top_k: int
    top_p: float
    greedy: bool
    seed: int
    step: int  # how many steps this item has sampled before this one


@dataclass
class StepOut:
    codes: torch.Tensor  # [N, C] long, on the host
    bad: torch.Tensor  # [N] bool, on the host: the item's logits could not be sampled


def _pack(items: Sequence[ItemParams], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Two small tensors (ints, floats) for the whole step: two host-to-device copies, not per item."""
    ints = torch.tensor([[it.cond_row, it.uncond_row, int(it.enable_eos), max(1, int(it.top_k)), int(it.greedy),
                          int(it.seed) & _M32, (int(it.seed) >> 32) & _M32, int(it.step)] for it in items],
                        dtype=torch.long)
    flts = torch.tensor([[it.cfg_scale if it.uncond_row != it.cond_row else 0.0, it.eos_factor,
                          1.0 if it.greedy else it.temperature, it.top_p] for it in items], dtype=torch.float32)
    return ints.to(device), flts.to(device)


def sample_step(logits: torch.Tensor, items: Sequence[ItemParams], eos: int = CODEC_EOS) -> StepOut:
    """Guide, mask and sample every item of a step (see the module docstring). ``logits``: float32
    [rows, C, V] on any device. One device-to-host copy for the whole step."""
    ints, flts = _pack(items, logits.device)
    codes, bad = sample_tensors(logits, ints, flts, eos, kmax=min(max(max(1, it.top_k) for it in items),
                                                                   logits.shape[-1]))
    out = torch.cat([codes, bad.unsqueeze(1).long()], dim=1).cpu()  # the step's one sync
    return StepOut(codes=out[:, :-1], bad=out[:, -1].bool())


def sample_tensors(logits: torch.Tensor, ints: torch.Tensor, flts: torch.Tensor, eos: int,
                   kmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The device part of :func:`sample_step`: no host value is read (``kmax`` is a shape)."""
    cond, uncond, enable, top_k, greedy = (ints[:, i] for i in range(5))
    seed_lo, seed_hi, step = ints[:, 5], ints[:, 6], ints[:, 7]
    cfg, eos_factor, temp, top_p = (flts[:, i].view(-1, 1, 1) for i in range(4))
    lc = logits.index_select(0, cond)
    lu = logits.index_select(0, uncond)
    finite = torch.isfinite(lc).flatten(1).all(1) & torch.isfinite(lu).flatten(1).all(1)
    # CFG (guide): cond + s*(cond - uncond); items without CFG keep cond exactly
    ell = torch.where(cfg != 0, lc + cfg * (lc - lu), lc)
    N, C, V = ell.shape
    neg = torch.tensor(float("-inf"), dtype=ell.dtype, device=ell.device)
    tok = torch.arange(V, device=ell.device)
    cb = torch.arange(C, device=ell.device).view(1, C, 1)
    en = enable.bool().view(-1, 1, 1)
    # mask_logits, batched: with EOS allowed only codebook 0 may emit it (logit x eos_factor)
    dead = torch.where(en, (tok > eos) | ((cb > 0) & (tok == eos)), tok >= eos)
    ell = torch.where(dead, neg, ell)
    ell = torch.where(en & (cb == 0) & (tok == eos), ell * eos_factor, ell)
    best = ell.argmax(-1)  # greedy (and the argmax test of D7, temperature > 0 keeps the order)
    # sampled: temperature, EOS only when it is the argmax, top-k, top-p, one draw
    x = ell / temp
    x = torch.where((tok == eos) & (best != eos).unsqueeze(-1), neg, x)
    sv, si = torch.topk(x, kmax, dim=-1)  # sorted, descending
    rank = torch.arange(kmax, device=x.device)
    sv = torch.where(rank < top_k.view(-1, 1, 1), sv, neg)
    probs = torch.softmax(sv, dim=-1)
    over = torch.cumsum(probs, dim=-1) > top_p
    drop = torch.cat([torch.zeros_like(over[..., :1]), over[..., :-1]], dim=-1) & (top_p < 1.0)
    sv = torch.where(drop, neg, sv)
    key_a, key_b = item_keys(seed_lo, seed_hi, step)
    u = uniform(cb * V + si, key_a, key_b)
    pick = torch.argmax(sv - torch.log(-torch.log(u)), dim=-1, keepdim=True)
    drawn = si.gather(-1, pick).squeeze(-1)
    codes = torch.where(greedy.bool().view(-1, 1), best, drawn)
    bad = ~finite | ((codes < 0) | (codes > eos)).any(1)
    return codes, bad
