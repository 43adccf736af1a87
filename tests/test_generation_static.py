"""Bucketed static-shape decode and continuous batching, on the golden fixture model (fp32, CPU).

* the static path (row buckets, a preallocated KV cache per bucket, one slot per row, finished rows
  masked) gives the reference's greedy codes exactly, like the eager path;
* its batches are pooled per (rows, slots) bucket and (with graphs) captured once, then reused;
* items joining a running :class:`DecodeSession` get the codes they get alone (seeded sampling),
  and so do the others; cancelling a joined item changes nothing for the rest.

On the CPU the static step runs eagerly (``use_graph=False``): the code a CUDA graph captures.
Capture bookkeeping is checked with a stand-in whose "replay" reruns that same static body.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from unimoe_audio.model import prompts
from unimoe_audio.model.decoder import StaticBatch, length_bucket, row_bucket
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.errors import Cancelled
from unimoe_audio.model.generation import DecodeSession, GenItem, Sampling, backend_for, generate

from test_generation_golden import FIX, PH, VID, _check_against, _music_items


@pytest.fixture
def lm():
    # a fresh model per test: its StaticDecoder pool starts empty
    return backend_for(load_model(FIX, device="cpu", dtype=torch.float32))


def _gen(lm, items, static):
    with torch.inference_mode():
        return generate(lm, items, placeholder_id=PH, video_token_id=VID, static=static)


def _session(lm, static):
    return DecodeSession(lm, placeholder_id=PH, video_token_id=VID, static=static)


SAMPLED = Sampling(cfg_scale=3.0, eos_factor=0.6, temperature=1.0, top_k=45)


def _item(tok, caption, **kw):
    kw.setdefault("sampling", SAMPLED)
    return GenItem(prompt=prompts.build_music_prompt(tok, caption), **kw)


def test_buckets():
    assert [row_bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 16, 17, 33)] == [2, 2, 4, 4, 8, 8, 16, 16, 32, 48]
    assert [length_bucket(n) for n in (1, 64, 65, 1000, 1025)] == [64, 64, 128, 1024, 2048]


def test_static_decode_equals_reference_and_eager(lm, tok, golden, meta):
    """Greedy, fp32: the bucketed static step gives the golden codes, as the eager path does."""
    items = _music_items(tok, meta["t2m"]["captions"])
    static = _gen(lm, items, True)
    eager = _gen(lm, _music_items(tok, meta["t2m"]["captions"]), False)
    for b in range(2):
        _check_against(static[b], golden, "t2m", b)
        np.testing.assert_array_equal(static[b].grid, eager[b].grid)
    p = prompts.build_speech_prompt(tok, meta["tts"]["transcription"], meta["tts"]["prompt_text"],
                                    golden["tts_prompt_codes"], placeholder_id=PH)
    (r,) = _gen(lm, [GenItem(prompt=p, sampling=Sampling(cfg_scale=1.0, eos_factor=1.0, greedy=True),
                             max_frames=21)], True)
    _check_against(r, golden, "tts", 0)
    p = prompts.build_video_prompt(tok, meta["v2m"]["caption"])
    (r,) = _gen(lm, [GenItem(prompt=p, sampling=Sampling(cfg_scale=10.0, eos_factor=0.6, greedy=True),
                             max_frames=21)], True)
    _check_against(r, golden, "v2m_ref", 0)
    # the two CFG items used 4 rows: one pooled batch of 4 rows; the single items one of 2
    pool = lm.static_decoder().pool
    assert {k[0] for k in pool} == {2, 4}
    assert all(b.owner is None for b in pool.values())  # every session gave its batch back


def test_static_continuation_and_mixed_batch_equal_eager(lm, tok, meta):
    """Prefix frames, cfg 0 (one row), other prompt lengths and an early finish: same codes as eager."""
    cap = meta["t2m"]["captions"][0]
    full = _gen(lm, [_item(tok, cap, sampling=Sampling(cfg_scale=10.0, greedy=True), max_frames=30,
                           min_frames=30)], True)[0]
    mk = lambda: [  # noqa: E731
        _item(tok, "short", sampling=Sampling(cfg_scale=0.0, greedy=True), max_frames=5, min_frames=5),
        _item(tok, cap, max_frames=24, min_frames=24, seed=11),
        _item(tok, cap, sampling=Sampling(cfg_scale=10.0, greedy=True), max_frames=20, min_frames=20,
              prefix=full.codes[:10]),
        _item(tok, meta["t2m"]["captions"][1] + " A much longer caption than the others.", max_frames=12, seed=12),
    ]
    s, e = _gen(lm, mk(), True), _gen(lm, mk(), False)
    for a, b in zip(s, e):
        np.testing.assert_array_equal(a.codes, b.codes)
        assert a.steps == b.steps
    np.testing.assert_array_equal(s[2].codes, full.codes)
    assert s[0].length == 5 and s[0].steps == 5 + 18


def test_finished_rows_are_masked_and_batches_reused(lm, tok, meta, monkeypatch):
    """A finished item's rows are freed in place (same batch, no move) while the rest fit the bucket;
    a second generation of the same shape reuses the pooled batch and its one capture."""

    def fake_capture(self):  # what a CUDA graph would replay: the static body
        self._body()
        self._captured(types.SimpleNamespace(replay=self._body))

    monkeypatch.setattr(StaticBatch, "capture", fake_capture)
    dec = lm.static_decoder()
    dec.use_graph = True  # batches made from now on "capture"
    caps = meta["t2m"]["captions"]

    def items():
        return [_item(tok, caps[0], max_frames=20, min_frames=20, seed=1),
                _item(tok, caps[1], max_frames=20, min_frames=20, seed=2),
                _item(tok, "drums", max_frames=20, min_frames=20, seed=3),
                _item(tok, "bells", sampling=Sampling(cfg_scale=0.0, greedy=True), max_frames=2, min_frames=2)]

    ref = _gen(lm, items(), False)
    with torch.inference_mode():
        sess = _session(lm, True)
        sess.add(items())
        assert sess.n_rows == 7
        batch, moves = sess.rows.batch, sess.rows.moves
        assert batch.rows == 8
        seen_done = []
        while sess.active:
            before = dict(sess.rows.phys)
            done = sess.step()
            seen_done += done
            if done and sess.active:
                assert sess.rows.batch is batch and sess.rows.moves == moves  # masked, not compacted
                freed = [before[r] for st in done for r in st.rows]
                assert freed and not batch.cache.valid[freed].any()
                assert not set(freed) & set(sess.rows.phys.values())
        got = [sess.result(st) for st in sorted(seen_done, key=lambda st: st.index)]
        sess.close()
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.codes, b.codes)
    assert batch.captures == 1
    _gen(lm, items(), True)
    assert batch.captures == 1 and dec.captures == sum(b.captures for b in dec.pool.values())
    assert len(dec.pool) == 1  # the same (8 rows, slots) batch served both generations


@pytest.mark.parametrize("static", [True, False])
def test_joined_items_equal_solo_runs(lm, tok, meta, static):
    """A long item runs; others join after 7 and 15 steps (a longer one forces more KV slots, more
    rows a bigger bucket); every item's seeded codes equal its solo run, the long one's too."""
    caps = meta["t2m"]["captions"]
    mk = [lambda: _item(tok, caps[0], max_frames=40, min_frames=40, seed=21),
          lambda: _item(tok, caps[1] + " Joined later, with a longer prompt.", max_frames=60, min_frames=60, seed=22),
          lambda: _item(tok, "short one", max_frames=6, min_frames=6, seed=23),
          lambda: _item(tok, "no cfg", sampling=Sampling(cfg_scale=0.0, temperature=0.9, top_k=20), max_frames=10,
                        min_frames=10, seed=24)]
    solo = [_gen(lm, [f()], static)[0] for f in mk]
    with torch.inference_mode():
        sess = _session(lm, static)
        handles = sess.add([mk[0]()])
        for _ in range(7):
            sess.step()
        handles += sess.add([mk[1](), mk[2]()])
        rows_after_join = sess.n_rows
        for _ in range(8):
            sess.step()
        handles += sess.add([mk[3]()])
        while sess.active:
            sess.step()
        got = [sess.result(h) for h in handles]
        sess.close()
    assert rows_after_join == 6
    for a, b in zip(got, solo):
        np.testing.assert_array_equal(a.codes, b.codes)
        assert a.steps == b.steps
    if static:
        assert sess.rows.moves >= 3  # grew for the join, shrank as items left


@pytest.mark.parametrize("static", [True, False])
def test_cancel_of_a_joined_item_leaves_the_others_unchanged(lm, tok, meta, static):
    caps = meta["t2m"]["captions"]
    a = lambda: _item(tok, caps[0], max_frames=30, min_frames=30, seed=31)  # noqa: E731
    c = lambda: _item(tok, "after", max_frames=12, min_frames=12, seed=33)  # noqa: E731
    calls = []

    def stop_after_5(done, total):
        calls.append(done)
        return False if len(calls) >= 5 else None

    solo_a, solo_c = _gen(lm, [a()], static)[0], _gen(lm, [c()], static)[0]
    with torch.inference_mode():
        sess = _session(lm, static)
        ha = sess.add([a()])
        for _ in range(4):
            sess.step()
        hb = sess.add([_item(tok, caps[1], max_frames=30, min_frames=30, seed=32, callback=stop_after_5)])
        sess.step()
        hc = sess.add([c()])
        while sess.active:
            sess.step()
        ra, rb, rc = (sess.result(h[0]) for h in (ha, hb, hc))
        sess.close()
    assert isinstance(rb, Cancelled) and len(calls) == 5
    np.testing.assert_array_equal(ra.codes, solo_a.codes)
    np.testing.assert_array_equal(rc.codes, solo_c.codes)
