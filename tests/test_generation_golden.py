"""The generation loop on the golden fixture model: greedy runs reproduce the reference exactly;
batching, compaction, cfg 0, continuation, cancellation and seeds behave."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unimoe_audio.model import prompts
from unimoe_audio.model.errors import Cancelled
from unimoe_audio.model.generation import GenItem, Sampling, backend_for, generate

FIX = Path(__file__).parent / "fixtures" / "model"
PH, VID = 501, 492


@pytest.fixture(scope="module")
def lm():
    from unimoe_audio.model.checkpoint import load_model

    model = load_model(FIX, device="cpu", dtype=torch.float32)
    return backend_for(model)


def _gen(lm, items):
    with torch.inference_mode():
        return generate(lm, items, placeholder_id=PH, video_token_id=VID)


def _music_items(tok, captions, **kw):
    s = Sampling(cfg_scale=10.0, eos_factor=0.6, greedy=True)
    return [GenItem(prompt=prompts.build_music_prompt(tok, c), sampling=kw.get("sampling", s),
                    max_frames=kw.get("max_frames", 21), min_frames=kw.get("min_frames", 0), seed=kw.get("seed"))
            for c in captions]


def _check_against(res, golden, name, b):
    buf = golden[f"{name}_gen_dec_buffer"][b]
    np.testing.assert_array_equal(res.grid, buf)
    np.testing.assert_array_equal(res.grid[1:], golden[f"{name}_gen_codes_delayed"][b])
    pf = golden[f"{name}_gen_prefill_delayed"][b]
    np.testing.assert_array_equal(res.grid[:19][pf >= 0], pf[pf >= 0])
    assert res.length == int(golden[f"{name}_gen_lengths"][b])
    np.testing.assert_array_equal(res.codes, golden[f"{name}_gen_codes_reverted_{b}"])


def test_t2m_greedy_matches_reference(lm, tok, golden, meta):
    res = _gen(lm, _music_items(tok, meta["t2m"]["captions"]))
    for b, r in enumerate(res):
        _check_against(r, golden, "t2m", b)
        assert r.steps == 39 and not r.stopped_by_eos


def test_tts_greedy_matches_reference(lm, tok, golden, meta):
    p = prompts.build_speech_prompt(tok, meta["tts"]["transcription"], meta["tts"]["prompt_text"],
                                    golden["tts_prompt_codes"], placeholder_id=PH)
    it = GenItem(prompt=p, sampling=Sampling(cfg_scale=1.0, eos_factor=1.0, greedy=True), max_frames=21)
    (r,) = _gen(lm, [it])
    _check_against(r, golden, "tts", 0)


def test_video_reference_mode_is_caption_only(lm, tok, golden, meta):
    p = prompts.build_video_prompt(tok, meta["v2m"]["caption"])
    it = GenItem(prompt=p, sampling=Sampling(cfg_scale=10.0, eos_factor=0.6, greedy=True), max_frames=21)
    (r,) = _gen(lm, [it])
    _check_against(r, golden, "v2m_ref", 0)


def test_topk1_and_temperature0_equal_greedy(lm, tok, golden, meta):
    caps = meta["t2m"]["captions"]
    a = _gen(lm, _music_items(tok, caps, sampling=Sampling(cfg_scale=10.0, eos_factor=0.6, top_k=1), seed=3))
    b = _gen(lm, _music_items(tok, caps, sampling=Sampling(cfg_scale=10.0, eos_factor=0.6, temperature=0.0)))
    for i in range(2):
        np.testing.assert_array_equal(a[i].codes, golden[f"t2m_gen_codes_reverted_{i}"])
        np.testing.assert_array_equal(b[i].codes, golden[f"t2m_gen_codes_reverted_{i}"])


def test_batch_independence_compaction_and_lengths(lm, tok, meta):
    """A seeded sampled item gives the same codes alone and in a batch with items of other prompt
    lengths, other max lengths, cfg 0 (one row) and an early-finishing item (compacted away)."""
    cap = meta["t2m"]["captions"][0]
    s = Sampling(cfg_scale=3.0, eos_factor=0.6, temperature=1.0, top_k=45)
    mk = lambda c, **kw: GenItem(prompt=prompts.build_music_prompt(tok, c), **kw)  # noqa: E731
    solo = _gen(lm, [mk(cap, sampling=s, max_frames=24, min_frames=24, seed=11)])[0]
    batch = _gen(lm, [
        mk("short", sampling=Sampling(cfg_scale=0.0, greedy=True), max_frames=5, min_frames=5),
        mk(cap, sampling=s, max_frames=24, min_frames=24, seed=11),
        mk(meta["t2m"]["captions"][1] + " With a much longer caption than the others.", sampling=s,
           max_frames=12, seed=12),
    ])
    np.testing.assert_array_equal(batch[1].codes, solo.codes)
    assert solo.length == 24 and solo.seed == 11
    assert batch[0].length == 5 and batch[0].steps == 5 + 18
    assert batch[2].length <= 12
    # cfg 0 runs only the conditional row: same as the same item alone
    alone0 = _gen(lm, [mk("short", sampling=Sampling(cfg_scale=0.0, greedy=True), max_frames=5, min_frames=5)])[0]
    np.testing.assert_array_equal(batch[0].codes, alone0.codes)
    # another seed changes a sampled run
    other = _gen(lm, [mk(cap, sampling=s, max_frames=24, min_frames=24, seed=12)])[0]
    assert not np.array_equal(other.codes, solo.codes)


def test_min_frames_disables_eos_and_values_are_codes(lm, tok):
    s = Sampling(cfg_scale=10.0, eos_factor=50.0, temperature=1.0, top_k=45)  # eager EOS
    items = [GenItem(prompt=prompts.build_music_prompt(tok, "drums"), sampling=s, max_frames=30, min_frames=m,
                     seed=5) for m in (0, 20)]
    r = _gen(lm, items)
    assert r[1].length >= 20
    for x in r:
        assert x.codes.shape == (x.length, 12) and x.codes.min() >= 0 and x.codes.max() < 1024


def test_continuation_prefix_reproduces_the_run(lm, tok):
    """Greedy: re-running from the first 10 frames as a prefix gives the same next frames."""
    s = Sampling(cfg_scale=10.0, eos_factor=0.6, greedy=True)
    p = prompts.build_music_prompt(tok, "A calm piano melody with soft strings.")
    full = _gen(lm, [GenItem(prompt=p, sampling=s, max_frames=30, min_frames=30)])[0]
    cont = _gen(lm, [GenItem(prompt=p, sampling=s, max_frames=20, min_frames=20, prefix=full.codes[:10])])[0]
    assert cont.n_prefix == 10 and cont.length == 30
    np.testing.assert_array_equal(cont.codes, full.codes)
    np.testing.assert_array_equal(cont.new_codes, full.codes[10:])


def test_cancel_one_item_keeps_the_others(lm, tok, meta):
    s = Sampling(cfg_scale=10.0, eos_factor=0.6, greedy=True)
    seen = []

    def stop_at_3(done, total):
        seen.append((done, total))
        return False if len(seen) >= 3 else None

    items = _music_items(tok, meta["t2m"]["captions"])
    items[0].callback = stop_at_3
    res = _gen(lm, items)
    assert isinstance(res[0], Cancelled) and len(seen) == 3
    assert seen[0][1] == 21
    ref = _gen(lm, _music_items(tok, meta["t2m"]["captions"][1:]))[0]
    np.testing.assert_array_equal(res[1].codes, ref.codes)

    def boom(done, total):
        raise Cancelled("stop")

    items = _music_items(tok, meta["t2m"]["captions"][:1])
    items[0].callback = boom
    assert isinstance(_gen(lm, items)[0], Cancelled)


_SUBPROC = r"""
import json, torch
from unimoe_audio.model import prompts
from unimoe_audio.model.generation import GenItem, Sampling, backend_for, generate
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.engine import load_text_tokenizer
tok = load_text_tokenizer(__import__("pathlib").Path({fix!r}))
lm = backend_for(load_model({fix!r}, device="cpu", dtype=torch.float32))
it = GenItem(prompt=prompts.build_music_prompt(tok, "rain on a tin roof"),
             sampling=Sampling(cfg_scale=3.0, eos_factor=0.6), max_frames=16, min_frames=16, seed=1234)
with torch.inference_mode():
    r = generate(lm, [it], placeholder_id=501, video_token_id=492)[0]
print(json.dumps(r.codes.tolist()))
"""


def test_seeded_sampling_is_identical_across_processes(lm, tok):
    it = GenItem(prompt=prompts.build_music_prompt(tok, "rain on a tin roof"),
                 sampling=Sampling(cfg_scale=3.0, eos_factor=0.6), max_frames=16, min_frames=16, seed=1234)
    here = _gen(lm, [it])[0].codes
    code = _SUBPROC.format(fix=str(FIX))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    there = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    np.testing.assert_array_equal(there, here)
    assert len(np.unique(here)) > 5  # really sampled, not a constant


def test_vision_mode_prompt_features_and_positions_match_reference(tok, golden, meta):
    """Vision mode: video tokens + vision features + 3-D positions give the reference forward's logits."""
    from unimoe_audio.model.checkpoint import load_model
    from unimoe_audio.model.generation import _row_embeds
    from unimoe_audio.model.video_preprocess import preprocess_video

    lmv = backend_for(load_model(FIX, device="cpu", dtype=torch.float32, load_vision=True))
    lmv.vision_attention = "full"  # the fixture was made with the reference tower's full attention (D2)
    video = preprocess_video(golden["video_frames_uint8"], fps=1.0, min_pixels=784, max_pixels=16 * 784)
    p = prompts.build_video_prompt(tok, meta["v2m"]["caption"], video, video_pad_id=VID)
    with torch.inference_mode():
        rows = [_row_embeds(lmv, r, PH, VID) for r in (p.uncond, p.cond)]
        np.testing.assert_allclose(video.features.numpy(), golden["v2m_video_embeds"][:16], atol=1e-5, rtol=1e-5)
        fmask = golden["v2m_forward_attention_mask"]
        for b, (_, pos) in enumerate(rows):
            np.testing.assert_array_equal(pos.numpy(), golden["v2m_position_ids"][:, b, fmask[b] == 1][:, :-1])
        lens = torch.tensor([e.shape[0] for e, _ in rows])
        L = int(lens.max())
        emb = torch.zeros(2, L, rows[0][0].shape[1])
        pos = torch.ones(3, 2, L, dtype=torch.long)
        for b, (e, q) in enumerate(rows):
            emb[b, L - e.shape[0]:] = e
            pos[:, b, L - e.shape[0]:] = q
        _, cache = lmv.prefill(emb, pos, lens, extra=4)
        nxt = torch.stack([q.max() + 1 for _, q in rows]).view(1, 2, 1).expand(3, 2, 1)
        bos = lmv.embed_codec(torch.full((2, 1, 12), 1026))
        logits = lmv.step(cache, bos, nxt)
    np.testing.assert_allclose(logits.numpy(), golden["v2m_logits_last"], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(nxt[0, :, 0].numpy(), golden["v2m_position_ids"][0, :, -1])
