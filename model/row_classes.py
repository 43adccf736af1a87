"""Which row counts a matmul kernel treats alike: measured, per shape, on the device it runs on.

A library picks its kernel (and so the order in which it sums each output) by the shapes it is given:
one 2-core Xeon with torch's CPU build gives fp32 linears the classes {1} | {2..15} | {16} (gemv,
small-M, packed) and bf16 ones {1} | {2, 3} | {4, 6, .., 16} | each odd count from 5 alone. Two row
counts in one class give every row the same bits, wherever it sits in the block; counts in different
classes may not. Batch-invariant decode (model/invariant.py) only ever calls a matmul with row counts
from one class of that matmul, so the classes must be right on every machine: they are measured here,
never assumed.

Measuring needs inputs whose result shows the summation order. Random data does not in bf16: the fp32
sums of two orders differ in their last bits and almost always round to the same bf16 value. So the
probe builds its own weights of the real shape, dtype and layout (the kernel is chosen by those, not
by values): every output's terms cancel in pairs at random places (x_i w_i = -x_j w_j exactly,
powers of two apart), over a wide range of magnitudes. The exact result is 0; what fp32 leaves is a
residue that depends on the order of the additions and survives rounding to bf16. Each row count m
runs rows 0..m-1 and rows 1..m (another place in the block, another alignment), and m joins a class
when both give the class's bits.
"""
from __future__ import annotations

import threading
from typing import Callable

import torch
import torch.nn.functional as F

from .buckets import ROW_BUCKETS

PROBE_ROWS = max(ROW_BUCKETS)  # row counts measured: up to the largest decode step (8 CFG items)
ADVERSARIAL_COLUMNS = 256  # outputs given the cancelling structure (the others are 0: same kernel)

Op = tuple  # ("mm", K, N, bias) for F.linear; ("bmm", E, K, N, expanded) for the stacked experts' batched
# matmul (``expanded``: the same rows for every expert, a stride-0 view, as the first of the two takes them)
Partition = tuple[frozenset[int], ...]

_cache: dict[tuple, Partition] = {}
_lock = threading.Lock()


def cancelling(rows: int, k: int, n: int, dtype: torch.dtype, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [rows, k] and w [n, k] (fp32 holding values exact in ``dtype``) with every x_r . w_c == 0 exactly
    for the adversarial columns, whose fp32 sums leave an order-dependent residue."""
    g = torch.Generator().manual_seed(seed)
    # exponents: wide, so the fp32 partial sums cannot all be exact (fp16: within its range)
    ex, ea = (4, 4) if dtype == torch.float16 else (8, 10)
    x0 = torch.exp2(torch.randint(-ex, ex + 1, (k,), generator=g).float()) * (torch.randint(0, 2, (k,), generator=g) * 2 - 1)
    half = k // 2
    cols = min(n, ADVERSARIAL_COLUMNS)
    w = torch.zeros(n, k)
    if half:
        perm = torch.rand(cols, k, generator=g).argsort(1)
        i, j = perm[:, :half], perm[:, half:2 * half]
        a = (torch.rand(cols, half, generator=g) + 0.5) * torch.exp2(torch.randint(-ea, ea + 1, (cols, half), generator=g).float())
        a = a.to(dtype).float()  # exact in dtype; times a power of two stays exact
        wa = torch.zeros(cols, k)
        wa.scatter_(1, i, a)
        wa.scatter_(1, j, -a * x0[i] / x0[j])
        w[torch.linspace(0, n - 1, cols).round().long()] = wa
    scale = torch.exp2(torch.randint(-2, 3, (rows, 1), generator=g).float()) * (torch.randint(0, 2, (rows, 1), generator=g) * 2 - 1)
    return scale * x0, w


def _runner(op: Op, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """(inputs [PROBE_ROWS + 1, K], fn of a row block) calling the kernel the way the model does."""
    kind = op[0]
    if kind == "mm":
        _, k, n, bias = op
        x, w = cancelling(PROBE_ROWS + 1, k, n, dtype, seed=k * 7919 + n)
        w = w.to(device=device, dtype=dtype)
        b = torch.zeros(n, device=device, dtype=dtype) if bias else None  # addmm, as with a bias
        return x.to(device=device, dtype=dtype), lambda c: F.linear(c, w, b)
    if kind == "bmm":
        _, e, k, n, expanded = op
        x, w = cancelling(PROBE_ROWS + 1, k, n, dtype, seed=e * 104729 + k * 7919 + n)
        we = w.to(device=device, dtype=dtype).unsqueeze(0).expand(e, n, k).contiguous()  # [E, N, K] like stacked

        def run(c: torch.Tensor) -> torch.Tensor:
            xe = c.unsqueeze(0).expand(e, *c.shape)
            return torch.bmm(xe if expanded else xe.contiguous(), we.transpose(1, 2))
        return x.to(device=device, dtype=dtype), run
    raise ValueError(f"unknown matmul kind {kind!r}")


def measure(op: Op, dtype: torch.dtype, device: torch.device, max_rows: int = PROBE_ROWS) -> Partition:
    """The row classes of ``op`` for 1..``max_rows`` rows (a partition). Host syncs: never inside a capture."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError("row classes must be measured before a CUDA graph capture (warm-up steps do it)")
    x, fn = _runner(op, dtype, device)
    with torch.inference_mode():
        return partition(fn, x, rows_dim=1 if op[0] == "bmm" else 0, max_rows=max_rows)


def partition(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, rows_dim: int = 0,
              max_rows: int = PROBE_ROWS) -> Partition:
    """Row counts 1..``max_rows`` grouped by the bits ``fn`` gives rows of x [>= max_rows + 1, ...].

    A count whose rows change bits with their place in the block (rows 0..m-1 against rows 1..m, the
    same rows one place earlier) is in no class: no block of that size is invariant. The others join
    a class when both their calls match its largest member's bits on the rows they share."""
    at0 = {m: fn(x[:m]) for m in range(1, max_rows + 1)}
    at1 = {m: fn(x[1:m + 1]) for m in range(1, max_rows + 1)}  # x's row i at place i-1
    classes: list[list[int]] = []
    for m in range(1, max_rows + 1):
        if m > 1 and not torch.equal(at0[m].narrow(rows_dim, 1, m - 1), at1[m].narrow(rows_dim, 0, m - 1)):
            continue  # place-dependent
        for c in classes:
            big = max(c)
            k, j = min(m, big), min(m, big - 1)
            same = torch.equal(at0[m].narrow(rows_dim, 0, k), at0[big].narrow(rows_dim, 0, k))
            if same and j:  # at1[m] holds rows 1..m; at0[big] rows 0..big-1
                same = torch.equal(at1[m].narrow(rows_dim, 0, j), at0[big].narrow(rows_dim, 1, j))
            if same:
                c.append(m)
                break
        else:
            classes.append([m])
    return tuple(frozenset(c) for c in classes)


def classes(op: Op, dtype: torch.dtype, device: torch.device) -> Partition:
    """:func:`measure`, once per op, dtype, device and thread count (the CPU kernels split work by threads)."""
    key = (op, dtype, str(device), torch.get_num_threads())
    part = _cache.get(key)
    if part is None:
        part = measure(op, dtype, device)
        with _lock:
            part = _cache.setdefault(key, part)
    return part


def common(parts: list[Partition]) -> Partition:
    """The classes of a block running several matmuls: row counts alike for all of them (a count in
    no class of one of them is in none)."""
    out: dict[tuple[int, ...], set[int]] = {}
    for m in range(1, PROBE_ROWS + 1):
        sig = tuple(next((i for i, c in enumerate(p) if m in c), -1) for p in parts)
        if -1 not in sig:
            out.setdefault(sig, set()).add(m)
    return tuple(frozenset(c) for c in out.values())


def describe(c: frozenset[int]) -> str:
    """A class in words: "2-15", "4,6,8"."""
    s = sorted(c)
    return f"{s[0]}-{s[-1]}" if len(s) > 1 and s == list(range(s[0], s[-1] + 1)) else ",".join(map(str, s))


def measured() -> dict[str, str]:
    """Every partition measured so far, for reports: {op and dtype: "1 | 2-15 | 16"}."""
    return {f"{k[0]} {str(k[1]).replace('torch.', '')} {k[2]}": " | ".join(describe(c) for c in v)
            for k, v in list(_cache.items())}
