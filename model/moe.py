"""The dynamic Top-P mixture of experts (spec section 4), inference only.

Slots: ``0..R-1`` routed experts, ``R..R+N-1`` null experts (a routing column, no module, output 0),
then the shared experts. Per token:

1. gate logits ``z`` (activation dtype); Top-P over the R+N dynamic slots picks ``k`` of them;
2. the picks are the top-k logits in order; pick i's multiplier is its softmax share among the
   not-yet-picked logits within a 2*jitter relative band of it (usually exactly 1);
3. ``r = m / (sum m + 1e-6)``; ``G = softmax(z over picked + shared slots)``;
   routed weight ``r_e * sum_{dynamic} G``, shared weights ``G_shared``;
4. ``y = 0 + sum_routed w_e E_e(x) + G_s0 F_0(x) + G_s1 F_1(x)`` (in that order).

Routing is computed for all tokens at once (no loop over k groups: grouping does not change a
token's result). Two ways to run the experts on the routing's result, same numbers:

* **grouped** (prefill, and every CPU forward): routed experts run only on their own tokens (sorted by
  expert, one gather, one ``index_add_``), which is bit-identical on CPU to the reference's
  capacity-padded batches. The group sizes are read on the host: one device sync per layer.
* **fast** (decode on an accelerator: at most ``fast_max_tokens`` tokens): nothing waits on the
  host, so a decode step can be captured as a CUDA graph. Two static-shape ways, "fast" picks:

  - **chosen**: only the chosen experts' weights are read. Every (token, expert) pair slot exists
    (T*E rows, a static shape); chosen pairs are sorted to the front by expert and
    ``torch._grouped_mm`` runs each expert on its own rows, given the per-expert row offsets as a
    device tensor (an expert with no rows reads nothing). Rows past the last chosen pair are masked
    with ``torch.where``. Used where torch's grouped mm ran sync-free and right in its trial on the
    block's real shapes (kernels.grouped_mm_trial, under ``set_sync_debug_mode("error")``; never on the
    CPU, whose grouped mm reads the offsets on the host, fine off a graph) and the experts
    are not quantized.
  - **all**: every routed expert runs on every token as one batched matmul over the stacked weights,
    and the routing weights (0 for unchosen experts, which ``torch.where`` drops, so an overflowing
    unchosen expert cannot leak) mix them. Reads every expert: the fallback.

  Both accumulate in fp32 in expert order with a single rounding, like the grouped path. The
  stacked weights *are* the experts' parameters: on first use each ``Linear`` weight is rebound to a
  slice of one ``[experts, ...]`` tensor (no extra memory; state_dict names and shapes unchanged).
  ``Module.to()`` etc. undo that and the next call stacks again.

The grouped path also uses the stacked weights: gate and up projections are one matmul (rows
0..I-1 gate, I..2I-1 up), and the shared experts run as one batched matmul, so a CPU decode step
issues fewer, larger matmuls. Quantized experts (quant.py) run as modules: grouped per expert, or
every expert in turn on the sync-free path.

``SparseMoE.path`` ("auto", "grouped", "fast", "chosen", "all") picks the way; :func:`set_moe_path`
sets it for a whole model. No token dropping and no aux loss at inference.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import invariant
from .config import TextConfig


class ExpertMLP(nn.Module):
    """SwiGLU expert without biases: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _Path(nn.Module):
    """An empty container: it only exists so parameter names match the published checkpoint
    (``dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.{e}``)."""


@dataclass
class Routing:
    """What the router decided for T tokens (optional output, for tests and diagnostics)."""

    top_k: torch.Tensor  # [T] dynamic slots chosen (null slot included)
    expert_mask: torch.Tensor  # [T, slots] int: chosen dynamic slots, shared slots always 1
    weights: torch.Tensor  # [T, slots] combine weights (routed ones before masking by expert_mask)


_PICK_CONSTS: dict[tuple[int, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def _pick_consts(nd: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """arange(nd) and the [i, j] "j was picked before pick i" mask, made once per device (fewer
    small kernels per decode step)."""
    key = (nd, device)
    c = _PICK_CONSTS.get(key)
    if c is None:
        with torch.inference_mode(False):
            ar = torch.arange(nd, device=device)
            c = (ar, ar[None, :] < ar[:, None])
        _PICK_CONSTS[key] = c
    return c


def route(z: torch.Tensor, num_dynamic: int, top_p: float, jitter: float,
          token_mask: torch.Tensor | None = None) -> Routing:
    """Routing of gate logits ``z`` [T, slots] (spec 4.1 steps 2-6), same ops and dtypes as the reference.
    No host sync (a decode step with it can be captured as a CUDA graph)."""
    T, slots = z.shape
    nd = num_dynamic
    zd = z[:, :nd]
    # Top-P count: smallest k whose sorted cumulative probability reaches top_p
    p_sorted, _ = torch.sort(torch.softmax(zd, dim=-1), dim=-1, descending=True)
    top_k = (~(p_sorted.cumsum(dim=-1) >= top_p)).sum(dim=-1) + 1

    # Pick i is the i-th largest logit; a stable sort matches repeated torch.max (first index on ties).
    v, order = torch.sort(zd, dim=-1, descending=True, stable=True)
    a = v.abs()
    vi = v.unsqueeze(-1)  # [T, i, 1]: the current maximum at pick i
    vj = v.unsqueeze(-2)  # [T, 1, j]
    factor = a.unsqueeze(-2).clamp(min=a.unsqueeze(-1))  # max(|s_j|, |max_i|)
    out_of_band = ((vi - vj) / factor) > (2 * jitter)
    ar, picked_before = _pick_consts(nd, z.device)  # [i, j]: j was picked before pick i (set to -inf)
    gates = vj.expand(T, nd, nd).masked_fill(out_of_band | picked_before, float("-inf"))
    m_sorted = torch.diagonal(torch.softmax(gates, dim=-1), dim1=-2, dim2=-1)  # share of pick i itself
    chosen_sorted = ar[None, :] < top_k[:, None]
    m_sorted = m_sorted.masked_fill(~chosen_sorted, 0.0)
    # order is a permutation of every column: the scatters write every element
    m = torch.empty_like(zd).scatter_(-1, order, m_sorted)
    chosen = torch.empty((T, nd), dtype=torch.bool, device=z.device).scatter_(-1, order, chosen_sorted)

    r = m / (m.sum(dim=-1, keepdim=True) + 1e-6)
    if token_mask is not None:
        # like the reference forward(): padded tokens get no dynamic slot (saves their expert compute)
        chosen = chosen & token_mask.reshape(-1, 1).to(torch.bool)
    mask = torch.ones((T, slots), dtype=torch.int32, device=z.device)
    mask[:, :nd] = chosen
    g = torch.softmax(z.masked_fill(mask == 0, float("-inf")), dim=-1)
    w_dyn = r * g[:, :nd].sum(dim=-1, keepdim=True)
    weights = torch.cat((w_dyn, g[:, nd:]), dim=-1)
    return Routing(top_k=top_k, expert_mask=mask, weights=weights)


MOE_PATHS = ("auto", "grouped", "fast", "chosen", "all")
# The grouped path's fused matmuls (gate+up in one, both shared experts in one batched matmul). False
# runs each projection as its own Linear, as before: kept for benchmarks (bench/bench_quant.py).
FUSED = True

def grouped_mm_sync_free(device: torch.device, dtype: torch.dtype, experts: int = 2, hidden: int = 64,
                         inner: int = 32) -> bool:
    """Whether ``torch._grouped_mm`` runs for ``device``/``dtype`` on these expert shapes without a
    host sync (so a CUDA graph can capture it) and right: tried once per shape under
    ``set_sync_debug_mode("error")`` (kernels.grouped_mm_trial), whatever the compute capability.
    Off CUDA: False (the CPU build's grouped mm reads its offsets on the host; fine off a graph)."""
    if device.type != "cuda":
        return False
    from .kernels import grouped_mm_trial

    return grouped_mm_trial(device, dtype, experts, hidden, inner) == "ok"


@dataclass
class _Stacked:
    """Experts' weights as one tensor per projection; the experts' ``Linear`` weights are views of it."""

    gate_up: torch.Tensor  # [E, 2I, H]: rows 0..I-1 gate_proj, I..2I-1 up_proj
    down: torch.Tensor  # [E, H, I]
    inner: int
    params: tuple[torch.Tensor, ...]  # the parameters rebound to views, in stacking order
    ptrs: tuple[int, ...]  # their data pointers when stacked (a moved/replaced parameter changes it)

    def valid(self) -> bool:
        return all(p.data_ptr() == q for p, q in zip(self.params, self.ptrs))

    def ops(self, kind: str) -> tuple:
        """The matmuls of a run over these weights, for batch-invariant row plans (model/row_classes.py):
        "one" expert (two mms, :func:`_run_one`) or "all" experts at once (two bmms, :func:`_run_stacked`)."""
        e, n2, h = self.gate_up.shape
        if kind == "one":
            return (("mm", h, n2, False), ("mm", self.inner, h, False))
        return (("bmm", e, h, n2, True), ("bmm", e, self.inner, h, False))


def _is_plain(experts: nn.ModuleList) -> bool:
    """Full-precision ``nn.Linear`` experts (stackable), not quantized ones."""
    return len(experts) > 0 and type(experts[0].gate_proj) is nn.Linear


def _stack_experts(experts: nn.ModuleList) -> _Stacked:
    gate = experts[0].gate_proj.weight
    inner, hidden = gate.shape
    E = len(experts)
    # never an inference tensor (it becomes the parameters' storage), never part of autograd
    with torch.inference_mode(False), torch.no_grad():
        gate_up = torch.empty((E, 2 * inner, hidden), dtype=gate.dtype, device=gate.device)
        down = torch.empty((E, hidden, inner), dtype=gate.dtype, device=gate.device)
        params = []
        for e, ex in enumerate(experts):
            gate_up[e, :inner].copy_(ex.gate_proj.weight)
            gate_up[e, inner:].copy_(ex.up_proj.weight)
            down[e].copy_(ex.down_proj.weight)
            ex.gate_proj.weight.data = gate_up[e, :inner]
            ex.up_proj.weight.data = gate_up[e, inner:]
            ex.down_proj.weight.data = down[e]
            params += [ex.gate_proj.weight, ex.up_proj.weight, ex.down_proj.weight]
    return _Stacked(gate_up, down, inner, tuple(params), tuple(p.data_ptr() for p in params))


def _run_one(x: torch.Tensor, st: _Stacked, e: int) -> torch.Tensor:
    """Expert ``e`` on rows x [n, H]: gate and up in one matmul."""
    gu = F.linear(x, st.gate_up[e])
    return F.linear(F.silu(gu[:, :st.inner]) * gu[:, st.inner:], st.down[e])


def _run_stacked(x: torch.Tensor, st: _Stacked) -> torch.Tensor:
    """Every expert on every token: x [T, H] -> [E, T, H] (the experts' own dtype)."""
    E = st.gate_up.shape[0]
    xe = x.unsqueeze(0).expand(E, *x.shape)
    gu = torch.bmm(xe, st.gate_up.transpose(1, 2))  # [E, T, 2I]
    h = F.silu(gu[..., :st.inner]) * gu[..., st.inner:]
    return torch.bmm(h, st.down.transpose(1, 2))


def _all_experts(x: torch.Tensor, st: _Stacked) -> torch.Tensor:
    """:func:`_run_stacked`, in row blocks of one row class of its matmuls when batch-invariant."""
    if not invariant.enabled():
        return _run_stacked(x, st)
    return invariant.rowwise(lambda c: _run_stacked(c, st), x, invariant.plan_for("step", st.ops("all"), x),
                             out_row_dim=1)


class SparseMoE(nn.Module):
    """Attribute names follow the checkpoint: ``gate``, ``fixed_real_moe.{f}``,
    ``dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.{e}``.

    ``path``: "auto" (fast for at most ``fast_max_tokens`` tokens off the CPU, else grouped),
    "grouped", "fast" (chosen where it is sync-free, else all), "chosen" or "all" (see the module
    docstring)."""

    path: str = "auto"
    fast_max_tokens: int = 64

    def __init__(self, cfg: TextConfig):
        super().__init__()
        h = cfg.hidden_size
        self.num_routed = cfg.num_routed_experts
        self.num_dynamic = cfg.num_dynamic_slots
        self.top_p = cfg.top_p
        self.jitter = cfg.router_jitter_noise
        self.gate = nn.Linear(h, cfg.num_gate_logits, bias=False)
        self.fixed_real_moe = nn.ModuleList(ExpertMLP(h, cfg.shared_intermediate_size)
                                            for _ in range(cfg.num_shared_experts))
        self.dynamic_real_moe = _Path()
        self.dynamic_real_moe.deepspeed_moe = _Path()
        self.dynamic_real_moe.deepspeed_moe.experts = _Path()
        self.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts = nn.ModuleList(
            ExpertMLP(h, cfg.dynamic_intermediate_size) for _ in range(cfg.num_routed_experts))
        self._stacked: tuple[_Stacked | None, _Stacked | None] | None = None

    @property
    def experts(self) -> nn.ModuleList:
        return self.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts

    def _apply(self, fn, recurse=True):
        # .to()/.cuda()/.half() give every parameter its own storage again: drop the stacked copies
        self._stacked = None
        return super()._apply(fn, recurse)

    def use_fast(self, num_tokens: int, device: torch.device) -> bool:
        """Whether this forward takes a sync-free path ("fast", "chosen" or "all")."""
        return self.resolve_path(num_tokens, device, torch.float32) != "grouped"

    def resolve_path(self, num_tokens: int, device: torch.device, dtype: torch.dtype) -> str:
        """The way this forward runs: "grouped", "chosen" or "all"."""
        p = self.path
        if p == "auto":
            p = "fast" if device.type != "cpu" and num_tokens <= self.fast_max_tokens else "grouped"
        if p == "fast":
            p = self.fast_path(device, dtype)
        if p == "chosen" and not (_is_plain(self.experts) and hasattr(torch, "_grouped_mm")):
            p = "all"  # quantized experts (or an old torch): every expert in turn, still sync-free
        if p == "chosen" and invariant.enabled() and not self.chosen_invariant(device, dtype):
            p = "all"  # batch-invariant steps: "all" gives each expert fixed-size row blocks
        return p

    def chosen_invariant(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether the grouped matmul keeps a pair's bits whatever the routing of the other rows, on this
        block's real expert shapes (kernels.grouped_mm_invariant; measured at load, cached)."""
        from .kernels import grouped_mm_invariant

        g = self.experts[0].gate_proj
        return grouped_mm_invariant(device, dtype, len(self.experts), g.in_features, g.out_features)

    def fast_path(self, device: torch.device, dtype: torch.dtype) -> str:
        """What "fast" (the captured decode step's path) runs here: "chosen" where the grouped matmul
        is sync-free on this block's real expert shapes, else "all"."""
        if not _is_plain(self.experts):
            return "all"
        g = self.experts[0].gate_proj
        ok = grouped_mm_sync_free(device, dtype, len(self.experts), g.in_features, g.out_features)
        return "chosen" if ok else "all"

    def stacked(self) -> tuple[_Stacked | None, _Stacked | None]:
        """(routed, shared) stacked weights, made on first use and again after parameters moved;
        None for a group that is empty or quantized."""
        st = self._stacked
        if st is None or not all(s is None or s.valid() for s in st):
            st = tuple(_stack_experts(m) if _is_plain(m) else None for m in (self.experts, self.fixed_real_moe))
            self._stacked = st
        return st

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None,
                return_routing: bool = False) -> torch.Tensor | tuple[torch.Tensor, Routing]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        z = invariant.module(self.gate, x)
        rt = route(z, self.num_dynamic, self.top_p, self.jitter, token_mask)
        path = self.resolve_path(x.shape[0], x.device, x.dtype)
        routed, shared = self.stacked() if FUSED or path != "grouped" else (None, None)
        if path == "grouped":
            y = self._routed(x, rt, routed)
        elif path == "chosen":
            y = self._routed_chosen(x, rt, routed)
        else:
            y = self._routed_all(x, rt, routed)
        y = self._add_shared(y.to(x.dtype), x, rt, shared)
        y = y.reshape(shape)
        return (y, rt) if return_routing else y

    def _add_shared(self, y: torch.Tensor, x: torch.Tensor, rt: Routing, st: _Stacked | None) -> torch.Tensor:
        nd = self.num_dynamic
        if st is not None:
            ys = _all_experts(x, st)  # both in one bmm
            for f in range(ys.shape[0]):
                y = y + ys[f] * rt.weights[:, nd + f].unsqueeze(-1)
        else:
            for f, expert in enumerate(self.fixed_real_moe):
                y = y + invariant.module(expert, x) * rt.weights[:, nd + f].unsqueeze(-1)
        return y

    def _routed_all(self, x: torch.Tensor, rt: Routing, st: _Stacked | None) -> torch.Tensor:
        """Sum of routed experts without a host sync: all experts on all tokens, unchosen ones
        dropped by ``where``; fp32 accumulation in expert order with a single rounding."""
        nr = self.num_routed
        if nr == 0:
            return torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        if st is not None:
            ye = _all_experts(x, st)  # [E, T, H]
        else:
            ye = torch.stack([invariant.module(ex, x) for ex in self.experts])
        sel = rt.expert_mask[:, :nr].t().to(torch.bool).unsqueeze(-1)  # [E, T, 1]
        w = rt.weights[:, :nr].t().float().unsqueeze(-1)
        return torch.where(sel, ye.float() * w, 0.0).sum(0)

    def _pairs(self, rt: Routing, T: int):
        """(expert, token) pair slots sorted by expert, chosen pairs first (a stable sort keeps token
        order): token index, expert index, chosen flag and per-expert counts, all on the device."""
        nr = self.num_routed
        sel = rt.expert_mask[:, :nr].to(torch.bool)  # [T, E]
        flat = sel.t().reshape(-1)
        pair = torch.sort((~flat).to(torch.uint8), stable=True).indices
        return pair // T, pair % T, flat[pair], sel

    def _routed_chosen(self, x: torch.Tensor, rt: Routing, st: _Stacked | None) -> torch.Tensor:
        """Sum of routed experts reading only the chosen experts' weights, static shapes, no host sync
        (with a sync-free grouped mm): one grouped matmul per projection over all pair slots."""
        T = x.shape[0]
        acc = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        if st is None:
            return acc
        e_idx, t_idx, valid, sel = self._pairs(rt, T)
        offs = torch.cumsum(sel.sum(0), 0).to(torch.int32)  # end row of each expert's group
        xs = x.index_select(0, t_idx)
        gu = torch._grouped_mm(xs, st.gate_up.transpose(1, 2), offs=offs)
        h = F.silu(gu[:, :st.inner]) * gu[:, st.inner:]
        ys = torch._grouped_mm(h, st.down.transpose(1, 2), offs=offs)
        w = rt.weights[:, :self.num_routed][t_idx, e_idx].float().unsqueeze(-1)
        # rows past the last chosen pair are not written by the grouped mm: drop them (NaN included)
        acc.index_add_(0, t_idx, torch.where(valid.unsqueeze(-1), ys.float() * w, 0.0))
        return acc

    def _routed(self, x: torch.Tensor, rt: Routing, st: _Stacked | None = None) -> torch.Tensor:
        """Sum of routed experts, each run only on its own tokens; fp32 accumulation with a single
        rounding, like the reference's combine einsum."""
        nr = self.num_routed
        sel = rt.expert_mask[:, :nr].to(torch.bool)
        acc = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        # (expert, token) pairs sorted by expert, chosen pairs first (stable sort keeps token order);
        # the group sizes are the only host sync
        counts = sel.sum(0).tolist()
        n_pairs = sum(counts)
        if n_pairs == 0:
            return acc
        T = sel.shape[0]
        flat = sel.t().reshape(-1)
        pair = torch.sort((~flat).to(torch.uint8), stable=True).indices[:n_pairs]
        e_idx, t_idx = pair // T, pair % T
        xs = x.index_select(0, t_idx)
        outs = []
        start = 0
        plan = invariant.plan_for("expert", st.ops("one"), x) if st is not None and invariant.enabled() else None
        for e, c in enumerate(counts):
            if c:
                xe = xs[start:start + c]
                if st is None:
                    outs.append(invariant.module(self.experts[e], xe, "expert"))
                elif plan is None:
                    outs.append(_run_one(xe, st, e))
                else:
                    outs.append(invariant.rowwise(lambda c, e=e: _run_one(c, st, e), xe, plan))
                start += c
        ys = torch.cat(outs) if len(outs) > 1 else outs[0]
        w = (rt.weights[:, :nr] * sel)[t_idx, e_idx]
        acc.index_add_(0, t_idx, ys.float() * w.float().unsqueeze(-1))
        return acc


def set_moe_path(model: nn.Module, path: str) -> str:
    """Set ``path`` ("auto", "grouped", "fast") on every :class:`SparseMoE` of ``model``; returns the
    previous path of the first one."""
    if path not in MOE_PATHS:
        raise ValueError(f"unknown MoE path {path!r}; expected one of {MOE_PATHS}")
    prev = None
    for m in model.modules():
        if isinstance(m, SparseMoE):
            if prev is None:
                prev = m.path
            m.path = path
    return prev or "auto"


@contextlib.contextmanager
def moe_path(model: nn.Module, path: str) -> Iterator[None]:
    """``with moe_path(model, "fast"): ...`` sets every MoE block's path and restores each one after."""
    mods = [m for m in model.modules() if isinstance(m, SparseMoE)]
    if path not in MOE_PATHS:
        raise ValueError(f"unknown MoE path {path!r}; expected one of {MOE_PATHS}")
    saved = [m.__dict__.get("path") for m in mods]
    try:
        for m in mods:
            m.path = path
        yield
    finally:
        for m, p in zip(mods, saved):
            if p is None:
                m.__dict__.pop("path", None)
            else:
                m.path = p
