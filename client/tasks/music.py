"""Music: text-to-music from a caption, optionally at a tempo, in a key, a number of bars long; continuing
the editor's own clip (``continue_audio``) and seamless loops (``loop``): model/continuation.py."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec import MAX_CAPTION_CHARS, MAX_SECONDS, TaskSpecBase
from .registry import ModelContext, ProbeContext, TaskDef, register

#: The tempo bars count at when none is given (4/4).
DEFAULT_TEMPO_BPM = 120.0
BEATS_PER_BAR = 4


class MusicTask(TaskSpecBase):
    task: Literal["music"] = "music"
    caption: str = Field(min_length=1, max_length=MAX_CAPTION_CHARS)
    tempo_bpm: float | None = Field(None, ge=20, le=400)
    key: str | None = Field(None, min_length=1, max_length=40)
    bars: int | None = Field(None, gt=0, le=1000)
    continue_audio: str | None = Field(None, min_length=1, description="Continue this clip (a path inside the "
                                       "allowed roots): its music starts the segment; length/bars is the new part.")
    continue_from: float | None = Field(None, gt=0, le=MAX_SECONDS, description="The join, seconds into the clip "
                                        "(default: its end; on a bar line when tempo_bpm is given).")
    to_seconds: float | None = Field(None, gt=0, le=MAX_SECONDS, description="The whole output's length "
                                     "(clip up to the join + new part), instead of length.")
    loop: bool = Field(False, description="A seamless loop of length.seconds or bars (from continue_audio if given).")
    new_only: bool = Field(False, description="Write only the new part (it butts onto the original at the join).")

    @model_validator(mode="after")
    def _continue_fields(self) -> "MusicTask":
        if self.continue_audio is None:
            for name in ("continue_from", "to_seconds", "new_only"):
                if getattr(self, name) not in (None, False):
                    raise ValueError(f"{name} goes with continue_audio")
        if self.loop and self.new_only:
            raise ValueError("new_only: a loop is written whole")
        if self.loop and self.to_seconds is not None:
            raise ValueError("to_seconds: a loop's length is length.seconds or bars")
        return self

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
        """The output's length where the request fixes it (a continuation: the clip's part is only known
        when the clip is read, so only ``to_seconds`` says)."""
        if self.continue_audio is not None and not self.loop:
            return self.to_seconds
        t = self.length.target_seconds()
        return t if t is not None else self.bars_seconds()

    def new_seconds(self) -> float | None:
        """A continuation's new part (length or bars at the tempo)."""
        t = self.length.target_seconds()
        return t if t is not None else self.bars_seconds()

    def describe(self) -> str:
        return self.caption


def probe(spec: MusicTask, ctx: ProbeContext) -> None:
    """At submit: a clip to continue is audio, >= 1 s, long enough for the join; a loop lasts a bar or more."""
    if spec.loop or spec.continue_audio:
        ctx.media.probe_music_splice(spec)


def model_request(spec: MusicTask, ctx: ModelContext) -> Any:
    from unimoe_audio.model.requests import Length, MusicRequest

    length = ctx.length
    if spec.continue_audio is not None and not spec.loop:
        # the length is the new part's (the worker's shared mapping took the whole output's rule)
        ls = spec.length
        length = Length(seconds=ls.seconds if ls.frames is None else None, frames=ls.frames, fps=ls.fps_fraction(),
                        min_seconds=ls.min_seconds, max_seconds=ls.max_seconds)
    return MusicRequest(caption=spec.caption, tempo_bpm=spec.tempo_bpm, key=spec.key, bars=spec.bars,
                        length=length, sampling=ctx.sampling, stream_every=ctx.stream_every,
                        continue_audio=spec.continue_audio, continue_from=spec.continue_from,
                        to_seconds=spec.to_seconds, loop=spec.loop)


TASK = register(TaskDef(
    name="music", spec=MusicTask, kinds=("music",), label="Music",
    osc_address="/unimoe/music", osc_args=("caption",), osc_aliases={"continue": "continue_audio", "from": "continue_from"},
    input_files=("continue_audio",), probe=probe, model_request=model_request, required=("caption",),
    form={"caption": "Describe the music", "tempo_bpm": "Tempo (BPM)", "key": "Key, e.g. A minor",
          "bars": "Length in bars (4/4)", "continue_audio": "A clip to continue (its music starts the new one)",
          "continue_from": "Where the new music starts in the clip (s)", "to_seconds": "Length of the whole take (s)",
          "loop": "A seamless loop", "new_only": "Only the new part"},
))
