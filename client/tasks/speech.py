"""Speech: voice-cloning text-to-speech, from a saved voice or a reference recording and its transcript."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..spec import MAX_TEXT_CHARS, TaskSpecBase, visible_text
from .registry import ModelContext, ProbeContext, TaskDef, register

#: Longest transcript of a reference recording (the engine trims the recording to 15 s).
MAX_REFERENCE_TEXT_CHARS = 2000


class SpeechTask(TaskSpecBase):
    task: Literal["speech"] = "speech"
    text: str = Field(min_length=1, max_length=MAX_TEXT_CHARS)
    voice: str | None = Field(None, description="A saved voice's name (see 'voices'); or give reference_audio.")
    reference_audio: str | None = Field(None, description="Path of a reference recording (inside the allowed roots).")
    reference_text: str | None = Field(None, max_length=MAX_REFERENCE_TEXT_CHARS,
                                       description="Transcript of reference_audio.")

    _text = field_validator("text", "reference_text")(classmethod(lambda cls, v: visible_text(v)))

    @model_validator(mode="after")
    def _one_voice(self) -> "SpeechTask":
        if self.voice is not None and self.reference_audio is not None:
            raise ValueError("give either voice or reference_audio, not both")
        if self.voice is None and self.reference_audio is None:
            raise ValueError("give a saved voice or a reference recording (reference_audio + reference_text)")
        if self.reference_audio is not None and not self.reference_text:
            raise ValueError("reference_audio needs reference_text (its transcript)")
        return self

    def describe(self) -> str:
        return self.text


def probe(spec: SpeechTask, ctx: ProbeContext) -> None:
    if spec.voice is not None and not ctx.voices.exists(spec.voice):
        raise ctx.error("not_found", f"no saved voice named {spec.voice!r}", field="spec.voice",
                        wanted="a name from 'voices ls', or reference_audio + reference_text")
    if spec.reference_audio:
        ctx.media.probe_reference_audio(spec.reference_audio)


def model_request(spec: SpeechTask, ctx: ModelContext) -> Any:
    from unimoe_audio.model.requests import SpeechRequest

    codes, ref_text = None, spec.reference_text
    if spec.voice is not None:
        codes, ref_text = ctx.voices.load(spec.voice)
    return SpeechRequest(text=spec.text, reference_audio=spec.reference_audio, reference_text=ref_text,
                         voice_codes=codes, length=ctx.length, sampling=ctx.sampling, stream_every=ctx.stream_every)


TASK = register(TaskDef(
    name="speech", spec=SpeechTask, kinds=("speech",), label="Speech",
    osc_address="/unimoe/speech", osc_args=("text",), input_files=("reference_audio",),
    probe=probe, model_request=model_request, required=("text",),
    form={"text": "What to say", "voice": "A saved voice", "reference_audio": "A recording of the voice",
          "reference_text": "What the recording says"},
))
