"""The tokenizer reproduces the reference's ids (slow Qwen2Tokenizer) on the golden prompts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from unimoe_audio.model.errors import CheckpointError
from unimoe_audio.model.tokenizer import AUDIO_TOKENS, load_tokenizer
from unimoe_audio.model.tiny import SPECIAL_TOKENS, make_tiny_checkpoint


@pytest.fixture(scope="module")
def tok(model_fixture_dir):
    return load_tokenizer(model_fixture_dir / "tokenizer")


@pytest.mark.parametrize("name,key", [("t2m", ("t2m", "texts")), ("tts", ("tts", "texts")),
                                      ("v2m", ("v2m", "forward_texts")), ("v2m_ref", ("v2m", "reference_template_texts"))])
def test_ids_equal_golden(tok, meta, model_fixture_dir, name, key):
    g = np.load(model_fixture_dir / "golden.npz")
    ids, mask = tok.batch(meta[key[0]][key[1]])
    np.testing.assert_array_equal(ids.numpy(), g[f"{name}_input_ids"])
    np.testing.assert_array_equal(mask.numpy(), g[f"{name}_attention_mask"])


def test_special_tokens_are_single_ids(tok, meta):
    for t, i in meta["special_token_ids"].items():
        assert tok.encode(t) == [i], t
    ph = meta["special_token_ids"]["<|AUDIO_PLACEHOLDER|>"]
    assert tok.encode("<|AUDIO_PLACEHOLDER|>" * 500) == [ph] * 500
    assert tok.pad_id == meta["special_token_ids"]["<|endoftext|>"]


def test_left_padding(tok):
    ids, mask = tok.batch(["a", "a longer text here"])
    assert mask[0, 0] == 0 and mask[0, -1] == 1 and ids[0, 0] == tok.pad_id
    assert tok.decode(ids[1].tolist()) == "a longer text here"


def test_tiny_checkpoint_tokenizer(tmp_path):
    d = make_tiny_checkpoint(tmp_path / "t", size="tiny")
    tk = load_tokenizer(d)
    assert tk.vocab_size == 512
    for i, t in enumerate(SPECIAL_TOKENS):
        assert tk.encode(t) == [479 + i]
    assert set(AUDIO_TOKENS) <= set(SPECIAL_TOKENS)
    text = "Hello world, café – 42!"
    assert tk.decode(tk.encode(text)) == text
    assert max(tk.encode(text)) < 479


def test_bad_tokenizer_folder(tmp_path):
    with pytest.raises(CheckpointError):
        load_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text(json.dumps({"a": 0}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(CheckpointError, match="pad token"):
        load_tokenizer(tmp_path)
