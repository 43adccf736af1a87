"""Batch invariance of decode (model/invariant.py): a seeded item's codes are the same alone, joined by
others at a later step, and after a neighbour is cancelled, in float32 and bfloat16, on the eager
(CPU default) and the static (bucketed, CUDA default) paths. Random-weight small config: without
batch-invariant steps these runs differ (attention over padded keys, matmuls over more rows)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unimoe_audio.model import invariant, kernels, prompts
from unimoe_audio.model.config import ModelConfig, config_dict
from unimoe_audio.model.generation import DecodeSession, GenItem, Sampling, backend_for
from unimoe_audio.model.tiny import random_model


def _two_layer_small():
    """The small config's shapes (hidden 512, experts 1376) with 2 of its 8 layers: quicker, same kernels."""
    d = config_dict("small")
    for t in (d, d.get("text_config", {})):
        if "num_hidden_layers" in t:
            t["num_hidden_layers"] = 2
        if isinstance(t.get("layer_types"), list):
            t["layer_types"] = t["layer_types"][:2]
    return ModelConfig.from_dict(d, source="small-2")


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def lm(request):
    return backend_for(random_model(_two_layer_small(), 0, dtype=getattr(torch, request.param)))


def _prompt(start, n):
    ids = list(range(start, start + n))
    return prompts.Prompt(uncond=prompts.PromptRow(ids=ids), cond=prompts.PromptRow(ids=ids + [7, 8, 9]))


def _item(seed, start=10, n=20, frames=8, stop_at=None):
    cb = None
    if stop_at is not None:
        cb = lambda done, total: done < stop_at  # noqa: E731 - cancelled after stop_at frames
    return GenItem(prompt=_prompt(start, n), sampling=Sampling(cfg_scale=3.0, top_k=40, temperature=1.0),
                   max_frames=frames, min_frames=frames, seed=seed, callback=cb)


def _run(lm, static, joins):
    """Item A from step 0; ``joins``: {step: [items]} join later. Returns A's codes."""
    s = DecodeSession(lm, placeholder_id=501, static=static)
    with torch.inference_mode():
        (a,) = s.add([_item(11)])
        k = 0
        while any(st is a for st in s.active):
            for it in joins.get(k, []):
                s.add([it])
            s.step()
            k += 1
        s.close()
    res = s.result(a)
    assert not isinstance(res, BaseException), res
    return res.codes


@pytest.mark.parametrize("static", [False, True], ids=["eager", "static"])
def test_joined_and_cancelled_neighbours_change_nothing(lm, static):
    solo = _run(lm, static, {})
    joined = _run(lm, static, {2: [_item(12, start=40, n=33), _item(13, start=90, n=7, frames=30)],
                               3: [_item(14, start=200, n=50, stop_at=1)]})  # cancelled after 1 frame
    np.testing.assert_array_equal(joined, solo)
    again = _run(lm, static, {})
    np.testing.assert_array_equal(again, solo)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_decode_attention_ignores_padding_and_matches_sdpa(dtype):
    g = torch.Generator().manual_seed(0)
    rows, kvh, grp, d, n = 3, 2, 2, 32, 70
    q = torch.randn(rows, kvh, grp, d, generator=g).to(dtype)
    k = torch.randn(rows, kvh, n, d, generator=g).to(dtype)
    v = torch.randn(rows, kvh, n, d, generator=g).to(dtype)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), scale=d ** -0.5)
    base = invariant.decode_attention(q, k, v, None, d ** -0.5, "left")
    base_r = invariant.decode_attention(q, k, v, None, d ** -0.5, "right")  # other chunk boundaries
    torch.testing.assert_close(base.float(), ref, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(base_r.float(), ref, rtol=2e-2, atol=2e-2)
    for pad in (1, 58, 200):
        junk = torch.randn(rows, kvh, pad, d, generator=g).to(dtype)
        # static layout: keys from slot 0, capacity after
        kl, vl = torch.cat([k, junk], 2), torch.cat([v, junk], 2)
        ml = torch.zeros(rows, n + pad, dtype=torch.bool)
        ml[:, :n] = True
        assert torch.equal(invariant.decode_attention(q, kl, vl, ml, d ** -0.5, "left"), base)
        # eager layout: padding before, keys end at the last slot
        kr, vr = torch.cat([junk, k], 2), torch.cat([junk, v], 2)
        mr = torch.zeros(rows, n + pad, dtype=torch.bool)
        mr[:, pad:] = True
        assert torch.equal(invariant.decode_attention(q, kr, vr, mr, d ** -0.5, "right"), base_r)


def test_rowwise_rows_do_not_depend_on_neighbours():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(700, 96, generator=g).to(torch.bfloat16)
    x = torch.randn(40, 96, generator=g).to(torch.bfloat16)
    with invariant.batch_invariant():
        alone = invariant.linear(x[:1], w)
        for m in (2, 3, 9, 17, 40):
            mixed = invariant.linear(torch.cat([x[1:m], x[:1]]), w)
            assert torch.equal(mixed[-1], alone[0])
    assert not invariant.enabled()


def _per_pair(xs, w, offs):
    """A grouped matmul computing each (token, expert) pair alone: invariant by construction."""
    out, start = torch.zeros(xs.shape[0], w.shape[-1], dtype=xs.dtype), 0
    for e, end in enumerate(offs.tolist()):
        for r in range(start, end):
            out[r] = F.linear(xs[r:r + 1], w[e].t())[0]
        start = end
    return out


def _per_group(xs, w, offs):
    """One matmul per expert over its rows: a pair's bits follow how many rows share its expert."""
    out, start = torch.zeros(xs.shape[0], w.shape[-1], dtype=xs.dtype), 0
    for e, end in enumerate(offs.tolist()):
        if end > start:
            out[start:end] = xs[start:end] @ w[e]
        start = end
    return out


def test_grouped_matmul_invariance_is_measured_not_assumed():
    cpu = torch.device("cpu")
    for dtype in (torch.float32, torch.bfloat16):  # bf16: the cancelling inputs keep the order visible
        assert kernels.grouped_mm_invariant(cpu, dtype, 4, 64, 32, mm=_per_pair)
        assert not kernels.grouped_mm_invariant(cpu, dtype, 4, 64, 32, mm=_per_group)
    # the CPU build's torch._grouped_mm runs one matmul per group, like _per_group
    assert not kernels.grouped_mm_invariant(cpu, torch.float32, 4, 64, 32)


def test_chosen_experts_give_way_in_invariant_steps_unless_measured_invariant(monkeypatch):
    moe = random_model("tiny", seed=5, vision=False, lm_head=False).language_model.layers[0].mlp
    moe.path = "chosen"
    cpu = torch.device("cpu")
    assert moe.resolve_path(4, cpu, torch.float32) == "chosen"
    with invariant.batch_invariant():
        assert moe.resolve_path(4, cpu, torch.float32) == "all"  # measured: not invariant here
        monkeypatch.setattr(kernels, "grouped_mm_invariant", lambda *a, **k: True)
        assert moe.resolve_path(4, cpu, torch.float32) == "chosen"


def test_batch_invariant_setting_reaches_the_decode_sessions(tiny_model_dir, tmp_path, monkeypatch):
    """``batch_invariant`` (default on) from the settings table to the engine's decode sessions."""
    from unimoe_audio.client.settings import load_settings
    from unimoe_audio.daemon.model_host import ModelHost

    for env, want in ((None, True), ("0", False)):
        if env is not None:
            monkeypatch.setenv("UNIMOE_AUDIO_BATCH_INVARIANT", env)
        s = load_settings(home=tmp_path, model=str(tiny_model_dir), device="cpu", dtype="float32")
        assert s.batch_invariant is want
        host = ModelHost(s)
        host.ensure_loaded()
        try:
            assert host.engine.info["batch_invariant"] is want
            assert host.engine.session().invariant is want
            assert host.memory()["batch_invariant"] is want  # status's memory.batch_invariant
        finally:
            host.unload()
