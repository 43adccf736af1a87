"""Which kernel each quantized linear and the experts' matmul get: chosen at load by what the kernel
does on the model's real shapes (and, for stored weights, the real tensors), never by a probe on a
made-up shape or by the GPU's compute capability.

Two layers:

* **Rules** (pure functions of shape, alignment and device; every branch is tested on the CPU): what
  a kernel accepts at all. They keep the fused kernels away from inputs that crash them, since a
  crash in native code cannot be caught:

  - ``_weight_int8pack_mm`` on the CPU reads each weight row with 16-byte vector loads: a weight whose
    data is not 16-byte aligned, or whose rows are not (K % 16 != 0), segfaults on AVX-512 CPUs
    from 2-4 activation rows on (K = 344 of the small config; 8-aligned int8 tensors of a
    memory-mapped shard) and gives wrong numbers with one row. On CUDA it takes any shape.
  - tinygemm int4 on CUDA (``_convert_weight_to_int4pack``) packs ``inner_k_tiles`` of 16 columns
    (8, 4 or 2) and needs K % (16 * inner_k_tiles) == 0: picked per K (8 where it divides, else 4,
    else 2), so ``down_proj`` (K = 2752: 4; K = 1376: 2) keeps the fused kernel; groups of 32-256
    columns; N a multiple of 8.
  - the CPU int4 kernel takes the padded layout of quant.py (N % 16, K % 32, group dividing K).

* **Trials**: for every distinct shape the rules admit, the kernel runs once on a real tensor of
  that shape (3 activation rows) and must agree with the dequantised reference, else that shape gets
  the "dequant" fallback (same numbers, slower). The experts' grouped matmul (``moe.py``'s "chosen"
  path) is tried on the block's real expert shapes under ``torch.cuda.set_sync_debug_mode("error")``:
  it is used only where it runs without a host sync (a sync inside graph capture fails the load, as
  torch's fallback loop does on GPUs its CUTLASS kernel does not cover).

:func:`report` says which kernel each class of linear got and how many fell back (``status``).
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Callable, Iterator

import torch

from .row_classes import cancelling

INT8_CPU_ALIGN = 16  # bytes: the CPU int8 kernel's vector loads (measured: 8 crashes, 16 runs)
STORE_ALIGN = 64  # bytes: where stored quantized tensors start (a cache line; torch's CPU allocator too)
INT4_INNER_K_TILES = (8, 4, 2)
INT4_CUDA_GROUPS = (32, 64, 128, 256)
TRIAL_ROWS = 3
TRIAL_TOL = 3e-2  # bf16 activations inside the kernels


# --- rules (pure) ----------------------------------------------------------------------------------------

def int8_refusal(device_type: str, k: int, data_ptr: int) -> str | None:
    """Why ``_weight_int8pack_mm`` must not run on an int8 weight [N, k] at ``data_ptr`` (None: it may)."""
    if device_type == "cuda":
        return None
    if device_type != "cpu":
        return f"no int8 kernel on {device_type}"
    if k % 16:
        return f"K={k} is not a multiple of 16 (the CPU kernel crashes or miscomputes)"
    if data_ptr % INT8_CPU_ALIGN:
        return f"weight data at {data_ptr % 64} bytes past a 64-byte boundary (the CPU kernel needs {INT8_CPU_ALIGN})"
    return None


def int4_inner_k_tiles(k: int) -> int | None:
    """tinygemm's inner k-tiles for K: the largest of 8, 4, 2 with K % (16 * tiles) == 0."""
    for t in INT4_INNER_K_TILES:
        if k % (16 * t) == 0:
            return t
    return None


def int4_refusal(device_type: str, n: int, k: int, group: int) -> str | None:
    """Why the fused int4 kernel must not run on a padded [n, k] weight in groups of ``group``."""
    if device_type == "cuda":
        if int4_inner_k_tiles(k) is None:
            return f"K={k} is not a multiple of 32"
        if group not in INT4_CUDA_GROUPS or k % group:
            return f"group size {group} does not fit K={k}"
        if n % 8:
            return f"N={n} is not a multiple of 8"
        return None
    if device_type == "cpu":
        if n % 16 or k % 32 or k % group:
            return f"[{n}, {k}] in groups of {group} is not the padded layout"
        return None
    return f"no int4 kernel on {device_type}"


def aligned(t: torch.Tensor, align: int = STORE_ALIGN) -> torch.Tensor:
    """``t`` itself when its data starts on an ``align``-byte boundary, else a copy that does (a
    memory-mapped tensor stays mapped; only a misaligned one is copied into memory)."""
    if t.device.type != "cpu" or t.data_ptr() % align == 0:
        return t
    out = torch.empty_like(t, memory_format=torch.contiguous_format)
    if out.data_ptr() % align:  # an allocator that aligns less: over-allocate and slice
        raw = torch.empty(t.numel() * t.element_size() + align, dtype=torch.uint8)
        off = (-raw.data_ptr()) % align
        out = raw[off:off + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
    out.copy_(t)
    return out


# --- trials ----------------------------------------------------------------------------------------------

_TRIALS: dict[tuple, bool] = {}


def trial_key(kind: str, q: Any, device: torch.device, dtype: torch.dtype) -> tuple:
    return (kind, q.method, q.padded, q.group_size, str(device), dtype)


def try_linear(q: Any, kind: str, dtype: torch.dtype) -> bool:
    """Run ``kind`` once on ``q``'s own tensors (the rules passed) and compare with the dequantised
    reference; cached per shape (``trial_key``)."""
    dev = q.qweight.device
    key = trial_key(kind, q, dev, dtype)
    ok = _TRIALS.get(key)
    if ok is None:
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn((TRIAL_ROWS, q.in_features), generator=g).to(device=dev, dtype=dtype)
        try:
            y = q._call(q._build(kind, dtype), x).float()
            ref = q.reference(x)  # quant.QuantLinear.reference: fp32 from the stored codes
            ok = bool(torch.isfinite(y).all()) and bool(torch.allclose(
                y, ref, rtol=TRIAL_TOL, atol=TRIAL_TOL * float(ref.abs().max().clamp(min=1.0))))
        except (RuntimeError, NotImplementedError, AttributeError):
            ok = False
        _TRIALS[key] = ok
    return ok


@contextlib.contextmanager
def no_host_sync(device: torch.device) -> Iterator[None]:
    """On CUDA, any host synchronisation inside the block raises (``set_sync_debug_mode("error")``)."""
    if device.type != "cuda":
        yield
        return
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.synchronize(device)
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(prev)


def classify_trial(run: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> str:
    """"ok", "syncs", "fails" or "wrong" for a trial that returns (result, reference) and raises
    (under :func:`no_host_sync`) when the op synchronises with the host."""
    try:
        y, ref = run()
    except RuntimeError as exc:
        msg = str(exc).lower()
        return "syncs" if "synchroniz" in msg or "capturing" in msg else "fails"
    except NotImplementedError:
        return "fails"
    y, ref = y.float(), ref.float()
    if y.shape != ref.shape or not bool(torch.isfinite(y).all()):
        return "wrong"
    tol = 0.05 * float(ref.abs().max().clamp(min=1.0))
    return "ok" if bool(torch.allclose(y, ref, rtol=0.05, atol=tol)) else "wrong"


_GROUPED: dict[tuple, str] = {}


def grouped_mm_trial(device: torch.device, dtype: torch.dtype, experts: int, hidden: int, inner: int) -> str:
    """:func:`classify_trial` of ``torch._grouped_mm`` on the experts' real shapes (gate+up [E, 2I, H]
    and down [E, H, I], every expert given rows, one given none), cached per shape."""
    key = (str(device), dtype, experts, hidden, inner)
    res = _GROUPED.get(key)
    if res is not None:
        return res
    if not hasattr(torch, "_grouped_mm"):
        res = "fails"
    elif device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return "fails"  # never try inside a capture: the safe path now, a real trial at load
    else:
        g = torch.Generator(device="cpu").manual_seed(0)
        counts = [2] * experts
        if experts > 1:
            counts[1] = 0  # an expert without rows reads nothing
        rows = sum(counts)
        x = (torch.randn(rows, hidden, generator=g) * 0.5).to(device=device, dtype=dtype)
        gu = (torch.randn(experts, 2 * inner, hidden, generator=g) * 0.05).to(device=device, dtype=dtype)
        down = (torch.randn(experts, hidden, inner, generator=g) * 0.05).to(device=device, dtype=dtype)
        offs = torch.tensor(counts, dtype=torch.int32).cumsum(0).to(device=device, dtype=torch.int32)

        def run() -> tuple[torch.Tensor, torch.Tensor]:
            with no_host_sync(device):
                h = torch._grouped_mm(x, gu.transpose(1, 2), offs=offs)
                y = torch._grouped_mm(h[:, :inner], down.transpose(1, 2), offs=offs)
            parts, start = [], 0
            for e, c in enumerate(counts):
                if c:
                    xe = x[start:start + c].float()
                    parts.append((xe @ gu[e].float().t())[:, :inner] @ down[e].float().t())
                    start += c
            return y, torch.cat(parts)

        res = classify_trial(run)
    _GROUPED[key] = res
    return res


_GROUPED_INVARIANT: dict[tuple, bool] = {}
GroupedMM = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _torch_grouped_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    return torch._grouped_mm(x, w, offs=offs)


def grouped_mm_invariant(device: torch.device, dtype: torch.dtype, experts: int, hidden: int, inner: int,
                         max_rows: int = 16, draws: int = 4, mm: GroupedMM | None = None) -> bool:
    """Whether a (token, expert) pair's row of the grouped matmul keeps its bits whatever the other pairs
    are, as batch-invariant decode needs (model/invariant.py) of the "chosen" path, whose group sizes
    follow the routing of every row: for both projections (gate+up, down), one token's row, run with
    1..``max_rows`` tokens, random group sizes and the token at a random place in its group, must give
    the same bits each time, for ``draws`` tokens. The token and the weights are row_classes.py's
    cancelling ones, so a change of summation order shows even in bf16.

    Torch's CUTLASS kernel picks its tile by rows per group and columns (torch's GroupMM.cu), so it
    is expected to hold while a step has at most 128 rows; this measures it instead of trusting it.
    ``mm``: the grouped matmul (default ``torch._grouped_mm``; tests pass others). Cached per shape;
    never run inside a capture (False there: the "all" path, invariant by construction)."""
    key = (str(device), dtype, experts, hidden, inner, max_rows, draws)
    res = _GROUPED_INVARIANT.get(key) if mm is None else None
    if res is not None:
        return res
    if mm is None and not hasattr(torch, "_grouped_mm"):
        return False
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return False
    run = mm or _torch_grouped_mm
    with torch.inference_mode():
        res = all(_grouped_rows_invariant(run, device, dtype, experts, k, n, max_rows, draws)
                  for k, n in ((hidden, 2 * inner), (inner, hidden)))
    if mm is None:
        _GROUPED_INVARIANT[key] = res
    return res


def _grouped_rows_invariant(run: GroupedMM, device: torch.device, dtype: torch.dtype, experts: int, k: int,
                            n: int, max_rows: int, draws: int) -> bool:
    tokens, w = cancelling(draws, k, n, dtype, seed=experts * 104729 + k * 7919 + n)
    w = w.unsqueeze(0).expand(experts, n, k).contiguous().to(device=device, dtype=dtype)  # [E, N, K] as stacked
    g = torch.Generator(device="cpu").manual_seed(1)
    for d in range(draws):
        e0 = d % experts
        ref = None
        for t in range(1, max_rows + 1):
            counts = torch.randint(0, t + 1, (experts,), generator=g)
            counts[e0] = 1 if t == 1 else max(1, int(counts[e0]))
            p0 = int(counts[:e0].sum()) + int(torch.randint(0, int(counts[e0]), (1,), generator=g))
            xs = torch.randn(t * experts, k, generator=g)
            xs[p0] = tokens[d]
            offs = counts.cumsum(0).to(torch.int32).to(device)
            row = run(xs.to(device=device, dtype=dtype), w.transpose(1, 2), offs)[p0]
            if ref is None:
                ref = row
            elif not torch.equal(row, ref):
                return False
    return True


# --- the whole model -------------------------------------------------------------------------------------

_CLASSES = (
    ("attention", re.compile(r"\.self_attn\.")),
    ("shared experts", re.compile(r"\.fixed_real_moe\.")),
    ("routed experts", re.compile(r"\.deepspeed_experts\.")),
    ("vision", re.compile(r"^visual\.")),
)


def linear_class(name: str) -> str:
    for label, pat in _CLASSES:
        if pat.search(name):
            return label
    return "other"
