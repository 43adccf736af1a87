"""The pieces every task's request is made of: strict models, the length and sampling specs, and the
limits of the fields they share. Each bound is written once, next to its field; task modules
(:mod:`unimoe_audio.client.tasks`) add their own fields with theirs.

The bounds are the engine's (``model/tasks.py`` checks the same numbers for scripts that call the
library directly), so what the daemon accepts at submit, its worker runs: ``tests/test_task_limits.py``
draws random valid requests from this schema and runs them through the worker's mapping and the
model's preparation.
Light on purpose: pydantic only (imported inside Blender's and REAPER's Pythons).
"""
from __future__ import annotations

from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Longest audio one request may ask for (seconds); the engine's limit too.
MAX_SECONDS = 600.0
#: The engine's sample rate: a length must be at least one sample long.
MODEL_SAMPLE_RATE = 16000
#: Longest prompt text (speech text) and longest caption, in characters.
MAX_TEXT_CHARS = 20_000
MAX_CAPTION_CHARS = 4000
#: Highest frame rate a length in frames may be counted at.
MAX_FPS = 1000
#: Codebook entries the sampler can keep (1024 codes + the model's special tokens).
MAX_TOP_K = 1027


class StrictModel(BaseModel):
    """A request part: unknown fields are errors naming the field."""

    # allow_inf_nan=False: NaN/inf are "not a finite number" (OSC floats can carry them), not a range error.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, allow_inf_nan=False)


def check_rate(v: Any) -> Any:
    """A frame rate field: a positive number or a ratio such as '24000/1001' (kept as given)."""
    from .timecode import parse_rate

    if v is None:
        return v
    try:
        rate = parse_rate(v)
    except (ValueError, ZeroDivisionError):
        raise ValueError("wanted a positive number or a ratio like '24000/1001'") from None
    if rate > MAX_FPS:
        raise ValueError(f"wanted a rate of at most {MAX_FPS}")
    return v


def visible_text(v: str | None) -> str | None:
    """Text that says something: not only white space."""
    if v is not None and not v.strip():
        raise ValueError("is empty (only white space)")
    return v


class LengthSpec(StrictModel):
    """Target length: seconds, or frames at a rational fps (timeline units). All empty: model decides."""

    seconds: float | None = Field(None, gt=0, le=MAX_SECONDS)
    frames: int | None = Field(None, gt=0)
    fps: str | float | None = Field(None, description="Frame rate, a number or a ratio such as '24000/1001'.")
    min_seconds: float | None = Field(None, ge=0, le=MAX_SECONDS)
    max_seconds: float | None = Field(None, gt=0, le=MAX_SECONDS)

    _fps = field_validator("fps")(classmethod(lambda cls, v: check_rate(v)))

    @model_validator(mode="after")
    def _consistent(self) -> "LengthSpec":
        if (self.frames is None) != (self.fps is None):
            raise ValueError("frames and fps go together")
        if self.target_seconds() is not None and self.target_seconds() > MAX_SECONDS:
            raise ValueError(f"target length over {MAX_SECONDS:g} s")
        if self.target_seconds() is not None and self.target_seconds() * MODEL_SAMPLE_RATE < 0.5:
            raise ValueError("target length shorter than one sample")
        if self.min_seconds is not None and self.max_seconds is not None and self.min_seconds > self.max_seconds:
            raise ValueError("min_seconds is above max_seconds")
        return self

    def fps_fraction(self) -> Fraction | None:
        from .timecode import parse_rate

        return None if self.fps is None else parse_rate(self.fps)  # 29.97 is NTSC's 30000/1001

    def target_seconds(self) -> float | None:
        if self.frames is not None and self.fps is not None:
            return float(Fraction(self.frames) / self.fps_fraction())
        return self.seconds


class SamplingSpec(StrictModel):
    cfg_scale: float | None = Field(None, ge=0, le=50)
    temperature: float | None = Field(None, ge=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K)
    eos_factor: float | None = Field(None, gt=0, le=100)
    seed: int | None = Field(None, ge=0, lt=2**63)


class TaskSpecBase(StrictModel):
    """Fields every task has. A task's spec subclasses this and narrows ``task`` to ``Literal["<name>"]``
    (the discriminator of the submit's ``spec``)."""

    task: str
    length: LengthSpec = Field(default_factory=LengthSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)

    def target_seconds(self) -> float | None:
        """The one rule for the output's length in seconds (None: the model decides). Tasks with a
        length of their own (a clip's in/out, bars at a tempo) extend it."""
        return self.length.target_seconds()

    def describe(self) -> str:
        """A one-line description (the BWF Description field, the panel's job list)."""
        return ""
