"""Video score: music for a clip of a video (seen through the vision tower), optionally with a caption."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..spec import MAX_CAPTION_CHARS, MAX_SECONDS, TaskSpecBase
from .registry import ModelContext, ProbeContext, TaskDef, register


class VideoScoreTask(TaskSpecBase):
    task: Literal["video_score"] = "video_score"
    video: str = Field(min_length=1, description="Path of the video (inside the allowed roots).")
    caption: str = Field("", max_length=MAX_CAPTION_CHARS)
    in_seconds: float = Field(0.0, ge=0)
    out_seconds: float | None = Field(None, gt=0)
    mode: Literal["vision", "reference"] = "vision"
    frames_per_second: float = Field(1.0, gt=0, le=30)
    max_frames: int = Field(16, ge=1, le=256)

    @model_validator(mode="after")
    def _in_out(self) -> "VideoScoreTask":
        if self.out_seconds is not None and self.out_seconds <= self.in_seconds:
            raise ValueError("out_seconds must be after in_seconds")
        if self.out_seconds is not None and self.out_seconds - self.in_seconds > MAX_SECONDS:
            raise ValueError(f"a clip of at most {MAX_SECONDS:g} s")
        return self

    def target_seconds(self) -> float | None:
        """The asked length, else the clip's in/out duration (sample exact)."""
        t = self.length.target_seconds()
        if t is None and self.out_seconds is not None:
            t = self.out_seconds - self.in_seconds
        return t

    def describe(self) -> str:
        return self.caption


def probe(spec: VideoScoreTask, ctx: ProbeContext) -> None:
    ctx.media.probe_video(spec.video, spec.in_seconds, spec.out_seconds)


def model_request(spec: VideoScoreTask, ctx: ModelContext) -> Any:
    from unimoe_audio.model.requests import VideoScoreRequest

    return VideoScoreRequest(video=spec.video, caption=spec.caption, in_seconds=spec.in_seconds,
                             out_seconds=spec.out_seconds, mode=spec.mode, frames_per_second=spec.frames_per_second,
                             max_frames=spec.max_frames, length=ctx.length, sampling=ctx.sampling,
                             stream_every=ctx.stream_every)


TASK = register(TaskDef(
    name="video_score", spec=VideoScoreTask, kinds=("score", "video_score"), label="Score",
    osc_address="/unimoe/video-score", osc_args=("video", "caption"),
    osc_aliases={"in": "in_seconds", "out": "out_seconds"}, input_files=("video",),
    probe=probe, model_request=model_request, required=("video",),
    form={"video": "The video to score", "caption": "What the score should be like",
          "in_seconds": "Clip start (s)", "out_seconds": "Clip end (s)"},
))
