"""The one length rule of the model: a request's length as an exact number of samples at 16 kHz, and the
frames the model generates for it.

The model emits 50 codec frames per second (320 samples at 16 kHz). A target of N samples generates
exactly ``ceil(N / 320)`` frames (EOS is disabled before and forced at that frame); the decoded audio is
then fitted to N samples once, at the output's rate (``audio_out.fit_length`` through
``audio_out.target_samples``), so the output is sample exact. Without a target the model stops on EOS
between the min and max length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .errors import InvalidInput
from .requests import Length

SAMPLE_RATE = 16000
HOP = 320
FRAMES_PER_SECOND = SAMPLE_RATE // HOP  # 50
MAX_SECONDS = 600.0
DEFAULT_MIN_FRAMES = 100  # reference MIN_TOKENS (2 s)


def finite_number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)):
        raise InvalidInput(f"wanted a number, got {value!r}", field=field, wanted="number")
    v = float(value)
    if not math.isfinite(v):
        raise InvalidInput(f"wanted a finite number, got {value!r}", field=field, wanted="finite number")
    return v


def samples_at(seconds: float | Fraction, rate: int) -> int:
    """The one rounding rule: ``seconds`` as a whole number of samples at ``rate`` (a float is read as the
    decimal it prints as, so 1.37 s is 21920 samples at 16 kHz and 60417 at 44.1 kHz)."""
    exact = Fraction(str(seconds)) if isinstance(seconds, float) else Fraction(seconds)
    return int(round(exact * rate))


@dataclass
class LengthPlan:
    target_samples: int | None  # exact output length, or None (model decides)
    min_frames: int
    max_frames: int

    @property
    def exact(self) -> bool:
        return self.target_samples is not None


def target_samples_of(length: Length | None, field: str = "length") -> int | None:
    """Exact target in samples at 16 kHz, from seconds or frames at a rational fps. None if unset."""
    if length is None:
        return None
    if length.frames is not None or length.fps is not None:
        if length.frames is None or length.fps is None:
            missing = "frames" if length.frames is None else "fps"
            raise InvalidInput("frames and fps go together", field=f"{field}.{missing}", wanted="both frames and fps")
        if isinstance(length.frames, bool) or not isinstance(length.frames, (int, np.integer)) or length.frames <= 0:
            raise InvalidInput(f"wanted a positive integer, got {length.frames!r}", field=f"{field}.frames",
                               wanted="integer > 0")
        try:
            fps = Fraction(length.fps)
        except (TypeError, ValueError):
            raise InvalidInput(f"wanted a rational number, got {length.fps!r}", field=f"{field}.fps") from None
        if fps <= 0 or fps > 1000:
            raise InvalidInput(f"{length.fps} is out of range", field=f"{field}.fps", wanted="0 < fps <= 1000")
        secs = Fraction(int(length.frames)) / fps
        if secs > MAX_SECONDS:
            raise InvalidInput(f"{float(secs):.3f} s is too long", field=f"{field}.frames",
                               wanted=f"at most {MAX_SECONDS:g} s")
        return samples_at(secs, SAMPLE_RATE)
    if length.seconds is not None:
        s = finite_number(length.seconds, f"{field}.seconds")
        if not 0 < s <= MAX_SECONDS:
            raise InvalidInput(f"{s} s is not possible", field=f"{field}.seconds",
                               wanted=f"0 < seconds <= {MAX_SECONDS:g}")
        n = samples_at(s if isinstance(length.seconds, float) else Fraction(length.seconds), SAMPLE_RATE)
        if n < 1:
            raise InvalidInput(f"{s} s is shorter than one sample", field=f"{field}.seconds")
        return n
    return None


def plan_length(length: Length | None, *, default_target_samples: int | None = None,
                default_min_frames: int = DEFAULT_MIN_FRAMES, default_max_frames: int = 981,
                field: str = "length") -> LengthPlan:
    length = length or Length()
    target = target_samples_of(length, field)
    if target is None:
        target = default_target_samples
    if target is not None:
        frames = max(1, math.ceil(target / HOP))
        return LengthPlan(target, frames, frames)
    lo, hi = default_min_frames, default_max_frames
    if length.min_seconds is not None:
        v = finite_number(length.min_seconds, f"{field}.min_seconds")
        if not 0 <= v <= MAX_SECONDS:
            raise InvalidInput(f"{v} s is not possible", field=f"{field}.min_seconds",
                               wanted=f"0 <= min_seconds <= {MAX_SECONDS:g}")
        lo = int(round(v * FRAMES_PER_SECOND))
    if length.max_seconds is not None:
        v = finite_number(length.max_seconds, f"{field}.max_seconds")
        if not 0 < v <= MAX_SECONDS:
            raise InvalidInput(f"{v} s is not possible", field=f"{field}.max_seconds",
                               wanted=f"0 < max_seconds <= {MAX_SECONDS:g}")
        hi = max(1, int(round(v * FRAMES_PER_SECOND)))
        if length.min_seconds is None:
            lo = min(lo, hi)
    elif length.min_seconds is not None:
        hi = max(hi, lo)  # at least min_seconds, though longer than the default maximum
    if lo > hi:
        raise InvalidInput("min_seconds is above max_seconds", field=f"{field}.min_seconds",
                           wanted="min_seconds <= max_seconds")
    return LengthPlan(None, lo, hi)
