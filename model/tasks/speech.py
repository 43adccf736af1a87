"""Speech (voice-cloning TTS): a reference voice (a recording, encoded, or saved codes) and its
transcript, the text cut into sentence chunks, each chunk's frame budget (an exact length shared by
characters, else bounded by the reference's speaking rate); the chunks are joined with pauses."""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from ..errors import InvalidInput
from ..length import DEFAULT_MIN_FRAMES, FRAMES_PER_SECOND, HOP, LengthPlan, plan_length
from ..prompts import build_speech_prompt
from ..requests import Length, SpeechRequest
from ..text_split import normalize_space, split_text
from .base import (CODEBOOK_SIZE, NUM_CODEBOOKS, SPEECH_PAUSE_SECONDS, Reporter, TaskPlan, check_text, check_type,
                   resolve_sampling)

SPEECH_MAX_CHARS = 200
# Speech length without a target: each chunk may run to MARGIN x its estimated length + SLACK frames,
# the estimate being its characters x the reference's frames per character of transcript (how
# voice-cloning systems estimate duration). The model stops earlier on EOS; the cap only bounds a
# chunk whose EOS never comes (previously it ran to the whole window, ~20 s per chunk).
SPEECH_RATE_MARGIN = 1.5
SPEECH_RATE_SLACK_FRAMES = 50  # 1 s: room for a slow start or a final breath
SPEECH_MIN_SHARE = 0.5  # no EOS before half the estimate (unless min_seconds says otherwise)
SPEECH_FLOOR_FRAMES_PER_CHAR = 5.0  # ~10 characters/s, a slow reader: used when the reference was trimmed
REFERENCE_MAX_SECONDS = 15.0  # longer reference clips are trimmed (D17)


def check_voice_codes(codes: Any, field: str = "voice_codes") -> np.ndarray:
    try:
        arr = np.asarray(codes)
    except Exception:  # noqa: BLE001
        raise InvalidInput("not an array", field=field, wanted=f"[T, {NUM_CODEBOOKS}] integer codes") from None
    if arr.ndim != 2 or arr.shape[1] != NUM_CODEBOOKS or arr.shape[0] < 1:
        raise InvalidInput(f"shape {arr.shape}", field=field, wanted=f"[T, {NUM_CODEBOOKS}] integer codes, T >= 1")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.mod(arr, 1) == 0):
            raise InvalidInput("codes must be integers", field=field, wanted="integer codes")
    arr = arr.astype(np.int64)
    if arr.min() < 0 or arr.max() >= CODEBOOK_SIZE:
        raise InvalidInput("codes out of range", field=field, wanted=f"0 <= code < {CODEBOOK_SIZE}")
    return arr


def prepare_speech(eng: Any, req: SpeechRequest, rep: Reporter) -> TaskPlan:
    """Validate a speech request, encode its reference voice, split its text into chunks."""
    t0 = time.monotonic()
    check_type(req, SpeechRequest, "SpeechRequest")
    text = check_text(req.text, "text")
    sampling, seed = resolve_sampling(req.sampling, "speech")
    window = eng.window_frames
    lp = plan_length(req.length, default_min_frames=DEFAULT_MIN_FRAMES, default_max_frames=window)
    transcript = check_text(req.reference_text, "reference_text", max_chars=2000)
    if req.voice_codes is not None:
        codes = check_voice_codes(req.voice_codes)
        source = "voice_codes"
    elif req.reference_audio:
        rep("encode", 0.0)
        codes = eng.encode_reference(req.reference_audio, field="reference_audio")
        source = "reference_audio"
    else:
        raise InvalidInput("give a reference recording or a saved voice", field="reference_audio",
                           wanted="reference_audio or voice_codes")
    max_ref = int(REFERENCE_MAX_SECONDS * FRAMES_PER_SECOND)
    trimmed = codes.shape[0] >= max_ref - 1  # load_reference trims long clips: the transcript says more
    if codes.shape[0] > max_ref:
        codes = codes[:max_ref]
    max_chars = int(getattr(eng, "speech_max_chars", SPEECH_MAX_CHARS))
    # One chunk per sentence (long sentences cut at clauses), so every sentence end gets its pause.
    chunks = split_text(text, max_chars, pack=False)
    if not chunks:
        raise InvalidInput("is empty", field="text", wanted="non-empty text")
    # Frame budget per chunk.
    if lp.exact:
        pause_frames = SPEECH_PAUSE_SECONDS * FRAMES_PER_SECOND * (len(chunks) - 1)
        budget = max(len(chunks), int(math.ceil(lp.target_samples / HOP - pause_frames)))
        weights = np.array([max(1, len(c)) for c in chunks], dtype=np.float64)
        alloc = np.floor(budget * weights / weights.sum()).astype(int)
        alloc[: budget - alloc.sum()] += 1
        alloc = np.maximum(alloc, 1)
        if int(alloc.max()) > window:
            # Too long for one window per chunk: split further.
            n_more = int(math.ceil(budget / window))
            chunks = split_text(text, max(1, int(len(text) / max(n_more * 2, 1))), pack=False)
            weights = np.array([max(1, len(c)) for c in chunks], dtype=np.float64)
            alloc = np.floor(budget * weights / weights.sum()).astype(int)
            alloc[: budget - alloc.sum()] += 1
            alloc = np.maximum(alloc, 1)
            # Still longer than a window (a short text for a long length): each chunk gets at most a
            # window and the exact-length fit pads the rest with silence, so what submit accepted runs.
            alloc = np.minimum(alloc, window)
        frames = [(int(a), int(a)) for a in alloc]
    else:
        length = req.length or Length()
        frames = speech_chunk_frames(chunks, transcript, int(codes.shape[0]), lp, trimmed=trimmed,
                                     explicit_min=length.min_seconds is not None,
                                     explicit_max=length.max_seconds is not None)
    prompts_ = [build_speech_prompt(eng.tok, c, transcript, codes, placeholder_id=eng.placeholder_id)
                for c in chunks]
    plan = TaskPlan(task="speech", sampling=sampling, seed=seed, length=lp, kind="chunks", prompts=prompts_,
                    chunk_frames=frames,
                    info={"chunks": len(chunks), "voice_frames": int(codes.shape[0]), "voice_source": source,
                          "chunk_max_frames": [mx for _, mx in frames]})
    plan.timings["prepare"] = time.monotonic() - t0
    rep("prepare", 1.0)
    return plan


def frames_per_char(transcript: str, voice_frames: int, *, trimmed: bool = False) -> float:
    """The reference's speaking rate: codec frames per character of its transcript (spaces count once)."""
    chars = max(1, len(normalize_space(transcript)))
    rate = voice_frames / chars
    return max(rate, SPEECH_FLOOR_FRAMES_PER_CHAR) if trimmed else rate


def speech_chunk_frames(chunks: Sequence[str], transcript: str, voice_frames: int, lp: LengthPlan, *,
                        trimmed: bool = False, explicit_min: bool = False, explicit_max: bool = False
                        ) -> list[tuple[int, int]]:
    """(min, max) frames of each speech chunk when no exact length is asked: bounded by the length plan,
    and (unless the caller set them) by the chunk's length at the reference's speaking rate.

    A ``max_seconds`` / ``min_seconds`` the caller set bounds the whole text: the chunks share it by their
    length in characters, after the pauses between them (a voiceover asks for at most its slot)."""
    rate = frames_per_char(transcript, voice_frames, trimmed=trimmed)
    sizes = [max(1, len(normalize_space(c))) for c in chunks]
    pauses = SPEECH_PAUSE_SECONDS * FRAMES_PER_SECOND * (len(chunks) - 1)
    total = float(sum(sizes))
    out = []
    for c, size in zip(chunks, sizes):
        estimate = len(normalize_space(c)) * rate
        share = size / total
        if explicit_max:
            hi = max(1, int((lp.max_frames - pauses) * share))
        else:
            hi = min(lp.max_frames, int(math.ceil(estimate * SPEECH_RATE_MARGIN)) + SPEECH_RATE_SLACK_FRAMES)
        if explicit_min:
            lo = max(0, int(math.ceil((lp.min_frames - pauses) * share)))
        else:
            lo = min(lp.min_frames, int(estimate * SPEECH_MIN_SHARE))
        out.append((max(0, min(lo, hi)), max(1, hi)))
    return out
