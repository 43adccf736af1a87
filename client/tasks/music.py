"""Music: text-to-music from a caption, optionally at a tempo, in a key, a number of bars long."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec import MAX_CAPTION_CHARS, MAX_SECONDS, TaskSpecBase
from .registry import ModelContext, TaskDef, register

#: The tempo bars count at when none is given (4/4).
DEFAULT_TEMPO_BPM = 120.0
BEATS_PER_BAR = 4


class MusicTask(TaskSpecBase):
    task: Literal["music"] = "music"
    caption: str = Field(min_length=1, max_length=MAX_CAPTION_CHARS)
    tempo_bpm: float | None = Field(None, ge=20, le=400)
    key: str | None = Field(None, min_length=1, max_length=40)
    bars: int | None = Field(None, gt=0, le=1000)

    @model_validator(mode="after")
    def _said_something(self) -> "MusicTask":
        if not self.caption.strip() and self.tempo_bpm is None and (self.key is None or not self.key.strip()):
            raise ValueError("the caption is empty (only white space)")
        if self.key is not None and not self.key.strip():
            raise ValueError("the key is empty (only white space)")
        bars = self.bars_seconds()
        if bars is not None and bars > MAX_SECONDS:
            raise ValueError(f"{self.bars} bars at {self.tempo_bpm or DEFAULT_TEMPO_BPM:g} BPM is over {MAX_SECONDS:g} s")
        return self

    def bars_seconds(self) -> float | None:
        """Bars at the tempo in seconds (4/4; 120 BPM when no tempo is given): a DAW's exact length."""
        if self.bars is None:
            return None
        return self.bars * BEATS_PER_BAR * 60.0 / (self.tempo_bpm or DEFAULT_TEMPO_BPM)

    def target_seconds(self) -> float | None:
        t = self.length.target_seconds()
        return t if t is not None else self.bars_seconds()

    def describe(self) -> str:
        return self.caption


def model_request(spec: MusicTask, ctx: ModelContext) -> Any:
    from unimoe_audio.model.requests import MusicRequest

    return MusicRequest(caption=spec.caption, tempo_bpm=spec.tempo_bpm, key=spec.key, bars=spec.bars,
                        length=ctx.length, sampling=ctx.sampling, stream_every=ctx.stream_every)


TASK = register(TaskDef(
    name="music", spec=MusicTask, kinds=("music",), label="Music",
    osc_address="/unimoe/music", osc_args=("caption",), model_request=model_request, required=("caption",),
    form={"caption": "Describe the music", "tempo_bpm": "Tempo (BPM)", "key": "Key, e.g. A minor",
          "bars": "Length in bars (4/4)"},
))
