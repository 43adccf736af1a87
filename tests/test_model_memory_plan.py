"""What decoding keeps, counted before it happens: the decode plan (row cap, warm-up buckets) in the
estimate, the static decoder's bucket budget (least recently used released first), warm-up within
the budget, the row cap of a decode session (items past it wait their turn), the measured peak.

CPU only: the static buckets run their step eagerly (the code a CUDA graph captures); a stand-in
"capture" reruns it, as in test_generation_static.py."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from unimoe_audio.model import memory as M
from unimoe_audio.model import prompts
from unimoe_audio.model.checkpoint import to_disk_key
from unimoe_audio.model.config import ModelConfig, config_dict
from unimoe_audio.model.decoder import StaticBatch, StaticDecoder, UniMoEAudioModel, _weight_ptrs
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.generation import DecodeSession, GenItem, Sampling, backend_for, generate
from unimoe_audio.model.tiny import random_model

from test_generation_golden import FIX, PH, VID

pytestmark = pytest.mark.usefixtures("one_thread")
GIB_KV_PER_TOKEN_FULL = 2 * 36 * 2 * 128 * 2  # bytes of K and V per row and slot at full size, bf16


def _full_specs():
    cfg = config_dict("full")
    with torch.device("meta"):
        m = UniMoEAudioModel(ModelConfig.from_dict(cfg, source="full"), vision=False)
    return [(to_disk_key(n), "BF16", list(p.shape)) for n, p in m.named_parameters()], cfg


def _full(avail=None, **kw):
    specs, cfg = _full_specs()
    return M.estimate_specs(specs, cfg, stored="none", dtype=torch.bfloat16, quant=kw.pop("quant", "none"),
                            device="cuda", load_vision=False, dac_bytes=300_000_000, avail=avail, **kw)


def test_full_size_estimate_counts_every_warm_up_bucket():
    est = _full()
    plan = est.decode
    assert plan.static and plan.max_rows == 16
    assert plan.warm == [(r, L) for r in (2, 4, 8, 16) for L in (512, 1024, 2048)]
    d = M.Dims.from_config(config_dict("full"))
    assert d.kv_bytes(1, 1, 2) - 1 == GIB_KV_PER_TOKEN_FULL
    separate = sum(d.kv_bytes(r, L, 2) for r, L in plan.warm)
    assert separate > 3.9e9  # what 12 buckets with a KV cache each would keep (the "about 4 GB")
    # they share one arena of the largest shape instead: 16 rows x 2048 slots, 1.2 GB
    assert plan.arena == (16, 2048)
    arena = M.arena_bytes(d, 16, 2048, 2)
    assert 1.2e9 < arena < 1.22e9
    extras = sum(M.bucket_extra_bytes(d, r, L, 2) for r, L in plan.warm)
    assert est.parts["buckets"] == plan.bucket_bytes == arena + extras
    assert est.runtime_bytes >= arena + est.parts["codec"] + est.parts["framework"]
    assert est.total_bytes == est.weights_bytes + max(est.transient_bytes, est.runtime_bytes)


def test_a_smaller_card_gets_fewer_buckets_and_fewer_rows():
    big = _full()
    base = big.weights_bytes + 300_000_000 + int(M._RUNTIME_OVERHEAD["cuda"])
    d = M.Dims.from_config(config_dict("full"))
    plan = big.decode
    # room for the 16-row arena, the workspaces and the extras of only a few buckets
    core = M.arena_bytes(d, 16, 2048, 2) + M.bucket_extra_bytes(d, 16, 2048, 2) + M.bucket_extra_bytes(d, 8, 2048, 2)
    mid_avail = base + core + plan.workspace_bytes + plan.prefill_bytes + 3 * M.bucket_extra_bytes(d, 2, 2048, 2)
    mid = _full(avail=mid_avail)
    assert mid.decode.max_rows == 16 and 0 < len(mid.decode.warm) < len(big.decode.warm)
    assert mid.parts["buckets"] <= mid.decode.budget_bytes and mid.total_bytes <= mid_avail
    small = _full(avail=base + 400_000_000)
    assert small.decode.max_rows < 16
    assert all(r <= small.decode.max_rows for r, _ in small.decode.warm)
    # nothing left after the weights: the least a decode needs, and more than the card has
    none = _full(avail=base)
    assert none.decode.max_rows == 2 and none.total_bytes > base
    # int8 leaves more room for buckets on the same card
    q = _full(avail=base + 400_000_000, quant="int8")
    assert len(q.decode.warm) > len(small.decode.warm)


def test_eager_plan_counts_the_packed_cache_twice():
    specs, cfg = _full_specs()
    est = M.estimate_specs(specs, cfg, stored="none", dtype=torch.bfloat16, quant="none", device="cpu",
                           load_vision=False, dac_bytes=0)
    d = M.Dims.from_config(cfg)
    assert not est.decode.static and est.decode.warm == []
    assert est.parts["kv_cache"] == 2 * d.kv_bytes(16, M.KV_TOKENS, 2)


def _fake_capture(self):
    self._body()
    self.graph = types.SimpleNamespace(replay=self._body)
    self._weights = _weight_ptrs(self.model)
    self.captures += 1


def _step(b: StaticBatch) -> None:
    with torch.inference_mode():
        b.step(torch.zeros_like(b.emb), torch.zeros(b.rows, dtype=torch.long), torch.zeros(b.rows, dtype=torch.long))


def test_bucket_accounting_matches_what_a_bucket_holds(monkeypatch):
    monkeypatch.setattr(StaticBatch, "capture", _fake_capture)
    m = random_model("tiny", seed=0, vision=False, lm_head=False)
    dec = StaticDecoder(m, use_graph=True)
    d, wb = M.Dims.of(m.config), m.dtype.itemsize
    arena = M.arena_bytes(d, dec.arena_rows, dec.arena_slots, wb)
    assert dec.cost(2, 64) == arena + M.bucket_extra_bytes(d, 2, 64, wb)  # the first bucket makes the arena
    assert dec.warmup([(2, 64), (4, 128)]) == 2
    assert dec.arena_nbytes() == arena  # what the estimate's formula says the arena holds
    for key, b in dec.pool.items():
        _step(b)
        assert b.shared and b.nbytes() == dec.cost(*key), key  # a view adds its extras only
    assert dec.nbytes() == arena + dec.cost(2, 64) + dec.cost(4, 128)
    a, b = dec.pool[(2, 64)].cache, dec.pool[(4, 128)].cache
    assert a.shares_memory_with(b) and a.k.data_ptr() == b.k.data_ptr()  # one arena, not a cache each
    # a bucket past the arena has a cache of its own, counted whole
    big = dec.batch(dec.arena_rows * 2, 64)
    assert not big.shared and dec.cost(*dec.shape_for(dec.arena_rows * 2, 64)) == M.bucket_bytes(d, 32, 64, wb)


def test_warm_up_captures_only_what_fits_and_buckets_are_released_lru(monkeypatch):
    monkeypatch.setattr(StaticBatch, "capture", _fake_capture)
    m = random_model("tiny", seed=0, vision=False, lm_head=False)
    dec = StaticDecoder(m, use_graph=True)
    d, wb = M.Dims.of(m.config), m.dtype.itemsize
    dec.budget_bytes = M.arena_bytes(d, dec.arena_rows, dec.arena_slots, wb) + sum(
        M.bucket_extra_bytes(d, r, L, wb) for r, L in ((2, 64), (2, 128), (4, 64)))
    n = dec.warmup([(2, 64), (2, 128), (4, 1024), (4, 64)])
    assert n == 3 and sorted(dec.pool) == [(2, 64), (2, 128), (4, 64)]  # (4, 1024) did not fit
    assert dec.nbytes() <= dec.budget_bytes
    owner = object()
    held = dec.batch(2, 100, owner=owner)  # (2, 128), now the most recently used and held
    dec.batch(4, 50)  # (4, 64) used
    dec.batch(8, 64)  # needs room: (2, 64), least recently used, goes first
    assert (2, 64) not in dec.pool and (2, 128) in dec.pool and dec.evictions >= 1
    dec.batch(16, 1024)  # far past the budget: every idle bucket goes, the held one stays
    assert held is dec.pool[(2, 128)] and (16, 1024) in dec.pool
    assert all(k in ((2, 128), (16, 1024)) for k in dec.pool)
    dec.give_back(held, owner)
    st = dec.stats()
    assert st["budget_bytes"] == dec.budget_bytes and st["evictions"] == dec.evictions and st["buckets"]


@pytest.fixture(scope="module")
def tok():
    from unimoe_audio.model.engine import load_text_tokenizer

    return load_text_tokenizer(FIX)


def _items(tok, n):
    return [GenItem(prompt=prompts.build_music_prompt(tok, f"take {i}: strings and a slow pulse"),
                    sampling=Sampling(cfg_scale=3.0, temperature=1.0, top_k=45), max_frames=6 + i, seed=100 + i)
            for i in range(n)]


@pytest.mark.parametrize("static", [False, True])
def test_row_cap_runs_items_in_turns_with_the_same_codes(tok, static):
    """Five CFG items (10 rows) under a cap of 4 rows: never more than 4 rows step at once, the
    static buckets stay at 4 rows, and every item gets the codes it gets without the cap."""
    lm = backend_for(load_model(FIX, device="cpu", dtype=torch.float32))
    with torch.inference_mode():
        ref = generate(backend_for(load_model(FIX, device="cpu", dtype=torch.float32)), _items(tok, 5),
                       placeholder_id=PH, video_token_id=VID, static=static)
        sess = DecodeSession(lm, placeholder_id=PH, video_token_id=VID, static=static, max_rows=4)
        states = sess.add(_items(tok, 5))
        assert sess.n_rows == 4 and len(sess.waiting) == 3
        peak = 0
        while sess.active or sess.waiting:
            sess.step()
            peak = max(peak, sess.n_rows)
        got = [sess.result(st) for st in states]
    assert peak == 4
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.codes, b.codes)
    if static:
        assert max(r for r, _ in lm.static_decoder().pool) == 4


def test_engine_caps_rows_from_the_plan_and_status_reports_it(tmp_path):
    from unimoe_audio.model.engine import Engine
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    bundle = ensure_tiny_model(tmp_path / "tiny")
    eng = Engine.load(bundle, device="cpu", dtype="fp32")
    try:
        assert eng.max_rows == eng.info["max_rows"] == eng.decode_plan.max_rows == 16
        assert eng.session().max_rows == 16
        rep = eng.memory_report()
        assert rep["peak_bytes"] > 0 and rep["peak_source"].startswith("process peak RSS") and rep["max_rows"] == 16
    finally:
        eng.close()


def test_measured_peak_on_cpu_is_the_process_peak():
    peak, how = M.measured_peak("cpu")
    big = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB touched
    after, _ = M.measured_peak("cpu")
    assert how.startswith("process peak RSS") and after >= peak > 0 and after >= big.numel()


def test_buckets_share_one_arena_and_a_second_session_gets_a_cache_of_its_own():
    m = random_model("tiny", seed=0, vision=False, lm_head=False)
    dec = StaticDecoder(m, use_graph=False)
    first, second = object(), object()
    a = dec.batch(2, 64, owner=first)
    b = dec.batch(4, 128, owner=first)  # the same session moving up: the same memory, nothing copied
    assert a.shared and b.shared and a.cache.shares_memory_with(b.cache)
    c = dec.batch(2, 64, owner=second)  # another session while the first holds the arena
    assert not c.shared and not c.cache.shares_memory_with(a.cache) and dec.pool[(2, 64)] is a
    dec.give_back(a, first)
    dec.give_back(b, first)
    d = dec.batch(2, 64, owner=second)  # the arena is free again: the pooled view
    assert d is a and d.owner is second


def test_a_full_size_int8_and_int4_plan_fits_the_card_targets():
    # the targets (one H100, bf16 activations, full warm-up): <= 10 GB with int8, <= 7 GB with int4;
    # the estimate, not a measurement (no GPU lent): weights + the arena + prefill, codec, framework
    for quant, target in (("int8", 10e9), ("int4", 7e9)):
        est = _full(avail=80_000_000_000, quant=quant)
        assert len(est.decode.warm) == 12 and est.decode.max_rows == 16, quant
        assert est.total_bytes <= target, (quant, est.total_bytes)
