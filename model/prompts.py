"""Prompt templates and prompt building (spec section 7).

Every prompt is ``SYS + USER(x) + "<|AUDIO_START|>"``; audio frames follow it. Generation runs CFG on
row pairs [uncond, cond]:

| task | cond x | uncond x |
| --- | --- | --- |
| music (t2m) | ``<|MUSIC_START|>{caption}<|MUSIC_END|>`` | ``<|MUSIC_START|>Low quality.<|MUSIC_END|>`` |
| speech (tts) | ``P<|SPEECH_START|>{text}<|SPEECH_END|>`` | ``P<|SPEECH_START|><|SPEECH_END|>`` |
| video, "reference" mode | as music (the published code never shows the video: defect D1) | as music |
| video, "vision" mode | ``<|vision_start|>`` + N x ``<|video_pad|>`` + ``<|vision_end|>`` before the music x, both rows | same |

with ``P = <|SPEECH_PROMPT_START|>{transcript}<|SPEECH_PROMPT_END|><|VOICE_PROMPT_START|>`` +
``<|AUDIO_PLACEHOLDER|>`` x (T_ref + 19) + ``<|VOICE_PROMPT_END|>``. The placeholders receive the
delayed voice-prompt frames (:func:`delayed_prompt_codes`).

The tokenizer is anything with ``encode(text) -> list[int]`` that maps the special token strings to
their single ids (the model-core tokenizer does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

SYS = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
USER_OPEN = "<|im_start|>user\n"
USER_CLOSE = "<|im_end|>\n<|im_start|>assistant\n"
AUDIO_START = "<|AUDIO_START|>"
PLACEHOLDER = "<|AUDIO_PLACEHOLDER|>"
MUSIC_START, MUSIC_END = "<|MUSIC_START|>", "<|MUSIC_END|>"
SPEECH_START, SPEECH_END = "<|SPEECH_START|>", "<|SPEECH_END|>"
VOICE_START, VOICE_END = "<|VOICE_PROMPT_START|>", "<|VOICE_PROMPT_END|>"
SPEECH_PROMPT_START, SPEECH_PROMPT_END = "<|SPEECH_PROMPT_START|>", "<|SPEECH_PROMPT_END|>"
VISION_START, VISION_END, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|video_pad|>"
NEGATIVE_MUSIC = "Low quality."

# Codec layout (spec section 1); the model config carries the same values.
NUM_CODEBOOKS = 12
DELAY_PATTERN = (0, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18)
MAX_DELAY = max(DELAY_PATTERN)
CODEC_EOS, CODEC_PAD, CODEC_BOS = 1024, 1025, 1026

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", VISION_START, VISION_END, VIDEO_PAD, PLACEHOLDER,
    AUDIO_START, "<|AUDIO_END|>", SPEECH_START, SPEECH_END, VOICE_START, VOICE_END, SPEECH_PROMPT_START,
    SPEECH_PROMPT_END, MUSIC_START, MUSIC_END,
)


class TextEncoder(Protocol):
    def encode(self, text: str) -> list[int]: ...


def wrap(x: str) -> str:
    """The full prompt text around a user message ``x``."""
    return SYS + USER_OPEN + x + USER_CLOSE + AUDIO_START


def sanitize(text: str) -> str:
    """User text must not smuggle in special tokens (they would shift placeholders or vision tokens)."""
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, "")
    return text.strip()


# --- text of each task ---------------------------------------------------------------------------------

def music_caption(caption: str, tempo_bpm: float | None = None, key: str | None = None,
                  bars: int | None = None, time_signature: str = "4/4") -> str:
    """Fold the optional musical extras into the caption text."""
    text = sanitize(caption)
    extras = []
    if tempo_bpm is not None:
        extras.append(f"Tempo {float(tempo_bpm):g} BPM.")
    if key:
        extras.append(f"Key of {sanitize(key)}.")
    if bars is not None:
        extras.append(f"{int(bars)} bars in {time_signature}.")
    if extras:
        if text and text[-1] not in ".!?":
            text += "."
        text = " ".join([text] + extras) if text else " ".join(extras)
    return text


def music_texts(caption: str) -> tuple[str, str]:
    """(uncond, cond) prompt texts for text-to-music (and reference-mode video scoring)."""
    return (wrap(MUSIC_START + NEGATIVE_MUSIC + MUSIC_END), wrap(MUSIC_START + caption + MUSIC_END))


def video_block(n_tokens: int) -> str:
    return VISION_START + VIDEO_PAD * n_tokens + VISION_END


def vision_music_texts(caption: str, n_video_tokens: int) -> tuple[str, str]:
    """(uncond, cond) for "vision" mode: the video block before <|MUSIC_START|> in both rows."""
    v = video_block(n_video_tokens)
    return (wrap(v + MUSIC_START + NEGATIVE_MUSIC + MUSIC_END), wrap(v + MUSIC_START + caption + MUSIC_END))


def voice_prefix(transcript: str, n_prompt_rows: int) -> str:
    return (SPEECH_PROMPT_START + transcript + SPEECH_PROMPT_END + VOICE_START + PLACEHOLDER * n_prompt_rows
            + VOICE_END)


def speech_texts(text: str, transcript: str, n_prompt_frames: int) -> tuple[str, str]:
    """(uncond, cond) for TTS with a voice prompt of ``n_prompt_frames`` codec frames."""
    p = voice_prefix(transcript, n_prompt_frames + MAX_DELAY + 1)
    return (wrap(p + SPEECH_START + SPEECH_END), wrap(p + SPEECH_START + text + SPEECH_END))


# --- codec helpers -------------------------------------------------------------------------------------

def delayed_prompt_codes(codes: np.ndarray, delays: tuple[int, ...] = DELAY_PATTERN) -> np.ndarray:
    """Voice-prompt codes [T, C] -> the delayed prompt matrix [T + max_delay + 1, C] (spec 7.3 step 2).

    Codebook c: BOS on rows 0..D[c], the codes on rows D[c]+1..D[c]+T, EOS on row D[c]+T+1 if it
    exists, PAD after.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] != len(delays):
        raise ValueError(f"codes must be [T, {len(delays)}], got {codes.shape}")
    t = codes.shape[0]
    m = max(delays)
    out = np.full((t + m + 1, len(delays)), CODEC_PAD, dtype=np.int64)
    for c, d in enumerate(delays):
        out[: d + 1, c] = CODEC_BOS
        out[d + 1: d + 1 + t, c] = codes[:, c]
        if d + 1 + t < out.shape[0]:
            out[d + 1 + t, c] = CODEC_EOS
    return out


# --- prompt objects ------------------------------------------------------------------------------------

@dataclass
class PromptRow:
    """One row of the CFG batch: token ids, the frames for its placeholders, its video (if any)."""

    ids: list[int]
    codec_frames: np.ndarray | None = None  # [n_placeholders, 12] int
    video: Any = None  # video_preprocess.VideoInput when ids hold video pad tokens
    text: str = ""


@dataclass
class Prompt:
    """A [uncond, cond] pair. ``uncond`` may be dropped by generation when cfg_scale == 0."""

    uncond: PromptRow
    cond: PromptRow
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def _row(tok: TextEncoder, text: str, frames: np.ndarray | None = None, video: Any = None,
         placeholder_id: int | None = None, video_pad_id: int | None = None) -> PromptRow:
    ids = [int(i) for i in tok.encode(text)]
    if frames is not None and placeholder_id is not None:
        n = sum(1 for i in ids if i == placeholder_id)
        if n != frames.shape[0]:
            raise ValueError(f"prompt has {n} placeholders for {frames.shape[0]} codec frames")
    if video is not None and video_pad_id is not None:
        n = sum(1 for i in ids if i == video_pad_id)
        if n != video.n_tokens:
            raise ValueError(f"prompt has {n} video tokens for {video.n_tokens} video features")
    return PromptRow(ids=ids, codec_frames=frames, video=video, text=text)


def build_music_prompt(tok: TextEncoder, caption: str) -> Prompt:
    u, c = music_texts(caption)
    return Prompt(_row(tok, u), _row(tok, c), task="music", meta={"caption": caption})


def build_speech_prompt(tok: TextEncoder, text: str, transcript: str, voice_codes: np.ndarray,
                        placeholder_id: int | None = None) -> Prompt:
    codes = np.asarray(voice_codes)
    frames = delayed_prompt_codes(codes)
    u, c = speech_texts(text, transcript, codes.shape[0])
    return Prompt(_row(tok, u, frames, placeholder_id=placeholder_id),
                  _row(tok, c, frames, placeholder_id=placeholder_id), task="speech",
                  meta={"text": text, "transcript": transcript, "prompt_frames": int(codes.shape[0])})


def build_video_prompt(tok: TextEncoder, caption: str, video: Any = None, video_pad_id: int | None = None) -> Prompt:
    """``video`` None: reference mode (caption only). Otherwise vision mode with ``video.n_tokens`` pads."""
    if video is None:
        p = build_music_prompt(tok, caption)
        p.task, p.meta["mode"] = "video_score", "reference"
        return p
    u, c = vision_music_texts(caption, video.n_tokens)
    return Prompt(_row(tok, u, video=video, video_pad_id=video_pad_id),
                  _row(tok, c, video=video, video_pad_id=video_pad_id), task="video_score",
                  meta={"caption": caption, "mode": "vision"})
