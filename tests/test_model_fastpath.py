"""The sync-free decode MoE path ("fast": every expert on every token via stacked weights) and the
production static decode step (``decode_rows.StaticRows`` on a ``StaticDecoder`` bucket) give the
grouped path's routing and logits (fp32, 1e-6), ties included.

Runs on CPU: the fast path is forced with ``moe_path``; the static step runs eagerly
(``use_graph=False``), which is the code a CUDA graph captures.
"""
from __future__ import annotations

import contextlib
import types

import numpy as np
import pytest
import torch

from unimoe_audio.model.decode_rows import StaticRows
from unimoe_audio.model.decoder import StaticBatch, StaticDecoder
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.generation import backend_for
from unimoe_audio.model.moe import SparseMoE, moe_path, route, set_moe_path
from unimoe_audio.model.rope_index import positions_from_mask
from unimoe_audio.model.tiny import random_model

ATOL = 1e-6


def _tied_model(seed: int = 3) -> torch.nn.Module:
    """Tiny random model whose routers produce exact and near ties: in every layer gate row 2 copies
    row 0 (exact tie) and row 3 is row 1 scaled by 1.005 (inside the 2 % band)."""
    m = random_model("tiny", seed=seed, vision=False, lm_head=False)
    with torch.no_grad():
        for layer in m.language_model.layers:
            w = layer.mlp.gate.weight
            w[2] = w[0]
            w[3] = w[1] * 1.005
    return m


def static_rows(model, cache, need: int):
    """The production static decode (StaticRows on a StaticDecoder bucket, graphs off) holding the
    rows of a prefilled ``cache``; returns (rows, row ids)."""
    rows = StaticRows(backend_for(model), StaticDecoder(model, use_graph=False))
    return rows, rows.add(cache, need)


def _decode(model, ids, mask, frames, path: str, keep_at: int | None = None, keep=None, static=False):
    """Prefill + one step per frame; returns stacked step logits and per-step routing of layer 0."""
    rows, n = frames.shape[:2]
    with torch.inference_mode(), moe_path(model, path):
        cache = model.new_cache(rows, ids.shape[1] + n)
        model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
        st, rid = static_rows(model, cache, n) if static else (None, None)
        n_real = mask.sum(-1)
        outs, routes = [], []
        for s in range(n):
            if keep_at is not None and s == keep_at:
                if st is not None:
                    st.remove([r for i, r in enumerate(rid) if i not in keep.tolist()])
                    rid = [rid[i] for i in keep.tolist()]
                else:
                    cache.keep(keep)
                n_real, frames = n_real[keep], frames[keep]
                outs = [o[keep] for o in outs]
            emb = model.embed_codec(frames[:, s:s + 1])
            if st is not None:
                lg = st.step(rid, emb, n_real)[:, None]
            else:
                out = model(emb, n_real[:, None], cache=cache, logits="last", output_routing=True)
                lg = out.logits
                routes.append(out.routing)
            outs.append(lg[:, 0])
            n_real = n_real + 1
    return torch.stack(outs, 1), routes, cache


def _prompt(rows: int = 4, L: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 479, (rows, L), generator=g)
    mask = torch.ones_like(ids)
    mask[0::2, : L // 3] = 0  # CFG-style: uncond rows shorter, left padding
    frames = torch.randint(0, 1024, (rows, 6, 12), generator=g)
    frames[:, 0] = 1026
    return ids.masked_fill(mask == 0, 479), mask, frames


@pytest.fixture(scope="module")
def tied():
    return _tied_model()


def test_router_really_ties(tied):
    x = torch.randn(64, tied.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        z = tied.language_model.layers[0].mlp.gate(x)
    assert (z[:, 2] == z[:, 0]).all()
    rt = route(z, tied.config.text.num_dynamic_slots, 0.7, 0.01)
    # some tokens pick both tied slots (the second with a multiplier from the band softmax)
    both = (rt.expert_mask[:, 0] == 1) & (rt.expert_mask[:, 2] == 1)
    assert both.any() and (rt.top_k >= 2).any()


@pytest.mark.parametrize("T", [1, 2, 8, 37])
def test_fast_block_equals_grouped_block(tied, T):
    moe = tied.language_model.layers[0].mlp
    x = torch.randn(T, tied.hidden_size, generator=torch.Generator().manual_seed(T)) * 3
    with torch.inference_mode():
        moe.path = "grouped"
        y_g, rt_g = moe(x, return_routing=True)
        moe.path = "fast"
        y_f, rt_f = moe(x, return_routing=True)
        del moe.path
    assert torch.equal(rt_g.expert_mask, rt_f.expert_mask) and torch.equal(rt_g.top_k, rt_f.top_k)
    assert torch.equal(rt_g.weights, rt_f.weights)
    np.testing.assert_allclose(y_f.numpy(), y_g.numpy(), atol=ATOL, rtol=0)


def test_fast_decode_equals_grouped_decode(tied):
    ids, mask, frames = _prompt()
    lg_g, rt_g, _ = _decode(tied, ids, mask, frames, "grouped")
    lg_f, rt_f, _ = _decode(tied, ids, mask, frames, "fast")
    for step_g, step_f in zip(rt_g, rt_f):
        for a, b in zip(step_g, step_f):
            assert torch.equal(a.expert_mask, b.expert_mask) and torch.equal(a.top_k, b.top_k)
    np.testing.assert_allclose(lg_f.numpy(), lg_g.numpy(), atol=ATOL, rtol=0)
    used = torch.stack([r.expert_mask[:, :4].sum(1) for step in rt_g for r in step])
    assert (used >= 2).any()  # multi-expert tokens, not only single picks


def test_fast_prefill_with_padding_equals_grouped_on_golden_model(model_fixture_dir, golden):
    """The golden fixture's prompts (padded: padded tokens get no dynamic slot) through both paths."""
    m = load_model(model_fixture_dir, device="cpu", dtype=torch.float32)
    g = golden
    for name in ("t2m", "tts"):
        ids = torch.from_numpy(g[f"{name}_forward_input_ids"])
        mask = torch.from_numpy(g[f"{name}_forward_attention_mask"])
        codec = torch.from_numpy(g[f"{name}_forward_codec_input_ids"])
        outs = {}
        with torch.inference_mode():
            emb = m.embed(ids, codec_frames=codec)
            for path in ("grouped", "fast"):
                with moe_path(m, path):
                    outs[path] = m(emb, positions_from_mask(mask), attention_mask=mask, logits="last",
                                   output_routing=True)
        for a, b in zip(outs["grouped"].routing, outs["fast"].routing):
            assert torch.equal(a.expert_mask, b.expert_mask)
        np.testing.assert_allclose(outs["fast"].logits.numpy(), outs["grouped"].logits.numpy(), atol=ATOL, rtol=0)
        np.testing.assert_allclose(outs["fast"].logits[:, 0].numpy(), g[f"{name}_logits_last"], atol=1e-5, rtol=1e-5)


def test_static_step_equals_eager_decode_with_rows_leaving(tied):
    ids, mask, frames = _prompt(seed=2)
    keep = torch.tensor([3, 0])
    ref, _, _ = _decode(tied, ids, mask, frames, "grouped", keep_at=3, keep=keep)
    got, _, _ = _decode(tied, ids, mask, frames, "grouped", keep_at=3, keep=keep, static=True)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=ATOL, rtol=0)


def test_unchosen_expert_overflow_does_not_leak():
    m = random_model("tiny", seed=5, vision=False, lm_head=False)
    moe = m.language_model.layers[0].mlp
    with torch.no_grad():
        moe.experts[1].down_proj.weight.fill_(3e38)  # this expert's output overflows to inf
        moe.gate.weight[1] = -moe.gate.weight.abs().sum(0) * 50  # and, x being positive, never chosen
    x = torch.randn(6, m.hidden_size, generator=torch.Generator().manual_seed(0)).abs() + 0.1
    with torch.inference_mode():
        moe.path = "fast"
        y, rt = moe(x, return_routing=True)
        moe.path = "grouped"
        y_g = moe(x)
    assert (rt.expert_mask[:, 1] == 0).all()
    assert torch.isfinite(y).all()
    np.testing.assert_allclose(y.numpy(), y_g.numpy(), atol=ATOL, rtol=0)


def test_stacking_shares_storage_keeps_names_and_survives_to():
    m = random_model("tiny", seed=1, vision=False, lm_head=False)
    names = {k: v.shape for k, v in m.state_dict().items()}
    before = {k: v.clone() for k, v in m.state_dict().items()}
    moe = m.language_model.layers[1].mlp
    x = torch.randn(3, m.hidden_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        moe.path = "fast"
        y1 = moe(x)
    routed, shared = moe.stacked()
    # the experts' weights are now slices of the stacked tensors, values unchanged
    assert moe.experts[2].up_proj.weight.untyped_storage().data_ptr() == routed.gate_up.untyped_storage().data_ptr()
    assert moe.fixed_real_moe[1].down_proj.weight.untyped_storage().data_ptr() == shared.down.untyped_storage().data_ptr()
    assert {k: v.shape for k, v in m.state_dict().items()} == names
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    # in-place updates (load_state_dict copies) reach the stacked weights
    with torch.no_grad():
        moe.experts[0].gate_proj.weight.mul_(2)
    assert torch.equal(routed.gate_up[0, : routed.inner], moe.experts[0].gate_proj.weight)
    # .to() gives parameters their own storage: the stack is dropped and made again
    m64 = m.to(torch.float64)
    with torch.inference_mode():
        y2 = moe(x.double())
        moe.path = "grouped"
        y3 = moe(x.double())
    assert moe.stacked()[0].gate_up.dtype == torch.float64 and m64 is m
    np.testing.assert_allclose(y2.numpy(), y3.numpy(), atol=1e-12, rtol=0)
    assert y1.shape == y2.shape


def test_path_switches():
    m = random_model("tiny", seed=0, vision=False, lm_head=False)
    mods = [x for x in m.modules() if isinstance(x, SparseMoE)]
    assert all(x.path == "auto" for x in mods)
    # "auto" on the CPU is the grouped path (host sync is free there); off the CPU a decode is sync-free
    ids, mask, frames = _prompt(rows=2)
    _decode(m, ids, mask, frames[:, :2], "auto")
    assert mods[0].resolve_path(2, torch.device("cpu"), torch.float32) == "grouped"
    assert not mods[0].use_fast(2, torch.device("cpu")) and mods[0].use_fast(2, torch.device("meta"))
    # "fast" off CUDA-bf16-sm90 has no sync-free grouped mm: every expert ("all")
    assert mods[0].resolve_path(2, torch.device("meta"), torch.float32) == "all"
    with moe_path(m, "chosen"):
        assert mods[0].resolve_path(2, torch.device("cpu"), torch.float32) == "chosen"
    assert not mods[0].use_fast(mods[0].fast_max_tokens + 1, torch.device("meta"))
    with moe_path(m, "fast"):
        assert all(x.path == "fast" for x in mods)
    assert all(x.path == "auto" and "path" not in x.__dict__ for x in mods)
    assert set_moe_path(m, "grouped") == "auto" and set_moe_path(m, "auto") == "grouped"
    with pytest.raises(ValueError):
        set_moe_path(m, "dense")


@pytest.mark.parametrize("T", [1, 2, 8, 37])
def test_chosen_experts_block_equals_grouped_block(tied, T):
    """The chosen-experts path (grouped matmul over the chosen experts only, static shapes) gives the
    grouped path's output; so does the every-expert path."""
    moe = tied.language_model.layers[1].mlp
    x = torch.randn(T, tied.hidden_size, generator=torch.Generator().manual_seed(10 + T)) * 3
    outs = {}
    with torch.inference_mode():
        for p in ("grouped", "chosen", "all"):
            moe.path = p
            outs[p] = moe(x)
        del moe.path
    for p in ("chosen", "all"):
        np.testing.assert_allclose(outs[p].numpy(), outs["grouped"].numpy(), atol=ATOL, rtol=0)


def test_chosen_experts_decode_equals_grouped_decode(tied):
    ids, mask, frames = _prompt(seed=3)
    lg_g, _, _ = _decode(tied, ids, mask, frames, "grouped")
    lg_c, _, _ = _decode(tied, ids, mask, frames, "chosen")
    np.testing.assert_allclose(lg_c.numpy(), lg_g.numpy(), atol=ATOL, rtol=0)


def test_chosen_experts_reads_only_chosen_experts():
    """An unchosen expert whose weights overflow (inf) never reaches the output: its weights are not
    multiplied at all (the every-expert path multiplies and masks them)."""
    m = random_model("tiny", seed=5, vision=False, lm_head=False)
    moe = m.language_model.layers[0].mlp
    with torch.no_grad():
        moe.experts[1].down_proj.weight.fill_(float("nan"))
        moe.gate.weight[1] = -moe.gate.weight.abs().sum(0) * 50
    x = torch.randn(5, m.hidden_size, generator=torch.Generator().manual_seed(0)).abs() + 0.1
    with torch.inference_mode():
        moe.path = "chosen"
        y, rt = moe(x, return_routing=True)
        moe.path = "grouped"
        y_g = moe(x)
    assert (rt.expert_mask[:, 1] == 0).all() and torch.isfinite(y).all()
    np.testing.assert_allclose(y.numpy(), y_g.numpy(), atol=ATOL, rtol=0)


def _fake_capture(self):
    """A StaticBatch "capture" without CUDA: warm-up, and a replay that reruns the static body
    (what a real graph replays)."""
    self._body()
    self._captured(types.SimpleNamespace(replay=self._body))


def test_static_batch_captures_once_and_again_after_weight_moves(monkeypatch):
    monkeypatch.setattr(StaticBatch, "capture", _fake_capture)
    m = _tied_model(seed=7)
    ids, mask, frames = _prompt(seed=4)
    ref, _, _ = _decode(m, ids, mask, frames, "grouped")
    with torch.inference_mode():
        cache = m.new_cache(4, ids.shape[1] + 6)
        m(m.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
        rows = StaticRows(backend_for(m), StaticDecoder(m, use_graph=True))
        rid = rows.add(cache, 6)
        n_real, outs = mask.sum(-1), []
        for s in range(6):
            if s == 3:
                assert rows.batch.captures == 1  # steps 0-2 replay one capture
                with torch.no_grad(), torch.inference_mode(False):  # weights replaced, same values
                    w = m.language_model.layers[0].mlp.experts[0].gate_proj.weight
                    w.data = w.data.clone()
            outs.append(rows.step(rid, m.embed_codec(frames[:, s:s + 1]), n_real))
            n_real = n_real + 1
    assert rows.batch.captures == 2
    np.testing.assert_allclose(torch.stack(outs, 1).numpy(), ref.numpy(), atol=ATOL, rtol=0)


def test_sdpa_context_policy():
    from unimoe_audio.model import layers

    assert isinstance(layers.sdpa_context(torch.device("cpu"), 1), contextlib.nullcontext)
    if layers._sdpa_kernel is not None:
        assert not isinstance(layers.sdpa_context(torch.device("cuda"), 1), contextlib.nullcontext)
        assert isinstance(layers.sdpa_context(torch.device("cuda"), 7), contextlib.nullcontext)


def test_fused_projections_equal_unfused(tied):
    """Gate+up fused, both shared experts batched and q/k/v as one matmul give the per-Linear result."""
    from unimoe_audio.model import layers as L
    from unimoe_audio.model import moe as M

    ids, mask, frames = _prompt(seed=5)
    fused, _, _ = _decode(tied, ids, mask, frames, "grouped")
    M.FUSED = L.FUSE_QKV = False
    try:
        plain, _, _ = _decode(tied, ids, mask, frames, "grouped")
    finally:
        M.FUSED = L.FUSE_QKV = True
    np.testing.assert_allclose(fused.numpy(), plain.numpy(), atol=ATOL, rtol=0)
