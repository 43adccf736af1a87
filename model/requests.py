"""Task requests and results: plain dataclasses, the model layer's public surface.

The daemon maps its pydantic wire messages onto these; scripts can build them directly.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Literal

import numpy as np


@dataclass
class SamplingParams:
    """Decoding knobs. ``None`` means "the task's reference default" (spec section 6.6)."""

    cfg_scale: float | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    eos_factor: float | None = None
    seed: int | None = None  # None: a fresh random seed, reported back in the result


@dataclass
class Length:
    """Target length. Either seconds, or a frame count at a rational frame rate (timeline frames).

    ``None`` everywhere means "let the model stop on its own between min and max".
    """

    seconds: float | None = None
    frames: int | None = None
    fps: Fraction | None = None
    min_seconds: float | None = None
    max_seconds: float | None = None

    def target_seconds(self) -> float | None:
        if self.frames is not None and self.fps is not None:
            return float(Fraction(self.frames) / self.fps)
        return self.seconds


@dataclass
class SpeechRequest:
    text: str
    # Either a reference recording + its transcript, or a saved voice (codes + transcript).
    reference_audio: str | None = None
    reference_text: str | None = None
    voice_codes: np.ndarray | None = None  # [T, 12] int DAC codes of the reference voice
    length: Length = field(default_factory=Length)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Seconds of new audio between streamed previews (Progress.partial_audio); None: no previews.
    stream_every: float | None = None


@dataclass
class MusicRequest:
    caption: str
    tempo_bpm: float | None = None
    key: str | None = None
    bars: int | None = None
    length: Length = field(default_factory=Length)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Seconds of new audio between streamed previews (Progress.partial_audio); None: no previews.
    stream_every: float | None = None
    # Continue the editor's clip (model/continuation.py): its codes start the music segment. ``length``
    # (or ``bars``) is then the new music's length, ``to_seconds`` the whole output's.
    continue_audio: str | None = None
    continue_from: float | None = None  # the join, seconds into the clip (default: its end)
    to_seconds: float | None = None
    loop: bool = False  # a seamless loop of ``length`` / ``bars`` (from the clip when continue_audio is set)


@dataclass
class VideoScoreRequest:
    video: str
    caption: str = ""
    in_seconds: float = 0.0
    out_seconds: float | None = None
    # "vision": the video is seen (vision tower + video tokens + 3-D rotary positions), as the paper intends.
    # "reference": the published code's behaviour, caption only (spec defect D1).
    mode: Literal["vision", "reference"] = "vision"
    frames_per_second: float = 1.0
    max_frames: int = 16
    length: Length = field(default_factory=Length)  # default: the clip's in/out duration, sample exact
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Seconds of new audio between streamed previews (Progress.partial_audio); None: no previews.
    stream_every: float | None = None


@dataclass
class Progress:
    stage: str  # "prepare", "encode", "generate", "decode", "finish"
    fraction: float  # 0..1 over the whole request
    frames_done: int = 0
    frames_total: int = 0
    # Partial audio decoded so far (float32 [channels, n] at ``sample_rate``), when streaming is on.
    partial_audio: np.ndarray | None = None


# Return False (or raise Cancelled) to stop the request.
ProgressCallback = Callable[[Progress], "bool | None"]


@dataclass
class AudioResult:
    audio: np.ndarray  # float32 [channels, samples]
    sample_rate: int
    seed: int
    codes: np.ndarray  # [frames, 12] int DAC codes (after delay revert)
    task: str
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, object] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate
