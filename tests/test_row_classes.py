"""Row classes (model/row_classes.py) and the row plans batch-invariant decode builds on them
(model/invariant.py): measured on the real kernels with inputs whose bits show the summation order."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from unimoe_audio.model import invariant, row_classes
from unimoe_audio.model.invariant import RowPlan

P = row_classes.PROBE_ROWS


def _sizes(part):
    return sorted(sorted(c) for c in part)


def test_the_probe_inputs_cancel_exactly_and_leave_an_order_dependent_residue():
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x, w = row_classes.cancelling(5, 96, 300, dtype, seed=3)
        assert torch.equal(x.to(dtype).float(), x) and torch.equal(w.to(dtype).float(), w)  # exact in dtype
        for r in range(5):  # summed exactly (fsum): every output is 0
            for c in range(0, 300, 37):
                assert math.fsum((x[r].double() * w[c].double()).tolist()) == 0.0
    x, w = row_classes.cancelling(1, 512, 256, torch.bfloat16, seed=1)
    fwd = x @ w.t()  # fp32 sums in one order ...
    perm = torch.randperm(512, generator=torch.Generator().manual_seed(0))
    other = x[:, perm] @ w[:, perm].t()  # ... and in another: residues differ in most outputs
    assert (fwd != other).float().mean() > 0.5
    assert (fwd.to(torch.bfloat16) != other.to(torch.bfloat16)).float().mean() > 0.5  # and survive bf16


def _seq(c, w):
    """c @ w.T summed left to right, one term at a time (cumsum): the same order for any row count."""
    return torch.cumsum(c[:, None, :] * w[None, :, :], -1)[..., -1]


def test_partition_finds_kernel_switches_and_place_dependence():
    x, w = row_classes.cancelling(P + 1, 64, 32, torch.float32, seed=2)
    assert _sizes(row_classes.partition(lambda c: _seq(c, w), x)) == [list(range(1, P + 1))]

    def switches_at_4(c):  # another summation order from 4 rows on (as a library switching kernels)
        return _seq(c, w) if c.shape[0] < 4 else _seq(c.flip(1), w.flip(1))

    assert _sizes(row_classes.partition(switches_at_4, x)) == [[1, 2, 3], list(range(4, P + 1))]

    def odd_places_differ(c):  # rows at odd places summed in another order, whatever the count
        out = _seq(c, w)
        out[1::2] = _seq(c[1::2].flip(1), w.flip(1))
        return out

    # shifted by one place, a row changes order: no block of 2 or more rows is usable
    assert _sizes(row_classes.partition(odd_places_differ, x)) == [[1]]


def test_measured_classes_partition_every_row_count_and_are_repeatable():
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16):
        for op in (("mm", 96, 80, False), ("mm", 96, 80, True), ("bmm", 3, 96, 80, True), ("bmm", 3, 96, 80, False)):
            part = row_classes.measure(op, dtype, cpu)
            counts = sorted(m for c in part for m in c)
            assert 1 in counts and len(counts) == len(set(counts)) and counts[-1] <= P
            assert part == row_classes.measure(op, dtype, cpu)


def test_row_plan_blocks():
    mid = RowPlan(frozenset(range(2, 16)))
    assert mid.blocks(5) == [(5, 5)]
    assert mid.blocks(1) == [(1, 2)]  # padded up to the smallest size
    assert mid.blocks(16) == [(8, 8), (8, 8)]
    assert mid.blocks(31) == [(11, 11), (10, 10), (10, 10)]
    evens = RowPlan(frozenset(range(4, 17, 2)))
    assert evens.blocks(5) == [(5, 6)] and evens.blocks(2) == [(2, 4)] and evens.blocks(20) == [(10, 10), (10, 10)]
    small = RowPlan(frozenset({2, 3}))
    assert small.blocks(8) == [(3, 3), (3, 3), (2, 2)]
    assert RowPlan.fixed(8).blocks(3) == [(3, 8)] and RowPlan.fixed(8).blocks(16) == [(8, 8), (8, 8)]


def test_row_plan_choice_follows_the_site_and_the_device():
    fp32_like = (frozenset({1}), frozenset(range(2, 16)), frozenset({16}))
    assert RowPlan.choose(fp32_like, "step", "cpu").sizes == frozenset(range(2, 16))
    assert RowPlan.choose(fp32_like, "expert", "cpu").sizes == frozenset(range(2, 16))
    bf16_like = (frozenset({1}), frozenset({2, 3}), frozenset(range(4, 17, 2))) + tuple(frozenset({m}) for m in range(5, 16, 2))
    assert RowPlan.choose(bf16_like, "step", "cpu").sizes == frozenset(range(4, 17, 2))  # a step: 2-16 rows
    assert RowPlan.choose(bf16_like, "expert", "cpu").sizes == frozenset({2, 3})  # an expert: a few rows
    gemv_then_one = (frozenset({1}), frozenset(range(2, 17)))
    assert RowPlan.choose(gemv_then_one, "expert", "cuda").sizes == frozenset(range(2, 17))


def test_invariant_linear_uses_the_measured_plan():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(70, 96, generator=g)
    x = torch.randn(40, 96, generator=g)
    with invariant.batch_invariant():
        plan = invariant.plan_for("step", (("mm", 96, 70, False),), x)
        part = row_classes.classes(("mm", 96, 70, False), torch.float32, torch.device("cpu"))
        assert plan.sizes in part
        alone = invariant.linear(x[:1], w)
        for m in range(2, 40):
            assert torch.equal(invariant.linear(torch.cat([x[1:m], x[:1]]), w)[-1], alone[0])
    assert "('mm', 96, 70, False) float32 cpu" in row_classes.measured()
