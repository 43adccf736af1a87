"""The kernels a loaded model got, chosen at once before any graph is captured, and the report of them
(the engine's ``info["kernels"]``, ``status``). Apart from kernels.py, which holds the rules and trials
that quant.py and moe.py call: this walks their modules."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import invariant
from .kernels import linear_class
from .moe import SparseMoE
from .quant import QuantLinear


def check_model(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Choose every kernel of ``model`` now (quantized linears: rules + trials per shape; the
    experts' matmul: the sync trial), before any graph is captured. Returns :func:`report`."""
    for m in model.modules():
        if isinstance(m, QuantLinear):
            if m.kernel is None:
                m.prepare(dtype)
        elif isinstance(m, SparseMoE):
            dev, dt = m.gate.weight.device, m.gate.weight.dtype if dtype is None else dtype
            if m.fast_path(dev, dt) == "chosen":
                m.chosen_invariant(dev, dt)  # before any capture: batch-invariant steps ask for it there
    return report(model)


def report(model: nn.Module) -> dict[str, Any]:
    """{class of linear: {kernel: count}}, the experts' decode matmul, and how many linears fell back
    to "dequant" although a fused kernel exists for their method (with the first reasons)."""
    classes: dict[str, dict[str, int]] = {}
    fallbacks, reasons = 0, []
    experts = experts_invariant = None  # the experts' matmul of a decode step (1 token a row, the module's
    # own path), plain and in batch-invariant steps (the default)
    for name, m in model.named_modules():
        if isinstance(m, QuantLinear):
            kernel = m.kernel or "not prepared"
            if kernel == "dequant":
                fallbacks += 1
                if m.refusal and len(reasons) < 3 and m.refusal not in reasons:
                    reasons.append(m.refusal)
        elif type(m) is nn.Linear and linear_class(name) != "other":
            kernel = f"{str(m.weight.dtype).replace('torch.', '')} linear"
        else:
            if isinstance(m, SparseMoE) and experts is None:
                experts = m.resolve_path(1, m.gate.weight.device, m.gate.weight.dtype)
                with invariant.batch_invariant():
                    experts_invariant = m.resolve_path(1, m.gate.weight.device, m.gate.weight.dtype)
            continue
        c = classes.setdefault(linear_class(name), {})
        c[kernel] = c.get(kernel, 0) + 1
    return {"linears": classes, "experts_decode": experts, "experts_decode_invariant": experts_invariant,
            "fallbacks": fallbacks, "fallback_reasons": reasons,
            "aligned_copies": int(getattr(model, "aligned_copies", 0))}
