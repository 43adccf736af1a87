"""Music from a caption (tempo, key, bars), also continuing a clip or making a seamless loop
(model/continuation.py plans the splice; the clip's codes start the segment)."""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..length import HOP, MAX_SECONDS, SAMPLE_RATE, LengthPlan, finite_number, plan_length
from ..prompts import build_music_prompt, music_caption
from ..requests import MusicRequest
from .base import Reporter, TaskPlan, check_text, check_type, resolve_sampling


def music_target_samples(req: MusicRequest) -> int | None:
    """Bars at a tempo give a target length (4/4; 120 BPM when no tempo is given)."""
    if req.bars is None:
        return None
    tempo = 120.0 if req.tempo_bpm is None else float(req.tempo_bpm)
    secs = Fraction(int(req.bars) * 4 * 60) / Fraction(tempo).limit_denominator(10**6)
    if secs > MAX_SECONDS:
        raise InvalidInput(f"{float(secs):.1f} s is too long", field="bars", wanted=f"at most {MAX_SECONDS:g} s")
    return int(round(secs * SAMPLE_RATE))


def prepare_music(eng: Any, req: MusicRequest, rep: Reporter) -> TaskPlan:
    t0 = time.monotonic()
    check_type(req, MusicRequest, "MusicRequest")
    caption = check_text(req.caption, "caption", required=False, max_chars=4000)
    if req.tempo_bpm is not None:
        bpm = finite_number(req.tempo_bpm, "tempo_bpm")
        if not 20 <= bpm <= 400:
            raise InvalidInput(f"{bpm} BPM is out of range", field="tempo_bpm", wanted="20 <= tempo_bpm <= 400")
    if req.bars is not None:
        if isinstance(req.bars, bool) or not isinstance(req.bars, (int, np.integer)) or not 1 <= int(req.bars) <= 1000:
            raise InvalidInput(f"{req.bars!r} is out of range", field="bars", wanted="integer 1..1000")
    key = None
    if req.key is not None:
        key = check_text(req.key, "key", max_chars=40)
    if not caption and req.tempo_bpm is None and key is None:
        raise InvalidInput("is empty", field="caption", wanted="non-empty text")
    sampling, seed = resolve_sampling(req.sampling, "music")
    splice = None
    if getattr(req, "continue_audio", None) is not None or getattr(req, "loop", False):
        from ..continuation import plan_splice  # only for a continued clip or a loop

        splice = plan_splice(eng, req, eng.window_frames, rep)  # validates; the model makes splice.frames
        lp = LengthPlan(splice.frames * HOP, splice.frames, splice.frames)
    else:
        lp = plan_length(req.length, default_target_samples=music_target_samples(req),
                         default_max_frames=eng.window_frames)
    text = music_caption(caption, req.tempo_bpm, key, req.bars)
    prompt = build_music_prompt(eng.tok, text)
    plan = TaskPlan(task="music", sampling=sampling, seed=seed, length=lp, kind="windows", prompts=[prompt],
                    info={"caption": text})
    if splice is not None:
        plan.prefix = splice.prefix
        plan.info["splice"] = splice.plan.to_dict()
    plan.timings["prepare"] = time.monotonic() - t0
    rep("prepare", 1.0)
    return plan
