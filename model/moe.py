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
token's result). Routed experts run only on their own tokens (sorted by expert, one gather, one
``index_add_``), which is bit-identical on CPU to the reference's capacity-padded batches.
No token dropping and no aux loss at inference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

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


def route(z: torch.Tensor, num_dynamic: int, top_p: float, jitter: float,
          token_mask: torch.Tensor | None = None) -> Routing:
    """Routing of gate logits ``z`` [T, slots] (spec 4.1 steps 2-6), same ops and dtypes as the reference."""
    T, slots = z.shape
    nd = num_dynamic
    zd = z[:, :nd]
    # Top-P count: smallest k whose sorted cumulative probability reaches top_p
    p_sorted, _ = torch.sort(torch.softmax(zd, dim=-1), dim=-1, descending=True)
    top_k = (~(p_sorted.cumsum(dim=-1) >= top_p)).sum(dim=-1) + 1

    # Pick i is the i-th largest logit; a stable sort matches repeated torch.max (first index on ties).
    v, order = torch.sort(zd, dim=-1, descending=True, stable=True)
    vi = v.unsqueeze(-1)  # [T, i, 1]: the current maximum at pick i
    vj = v.unsqueeze(-2)  # [T, 1, j]
    factor = vj.abs().clamp(min=vi.abs())
    out_of_band = ((vi - vj) / factor) > (2 * jitter)
    ar = torch.arange(nd, device=z.device)
    picked_before = ar[None, :] < ar[:, None]  # [i, j]: j was picked before pick i (set to -inf)
    gates = vj.expand(T, nd, nd).masked_fill(out_of_band | picked_before, float("-inf"))
    m_sorted = torch.diagonal(torch.softmax(gates, dim=-1), dim1=-2, dim2=-1)  # share of pick i itself
    chosen_sorted = ar[None, :] < top_k[:, None]
    m_sorted = m_sorted.masked_fill(~chosen_sorted, 0.0)
    m = torch.zeros_like(zd).scatter(-1, order, m_sorted)
    chosen = torch.zeros((T, nd), dtype=torch.bool, device=z.device).scatter(-1, order, chosen_sorted)

    r = m / (m.sum(dim=-1, keepdim=True) + 1e-6)
    if token_mask is not None:
        # like the reference forward(): padded tokens get no dynamic slot (saves their expert compute)
        chosen = chosen & token_mask.reshape(-1, 1).to(torch.bool)
    mask = torch.ones((T, slots), dtype=torch.int32, device=z.device)
    mask[:, :nd] = chosen.to(torch.int32)
    g = torch.softmax(z.masked_fill(mask == 0, float("-inf")), dim=-1)
    w_dyn = r * g[:, :nd].sum(dim=-1, keepdim=True)
    weights = torch.cat((w_dyn, g[:, nd:]), dim=-1)
    return Routing(top_k=top_k, expert_mask=mask, weights=weights)


class SparseMoE(nn.Module):
    """Attribute names follow the checkpoint: ``gate``, ``fixed_real_moe.{f}``,
    ``dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.{e}``."""

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

    @property
    def experts(self) -> nn.ModuleList:
        return self.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor | None = None,
                return_routing: bool = False) -> torch.Tensor | tuple[torch.Tensor, Routing]:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        z = self.gate(x)
        rt = route(z, self.num_dynamic, self.top_p, self.jitter, token_mask)
        y = self._routed(x, rt).to(x.dtype)
        nd = self.num_dynamic
        for f, expert in enumerate(self.fixed_real_moe):
            y = y + expert(x) * rt.weights[:, nd + f].unsqueeze(-1)
        y = y.reshape(shape)
        return (y, rt) if return_routing else y

    def _routed(self, x: torch.Tensor, rt: Routing) -> torch.Tensor:
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
        for e, c in enumerate(counts):
            if c:
                outs.append(self.experts[e](xs[start:start + c]))
                start += c
        ys = torch.cat(outs) if len(outs) > 1 else outs[0]
        w = (rt.weights[:, :nr] * sel)[t_idx, e_idx]
        acc.index_add_(0, t_idx, ys.float() * w.float().unsqueeze(-1))
        return acc
