"""The batched, device-side sampler (model/sampling.py): reference semantics (greedy bit-identical, EOS
only as argmax, top-k, top-p), a seed repeats its draws, an item's draws do not depend on its
neighbours or its row, the draws follow softmax(logits), and bad logits are flagged per item."""
from __future__ import annotations

import torch

from unimoe_audio.model.generation import Sampling, guide, mask_logits, sample_codes
from unimoe_audio.model.sampling import ItemParams, sample_step, uniform, item_keys

EOS, V, C = 1024, 1027, 12


def _logits(rows, seed=0):
    return torch.randn(rows, C, V, generator=torch.Generator().manual_seed(seed))


def _p(cond, uncond=None, seed=1, step=0, **kw):
    d = dict(cfg_scale=3.0, enable_eos=True, eos_factor=0.6, temperature=1.0, top_k=45, top_p=1.0, greedy=False)
    d.update(kw)
    return ItemParams(cond_row=cond, uncond_row=cond if uncond is None else uncond, seed=seed, step=step, **d)


def test_greedy_equals_the_reference_masking_and_argmax():
    x = _logits(4)
    items = [_p(1, 0, greedy=True), _p(3, 2, greedy=True, enable_eos=False, cfg_scale=1.5)]
    out = sample_step(x, items)
    for k, (u, c, s, en) in enumerate([(0, 1, 3.0, True), (2, 3, 1.5, False)]):
        ell = mask_logits(guide(x[u].clone(), x[c].clone(), s), enable_eos=en, eos_factor=0.6)
        assert torch.equal(out.codes[k], sample_codes(ell, Sampling(greedy=True), None))
    assert not out.bad.any()


def test_seed_repeats_and_neighbours_or_rows_change_nothing():
    x = _logits(6, 1)
    a = sample_step(x[:2], [_p(1, 0, seed=5, step=3)]).codes[0]
    assert torch.equal(a, sample_step(x[:2], [_p(1, 0, seed=5, step=3)]).codes[0])
    # the same rows later in the batch, other items around, another top_k among them
    moved = torch.cat([x[2:6], x[:2]])
    out = sample_step(moved, [_p(1, 0, seed=9), _p(5, 4, seed=5, step=3), _p(3, 2, seed=5, step=3, top_k=500)])
    assert torch.equal(out.codes[1], a)
    assert not torch.equal(sample_step(x[:2], [_p(1, 0, seed=6, step=3)]).codes[0], a)
    assert not torch.equal(sample_step(x[:2], [_p(1, 0, seed=5, step=4)]).codes[0], a)


def test_draws_follow_the_softmax():
    # one codebook with three live tokens: the draw frequencies over many seeds match the probabilities
    x = torch.full((1, C, V), -1e4)
    x[0, :, 0], x[0, :, 1], x[0, :, 2] = 1.0, 0.5, -0.5
    p = torch.softmax(torch.tensor([1.0, 0.5, -0.5]), 0)
    n = 3000
    items = [_p(0, seed=s, cfg_scale=0.0, enable_eos=False) for s in range(n)]
    codes = sample_step(x, items).codes  # [n, C]
    freq = torch.bincount(codes.flatten(), minlength=3)[:3].float() / codes.numel()
    assert torch.allclose(freq, p, atol=0.02), (freq, p)


def test_rules_eos_top_k_top_p():
    x = torch.full((1, C, V), -30.0)
    x[0, 0, 5], x[0, 0, EOS] = 1.0, 0.999 / 0.6  # EOS second best after its factor: never drawn
    x[0, 1:, :3] = torch.tensor([2.0, 1.0, 0.0])
    items = [_p(0, seed=s, cfg_scale=0.0) for s in range(300)]
    c = sample_step(x, items).codes
    assert EOS not in c[:, 0].tolist() and 5 in c[:, 0].tolist()
    x[0, 0, EOS] = 1.5 / 0.6  # now the argmax: may be drawn
    assert EOS in sample_step(x, items).codes[:, 0].tolist()
    assert set(sample_step(x, [_p(0, seed=s, cfg_scale=0.0, top_k=2) for s in range(300)]).codes[:, 1:].flatten().tolist()) == {0, 1}
    # nucleus keeps the crossing token: p ~ .665 .245 .09 with top_p .7 -> {0, 1}; .5 -> {0}
    assert set(sample_step(x, [_p(0, seed=s, cfg_scale=0.0, top_p=0.7) for s in range(300)]).codes[:, 1:].flatten().tolist()) == {0, 1}
    assert set(sample_step(x, [_p(0, seed=s, cfg_scale=0.0, top_p=0.5) for s in range(100)]).codes[:, 1:].flatten().tolist()) == {0}


def test_bad_logits_flag_only_their_item():
    x = _logits(4, 2)
    good = sample_step(x, [_p(1, 0, seed=3), _p(3, 2, seed=4)])
    x[2, 7, 100] = float("nan")
    out = sample_step(x, [_p(1, 0, seed=3), _p(3, 2, seed=4)])
    assert out.bad.tolist() == [False, True]
    assert torch.equal(out.codes[0], good.codes[0])
    x[2, 7, 100] = float("inf")
    assert sample_step(x, [_p(1, 0, seed=3), _p(3, 2, seed=4)]).bad.tolist() == [False, True]


def test_noise_is_uniform_and_exact_integers():
    a, b = item_keys(torch.tensor([123, 2**32 - 1]), torch.tensor([0, 77]), torch.tensor([0, 10**6]))
    u = uniform(torch.arange(200_000).view(1, -1).expand(2, -1), a, b)
    assert float(u.min()) > 0 and float(u.max()) < 1
    hist = torch.histc(u[0], bins=10, min=0, max=1) / u.shape[1]
    assert torch.allclose(hist, torch.full((10,), 0.1), atol=0.005)
    assert abs(float(torch.corrcoef(torch.stack([u[0, :-1], u[0, 1:]]))[0, 1])) < 0.01
