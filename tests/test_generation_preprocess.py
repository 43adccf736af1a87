"""Prompts, delayed voice-prompt codes, video preprocessing and text splitting against the golden fixture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from unimoe_audio.model import prompts, video_preprocess as vp
from unimoe_audio.model.generation import apply_delay, revert_delay
from unimoe_audio.model.text_split import sentences, split_text

FIX = Path(__file__).parent / "fixtures" / "model"


def _real(ids, mask):
    return [int(i) for i, m in zip(ids, mask) if m]


# --- prompt texts and ids ------------------------------------------------------------------------------

def test_music_prompt_texts_and_ids(golden, meta, tok):
    caps = meta["t2m"]["captions"]
    for b, cap in enumerate(caps):
        u, c = prompts.music_texts(cap)
        assert [u, c] == meta["t2m"]["texts"][2 * b: 2 * b + 2]
        p = prompts.build_music_prompt(tok, cap)
        assert p.uncond.ids == _real(golden["t2m_input_ids"][2 * b], golden["t2m_attention_mask"][2 * b])
        assert p.cond.ids == _real(golden["t2m_input_ids"][2 * b + 1], golden["t2m_attention_mask"][2 * b + 1])


def test_speech_prompt_ids_and_delayed_codes(golden, meta, tok):
    codes = golden["tts_prompt_codes"]
    d = prompts.delayed_prompt_codes(codes)
    np.testing.assert_array_equal(d, golden["tts_prompt_codec_preprocessed"])
    np.testing.assert_array_equal(np.concatenate([d, d]), golden["tts_codec_input_ids"])
    p = prompts.build_speech_prompt(tok, meta["tts"]["transcription"], meta["tts"]["prompt_text"], codes,
                                    placeholder_id=501)
    assert [p.uncond.text, p.cond.text] == meta["tts"]["texts"]
    assert p.uncond.ids == _real(golden["tts_input_ids"][0], golden["tts_attention_mask"][0])
    assert p.cond.ids == _real(golden["tts_input_ids"][1], golden["tts_attention_mask"][1])
    assert p.cond.ids.count(501) == d.shape[0] == 31


def test_video_prompts(golden, meta, tok):
    cap = meta["v2m"]["caption"]
    ref = prompts.build_video_prompt(tok, cap)
    assert ref.uncond.ids == _real(golden["v2m_ref_input_ids"][0], golden["v2m_ref_attention_mask"][0])
    assert ref.cond.ids == _real(golden["v2m_ref_input_ids"][1], golden["v2m_ref_attention_mask"][1])
    video = vp.preprocess_video(golden["video_frames_uint8"], fps=1.0, min_pixels=784, max_pixels=16 * 784)
    vis = prompts.build_video_prompt(tok, cap, video, video_pad_id=492)
    assert [vis.uncond.text, vis.cond.text] == meta["v2m"]["forward_texts"]
    assert vis.uncond.ids == _real(golden["v2m_input_ids"][0], golden["v2m_attention_mask"][0])
    assert vis.cond.ids == _real(golden["v2m_input_ids"][1], golden["v2m_attention_mask"][1])


def test_music_caption_extras_and_sanitize():
    assert prompts.music_caption("Calm piano") == "Calm piano"
    s = prompts.music_caption("Calm piano", tempo_bpm=92, key="D minor", bars=8)
    assert s == "Calm piano. Tempo 92 BPM. Key of D minor. 8 bars in 4/4."
    assert prompts.sanitize("a<|MUSIC_END|>b<|AUDIO_PLACEHOLDER|>") == "ab"


# --- delay grid ----------------------------------------------------------------------------------------

def test_delay_roundtrip():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1024, size=(30, 12))
    g = apply_delay(codes)
    assert (g[0] == prompts.CODEC_BOS).all()
    assert (g[: 9, 1] == prompts.CODEC_BOS).all() and g[9, 1] == codes[0, 1]
    np.testing.assert_array_equal(revert_delay(g, 30), codes)
    g2 = apply_delay(codes, rows=5)
    assert g2.shape == (5, 12) and g2[4, 0] == codes[3, 0] and g2[4, 1] == prompts.CODEC_BOS


# --- video preprocessing -------------------------------------------------------------------------------

def test_video_pixels_match_processor(golden):
    v = vp.preprocess_video(golden["video_frames_uint8"], fps=1.0, min_pixels=784, max_pixels=16 * 784)
    ref = golden["v2m_pixel_values_videos"]
    assert tuple(v.pixel_values.shape) == (64, 1176)
    np.testing.assert_allclose(v.pixel_values.numpy(), ref[:64], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(v.grid_thw.numpy()[0], golden["v2m_video_grid_thw"][0])
    assert v.second_per_grid_t == pytest.approx(float(golden["v2m_second_per_grid_ts"][0]))
    assert v.n_tokens == 16


def test_video_odd_frames_padded_and_resized():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(3, 90, 160, 3), dtype=np.uint8)
    v = vp.preprocess_video(frames, fps=2.0, min_pixels=784, max_pixels=56 * 112)
    t, h, w = v.grid
    assert t == 2 and h * 14 * w * 14 <= 56 * 112 and h % 2 == 0 and w % 2 == 0
    assert v.second_per_grid_t == 1.0
    assert v.pixel_values.shape == (t * h * w, 1176)
    # the padded frame pair repeats the last frame: time taps of the 2nd temporal patch are equal
    last = v.pixel_values[(t - 1) * h * w:].view(-1, 3, 2, 14, 14)
    assert torch.equal(last[:, :, 0], last[:, :, 1])


def test_smart_resize_reference_examples():
    assert vp.smart_resize(720, 1280, 28, 784, 4704) == (28, 84)  # spec 7.4 example
    assert vp.smart_resize(56, 56, 28, 784, 16 * 784) == (56, 56)
    h, w = vp.smart_resize(10, 10, 28, 784 * 4, 10**6)
    assert (h, w) == (56, 56)
    with pytest.raises(ValueError):
        vp.smart_resize(1, 500, 28, 784, 10**6)


# --- text splitting ------------------------------------------------------------------------------------

def test_sentences_and_split():
    assert sentences("Hello there. Dr. Smith went home!  Did he?Yes.") == [
        "Hello there.", "Dr. Smith went home!", "Did he?Yes."]
    chunks = split_text("One two three four five six seven, eight nine ten. Short. Also short.", 20)
    assert chunks == ["One two three four", "five six seven,", "eight nine ten.", "Short. Also short."]
    assert all(len(c) <= 20 for c in chunks)
    assert split_text("你好。我很好！谢谢", 5) == ["你好。", "我很好！", "谢谢"]
    assert split_text("   ") == []
    long_word = "x" * 25
    assert split_text(long_word, 10) == ["x" * 10, "x" * 10, "x" * 5]
