"""What every task shares: the sampling settings with the task's reference defaults, text and type checks
(``InvalidInput`` naming the field), the stage reporter, and the ``TaskPlan`` a task's ``prepare`` returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import Cancelled, InvalidInput
from ..generation import Sampling, new_seed
from ..length import LengthPlan, finite_number
from ..prompts import Prompt, sanitize
from ..requests import Progress, ProgressCallback, SamplingParams
from ..text_split import normalize_space

NUM_CODEBOOKS = 12
CODEBOOK_SIZE = 1024
SPEECH_PAUSE_SECONDS = 0.25

# Reference defaults (spec 6.6).
DEFAULTS = {
    "music": dict(cfg_scale=10.0, temperature=1.0, top_p=1.0, top_k=45, eos_factor=0.6),
    "video_score": dict(cfg_scale=10.0, temperature=1.0, top_p=1.0, top_k=45, eos_factor=0.6),
    "speech": dict(cfg_scale=1.0, temperature=1.0, top_p=1.0, top_k=45, eos_factor=1.0),
}


def resolve_sampling(p: SamplingParams | None, task: str) -> tuple[Sampling, int]:
    """Validated sampling settings with the task's reference defaults, and the seed to use."""
    p = p or SamplingParams()
    d = DEFAULTS[task]
    cfg = d["cfg_scale"] if p.cfg_scale is None else finite_number(p.cfg_scale, "sampling.cfg_scale")
    if not 0 <= cfg <= 100:
        raise InvalidInput(f"{cfg} is out of range", field="sampling.cfg_scale", wanted="0 <= cfg_scale <= 100")
    temp = d["temperature"] if p.temperature is None else finite_number(p.temperature, "sampling.temperature")
    if not 0 <= temp <= 10:
        raise InvalidInput(f"{temp} is out of range", field="sampling.temperature", wanted="0 <= temperature <= 10")
    top_p = d["top_p"] if p.top_p is None else finite_number(p.top_p, "sampling.top_p")
    if not 0 < top_p <= 1:
        raise InvalidInput(f"{top_p} is out of range", field="sampling.top_p", wanted="0 < top_p <= 1")
    if p.top_k is None:
        top_k = d["top_k"]
    else:
        if isinstance(p.top_k, bool) or not isinstance(p.top_k, (int, np.integer)) and not (
                isinstance(p.top_k, float) and float(p.top_k).is_integer()):
            raise InvalidInput(f"wanted an integer, got {p.top_k!r}", field="sampling.top_k", wanted="integer")
        top_k = int(p.top_k)
        if not 1 <= top_k <= 1027:
            raise InvalidInput(f"{top_k} is out of range", field="sampling.top_k", wanted="1 <= top_k <= 1027")
    eos = d["eos_factor"] if p.eos_factor is None else finite_number(p.eos_factor, "sampling.eos_factor")
    if not 0 <= eos <= 100:
        raise InvalidInput(f"{eos} is out of range", field="sampling.eos_factor", wanted="0 <= eos_factor <= 100")
    if p.seed is None:
        seed = new_seed()
    else:
        if isinstance(p.seed, bool) or not isinstance(p.seed, (int, np.integer)) or not 0 <= int(p.seed) < 2**63:
            raise InvalidInput(f"wanted an integer in [0, 2^63), got {p.seed!r}", field="sampling.seed",
                               wanted="integer >= 0")
        seed = int(p.seed)
    return Sampling(cfg_scale=cfg, temperature=temp, top_p=top_p, top_k=top_k, eos_factor=eos), seed


def check_text(value: Any, field: str, *, required: bool = True, max_chars: int = 20000) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"wanted text, got {type(value).__name__}", field=field, wanted="text")
    t = normalize_space(sanitize(value))
    if required and not t:
        raise InvalidInput("is empty", field=field, wanted="non-empty text")
    if len(t) > max_chars:
        raise InvalidInput(f"{len(t)} characters is too long", field=field, wanted=f"at most {max_chars} characters")
    return t


def check_type(req: Any, cls: type, name: str) -> None:
    if not isinstance(req, cls):
        raise InvalidInput(f"wanted a {cls.__name__}, got {type(req).__name__}", field="request", wanted=name)


class Reporter:
    """Maps stage progress onto the request's 0..1 fraction; raises Cancelled when told to stop."""

    SPANS = {"prepare": (0.0, 0.05), "encode": (0.05, 0.1), "generate": (0.1, 0.9), "decode": (0.9, 0.99),
             "finish": (1.0, 1.0)}

    def __init__(self, cb: ProgressCallback | None):
        self.cb = cb

    def __call__(self, stage: str, frac: float = 0.0, frames_done: int = 0, frames_total: int = 0,
                 partial: np.ndarray | None = None) -> None:
        if self.cb is None:
            return
        lo, hi = self.SPANS.get(stage, (0.0, 1.0))
        f = lo + (hi - lo) * max(0.0, min(1.0, frac))
        if self.cb(Progress(stage=stage, fraction=f, frames_done=frames_done, frames_total=frames_total,
                            partial_audio=partial)) is False:
            raise Cancelled("stopped by the progress callback")


@dataclass
class TaskPlan:
    """Everything needed to run one request (possibly as several windows/chunks)."""

    task: str
    sampling: Sampling
    seed: int
    length: LengthPlan
    kind: str  # "chunks" (speech: independent items joined with pauses) or "windows" (continuation)
    prompts: list[Prompt] = field(default_factory=list)  # chunks: one per chunk; windows: one prompt
    chunk_frames: list[tuple[int, int]] = field(default_factory=list)  # (min, max) per chunk
    info: dict[str, Any] = field(default_factory=dict)
    # windows: frames that start the segment (a continued clip's codes, model/continuation.py); counted in
    # the length plan, returned with the new frames.
    prefix: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
