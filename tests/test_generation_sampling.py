"""The sampling maths of one decode step (spec 6.3 steps 3-6), on hand-made logits."""
from __future__ import annotations

import torch

from unimoe_audio.model.generation import Sampling, guide, mask_logits, sample_codes

EOS = 1024
V = 1027


def _logits(seed=0, c=12):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(c, V, generator=g)


def test_guide_and_cfg_zero():
    u, c = _logits(1), _logits(2)
    torch.testing.assert_close(guide(u, c, 3.0), c + 3.0 * (c - u), rtol=0, atol=0)
    assert torch.equal(guide(u, c, 0.0), c)
    assert torch.equal(guide(None, c, 5.0), c)


def test_mask_logits_eos_rules():
    x = _logits()
    x[0, EOS] = 2.0
    y = mask_logits(x.clone(), enable_eos=True, eos_factor=0.5)
    assert y[0, EOS] == 1.0  # the logit is multiplied, not the probability (D6)
    assert torch.isinf(y[:, EOS + 1:]).all() and torch.isinf(y[1:, EOS]).all()
    assert torch.isfinite(y[:, :EOS]).all()
    z = mask_logits(x.clone(), enable_eos=False, eos_factor=0.0)
    assert torch.isinf(z[:, EOS:]).all() and not torch.isnan(z).any()  # factor 0: no NaN


def test_greedy_is_argmax_and_draws_nothing():
    x = _logits()
    g = torch.Generator().manual_seed(5)
    state = g.get_state()
    out = sample_codes(x.clone(), Sampling(temperature=0.0), g)
    assert torch.equal(out, x.argmax(-1))
    assert torch.equal(g.get_state(), state)
    assert torch.equal(sample_codes(x.clone(), Sampling(greedy=True), None), x.argmax(-1))


def test_top_k_one_equals_greedy():
    x = mask_logits(_logits(3), True, 1.0)
    out = sample_codes(x.clone(), Sampling(top_k=1, temperature=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(out, x.argmax(-1))


def test_eos_only_when_argmax():
    x = torch.full((1, V), -10.0)
    x[0, 5] = 1.0
    x[0, EOS] = 0.999  # second best: never drawn
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_codes(x.clone(), Sampling(top_k=45), g)[0]) for _ in range(200)}
    assert EOS not in draws and 5 in draws
    x[0, EOS] = 1.5  # the argmax: may be drawn
    draws = {int(sample_codes(x.clone(), Sampling(top_k=45), g)[0]) for _ in range(200)}
    assert EOS in draws


def test_top_k_and_top_p_restrict_support():
    x = torch.zeros(1, V)
    x[0, :10] = torch.linspace(5.0, 4.0, 10)
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_codes(x.clone(), Sampling(top_k=3), g)[0]) for _ in range(300)}
    assert draws == {0, 1, 2}
    # nucleus: the first token crossing top_p is kept, later ones are dropped
    y = torch.full((1, V), -30.0)
    y[0, 0], y[0, 1], y[0, 2] = 2.0, 1.0, 0.0  # p ~ .665 .245 .09
    draws = {int(sample_codes(y.clone(), Sampling(top_k=45, top_p=0.7), g)[0]) for _ in range(300)}
    assert draws == {0, 1}
    draws = {int(sample_codes(y.clone(), Sampling(top_k=45, top_p=0.5), g)[0]) for _ in range(100)}
    assert draws == {0}


def test_seeded_draws_repeat():
    x = _logits(4)
    a = [sample_codes(x.clone(), Sampling(), torch.Generator().manual_seed(9)) for _ in range(2)]
    assert torch.equal(a[0], a[1])
    b = sample_codes(x.clone(), Sampling(), torch.Generator().manual_seed(10))
    assert not torch.equal(a[0], b)
