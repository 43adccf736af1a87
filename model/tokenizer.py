"""The text tokenizer: Qwen2-style byte-level BPE with the audio special tokens (spec 7.1).

Loaded from the checkpoint folder (or its ``tokenizer/`` subfolder) with the ``tokenizers`` library:
``tokenizer.json`` when present, otherwise ``vocab.json`` + ``merges.txt`` plus the added tokens of
``tokenizer_config.json`` (``added_tokens_decoder``) and ``added_tokens.json``. Every special token
(``<|AUDIO_PLACEHOLDER|>``, ``<|MUSIC_START|>`` ...) must map to exactly one id; the ids must be the
ones the files declare, otherwise loading fails.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from .errors import CheckpointError

# Qwen2's pre-tokenization pattern (the slow tokenizer's regex; NFC normalisation before it).
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

AUDIO_TOKENS = ("<|AUDIO_PLACEHOLDER|>", "<|AUDIO_START|>", "<|AUDIO_END|>", "<|SPEECH_START|>", "<|SPEECH_END|>",
                "<|VOICE_PROMPT_START|>", "<|VOICE_PROMPT_END|>", "<|SPEECH_PROMPT_START|>", "<|SPEECH_PROMPT_END|>",
                "<|MUSIC_START|>", "<|MUSIC_END|>")
PAD_TOKEN = "<|endoftext|>"


def _fail(msg: str) -> CheckpointError:
    return CheckpointError(msg, field="tokenizer")


class TextTokenizer:
    """``encode`` / ``decode`` / ``batch`` over a ``tokenizers.Tokenizer``."""

    def __init__(self, tk, pad_token: str = PAD_TOKEN):
        self._tk = tk
        pad = tk.token_to_id(pad_token)
        if pad is None:
            raise _fail(f"pad token {pad_token} is not in the vocabulary")
        self.pad_id = int(pad)
        for t in AUDIO_TOKENS:
            ids = tk.encode(t, add_special_tokens=False).ids
            if len(ids) != 1:
                raise _fail(f"{t} must be a single token, got ids {ids}")

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size(with_added_tokens=True)

    def token_id(self, token: str) -> int:
        i = self._tk.token_to_id(token)
        if i is None:
            raise KeyError(token)
        return int(i)

    def encode(self, text: str) -> list[int]:
        return list(self._tk.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self._tk.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ``(ids, mask)`` long tensors [rows, L] (pads = ``pad_id``, mask 0)."""
        seqs = [self.encode(t) for t in texts]
        n = max((len(s) for s in seqs), default=0)
        ids = torch.full((len(seqs), n), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, n - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[i, n - len(s):] = 1
        return ids, mask


def _added_tokens(folder: Path) -> dict[int, tuple[str, bool]]:
    """id -> (content, special) from tokenizer_config.json and added_tokens.json."""
    out: dict[int, tuple[str, bool]] = {}
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        try:
            dec = json.loads(cfg.read_text()).get("added_tokens_decoder") or {}
        except ValueError as exc:
            raise _fail(f"{cfg}: bad json ({exc})") from exc
        for k, v in dec.items():
            out[int(k)] = (v["content"], bool(v.get("special", True)))
    added = folder / "added_tokens.json"
    if added.is_file():
        try:
            for content, i in json.loads(added.read_text()).items():
                prev = out.get(int(i))
                out[int(i)] = (content, prev[1] if prev else True)
        except ValueError as exc:
            raise _fail(f"{added}: bad json ({exc})") from exc
    return out


def build_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]):
    """A Qwen2-style byte-level BPE ``tokenizers.Tokenizer`` (no special tokens yet)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tk.decoder = decoders.ByteLevel()
    return tk


def read_merges(path: Path) -> list[tuple[str, str]]:
    merges = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line or line.startswith("#version"):
            continue
        a, _, b = line.partition(" ")
        merges.append((a, b))
    return merges


def load_tokenizer(path: str | Path) -> TextTokenizer:
    from tokenizers import AddedToken, Tokenizer

    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / n).is_file() for n in ("tokenizer.json", "vocab.json")) \
            and (folder / "tokenizer").is_dir():
        folder = folder / "tokenizer"
    if (folder / "tokenizer.json").is_file():
        try:
            return TextTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")))
        except Exception as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise _fail(f"{folder / 'tokenizer.json'}: unreadable ({exc})") from exc
    vocab_f, merges_f = folder / "vocab.json", folder / "merges.txt"
    if not (vocab_f.is_file() and merges_f.is_file()):
        raise _fail(f"no tokenizer.json or vocab.json + merges.txt in {folder}")
    try:
        vocab = json.loads(vocab_f.read_text(encoding="utf-8"))
        merges = read_merges(merges_f)
    except (OSError, ValueError) as exc:
        raise _fail(f"{folder}: unreadable tokenizer files ({exc})") from exc
    tk = build_bpe(vocab, merges)
    added = _added_tokens(folder)
    # add in id order: tokens outside vocab.json get the next free id, which must be the declared one
    for i in sorted(added):
        content, special = added[i]
        tk.add_special_tokens([AddedToken(content, special=True, normalized=False)]) if special else \
            tk.add_tokens([AddedToken(content, normalized=False)])
        got = tk.token_to_id(content)
        if got != i:
            raise _fail(f"added token {content} got id {got}, but the tokenizer files declare {i}")
    return TextTokenizer(tk)
