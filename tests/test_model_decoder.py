"""Decoder mechanics: KV-cache decoding equals full forwards, row dropping, MoE routing against a
literal per-token implementation of spec section 4."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.moe import route
from unimoe_audio.model.rope_index import positions_from_mask
from unimoe_audio.model.tiny import random_model

BOS = 1026


@pytest.fixture(scope="module")
def model(model_fixture_dir):
    return load_model(model_fixture_dir, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def prompt(golden):
    return torch.from_numpy(golden["t2m_input_ids"]), torch.from_numpy(golden["t2m_attention_mask"])


def _frames(rows: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    f = torch.randint(0, 1024, (rows, n, 12), generator=g)
    f[:, 0] = BOS
    return f


def _full_forward(model, ids, mask, frames):
    """No cache: prompt + one placeholder per frame, frames scattered row-major."""
    rows, n = frames.shape[:2]
    ph = model.config.codec_placeholder_value
    ids2 = torch.cat([ids, torch.full((rows, n), ph)], 1)
    mask2 = torch.cat([mask, torch.ones(rows, n, dtype=mask.dtype)], 1)
    emb = model.embed(ids2, codec_frames=frames.reshape(-1, 12))
    return model(emb, positions_from_mask(mask2), attention_mask=mask2, logits="all").logits[:, -n:]


def _cached(model, ids, mask, frames, keep_after: int | None = None, keep_rows=None, capacity=None):
    rows, n = frames.shape[:2]
    cache = model.new_cache(rows, capacity or ids.shape[1] + n)
    out = model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
    assert out.logits.shape == (rows, 1, 12, 1027)
    n_real = mask.sum(-1)
    logits = []
    for s in range(n):
        if keep_after is not None and s == keep_after:
            cache.keep(keep_rows)
            n_real, frames = n_real[keep_rows], frames[keep_rows]
            logits = [lg[keep_rows] for lg in logits]
        out = model(model.embed_codec(frames[:, s:s + 1]), n_real[:, None], cache=cache, logits="last")
        n_real = n_real + 1
        logits.append(out.logits[:, 0])
    return torch.stack(logits, 1), cache


def test_cached_decode_equals_full_forward(model, prompt):
    ids, mask = prompt
    frames = _frames(ids.shape[0], 4)
    with torch.inference_mode():
        full = _full_forward(model, ids, mask, frames)
        step, cache = _cached(model, ids, mask, frames, capacity=8)  # also exercises cache growth
    assert cache.length == ids.shape[1] + 4 and cache.capacity >= cache.length
    np.testing.assert_allclose(step.numpy(), full.numpy(), atol=1e-5, rtol=1e-5)


def test_keep_rows_equals_running_those_rows_alone(model, prompt):
    ids, mask = prompt
    frames = _frames(4, 5, seed=1)
    keep = torch.tensor([3, 1])  # reorder too
    with torch.inference_mode():
        both, cache = _cached(model, ids, mask, frames, keep_after=2, keep_rows=keep)
        # the same rows alone, left padding trimmed to their own longest prompt
        sub_mask = mask[keep]
        first = int(sub_mask.any(0).int().argmax())
        alone = _full_forward(model, ids[keep][:, first:], sub_mask[:, first:], frames[keep])
    assert both.shape[0] == 2 and cache.rows == 2
    assert cache.length == ids.shape[1] - first + 5  # common padding was cut from the cache
    np.testing.assert_allclose(both.numpy(), alone.numpy(), atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_real_rows(model, prompt):
    ids, mask = prompt
    with torch.inference_mode():
        lone_len = int(mask[1].sum())
        lone = model(model.embed(ids[1:2, -lone_len:]), positions_from_mask(mask[1:2, -lone_len:]), logits="last")
        batch = model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, logits="last")
    np.testing.assert_allclose(batch.logits[1].numpy(), lone.logits[0].numpy(), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(batch.hidden).all()  # padded rows stay finite


# --- MoE routing against a literal per-token reading of spec 4.1 ----------------------------------------

def _route_literal(z: torch.Tensor, nd: int, top_p: float, eps: float):
    """Per token: top-p count, then k rounds of (max, band, softmax, gather, mask)."""
    T, slots = z.shape
    masks, weights, ks = [], [], []
    for t in range(T):
        s = z[t, :nd]
        p, _ = torch.sort(torch.softmax(s, -1), descending=True)
        k = int((~(p.cumsum(-1) >= top_p)).sum()) + 1
        ms = s.clone()
        m = torch.zeros_like(s)
        for _ in range(k):
            mx, j = ms.max(-1)
            factor = s.abs().clamp(min=mx.abs())
            out = ((mx - s) / factor) > (2 * eps)
            g = torch.softmax(ms.masked_fill(out, float("-inf")), -1)
            m[j] = m[j] + g[j]
            ms[j] = float("-inf")
        r = m / (m.sum() + 1e-6)
        sel = torch.ones(slots, dtype=torch.int32)
        sel[:nd] = (m > 0).to(torch.int32) if k else 0
        gl = torch.softmax(z[t].masked_fill(sel == 0, float("-inf")), -1)
        w = torch.cat([r * gl[:nd].sum(), gl[nd:]])
        masks.append(sel)
        weights.append(w)
        ks.append(k)
    return torch.tensor(ks), torch.stack(masks), torch.stack(weights)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vectorized_routing_equals_literal(dtype):
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(300, 11, generator=g) * 1.5).to(dtype)
    z[:40, 2] = z[:40, 5]  # exact ties
    z[40:80, 3] = z[40:80, 0] * 1.01  # near ties inside the 2 % band
    ks, masks, weights = _route_literal(z, 9, 0.7, 0.01)
    rt = route(z, 9, 0.7, 0.01)
    np.testing.assert_array_equal(rt.top_k.numpy(), ks.numpy())
    np.testing.assert_array_equal(rt.expert_mask.numpy(), masks.numpy())
    assert (rt.top_k > 1).any() and (rt.top_k >= 3).any()
    tol = 1e-6 if dtype == torch.float32 else 8e-3  # softmax sum order may differ by one bf16 ulp
    np.testing.assert_allclose(rt.weights.float().numpy(), weights.float().numpy(), atol=tol, rtol=tol)


def test_grouped_dispatch_equals_dense_mix():
    torch.manual_seed(0)
    m = random_model("tiny", seed=3, vision=False, lm_head=False)
    moe = m.language_model.layers[0].mlp
    x = torch.randn(37, m.hidden_size) * 3
    with torch.inference_mode():
        y, rt = moe(x, return_routing=True)
        nr = moe.num_routed
        dense = torch.stack([e(x) for e in moe.experts], 1)  # every expert on every token
        w = rt.weights[:, :nr] * rt.expert_mask[:, :nr]
        ref = torch.einsum("se,sem->sm", w, dense)
        for f, e in enumerate(moe.fixed_real_moe):
            ref = ref + e(x) * rt.weights[:, moe.num_dynamic + f].unsqueeze(-1)
    np.testing.assert_allclose(y.numpy(), ref.numpy(), atol=1e-6, rtol=1e-5)
    used = rt.expert_mask[:, :nr].sum(1)
    assert (used == 0).any() or (used >= 2).any()


def test_padded_tokens_get_no_dynamic_expert(model, prompt):
    ids, mask = prompt
    with torch.inference_mode():
        out = model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, logits="none",
                    output_routing=True)
    pads = (mask == 0).reshape(-1)
    assert pads.any() and out.logits is None
    for rt in out.routing:
        assert (rt.expert_mask[pads, :5] == 0).all() and (rt.expert_mask[:, 5:] == 1).all()
