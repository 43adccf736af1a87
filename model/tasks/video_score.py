"""A score for a video: its frames through the vision tower ("vision") or the caption alone ("reference"),
the clip between ``in_seconds`` and ``out_seconds`` setting the default length."""
from __future__ import annotations

import time
from fractions import Fraction
from typing import Any

import numpy as np

from ..errors import InvalidInput
from ..length import MAX_SECONDS, SAMPLE_RATE, finite_number, plan_length
from ..media import END_TOLERANCE_S
from ..prompts import build_video_prompt
from ..requests import VideoScoreRequest
from .base import Reporter, TaskPlan, check_text, check_type, resolve_sampling

VIDEO_MAX_PIXELS_TOTAL = 512 * 28 * 28


def prepare_video(eng: Any, req: VideoScoreRequest, rep: Reporter) -> TaskPlan:
    t0 = time.monotonic()
    check_type(req, VideoScoreRequest, "VideoScoreRequest")
    if req.mode not in ("vision", "reference"):
        raise InvalidInput(f"unknown mode {req.mode!r}", field="mode", wanted="'vision' or 'reference'")
    if req.mode == "vision" and not eng.has_vision:
        raise InvalidInput("the model was loaded without its vision tower", field="mode", wanted="'reference'")
    caption = check_text(req.caption, "caption", required=False, max_chars=4000)
    fps = finite_number(req.frames_per_second, "frames_per_second")
    if not 0 < fps <= 30:
        raise InvalidInput(f"{fps} is out of range", field="frames_per_second", wanted="0 < frames_per_second <= 30")
    if isinstance(req.max_frames, bool) or not isinstance(req.max_frames, (int, np.integer)) or not 1 <= req.max_frames <= 256:
        raise InvalidInput(f"{req.max_frames!r} is out of range", field="max_frames", wanted="integer 1..256")
    t_in = finite_number(req.in_seconds, "in_seconds")
    if t_in < 0:
        raise InvalidInput(f"{t_in} is negative", field="in_seconds", wanted="in_seconds >= 0")
    sampling, seed = resolve_sampling(req.sampling, "video_score")
    duration = eng.video_duration(req.video, field="video")
    if req.out_seconds is None:
        t_out = duration
    else:
        t_out = finite_number(req.out_seconds, "out_seconds")
        if t_out <= t_in:
            raise InvalidInput("out_seconds must be after in_seconds", field="out_seconds", wanted="out > in")
        if t_out > duration + END_TOLERANCE_S:  # as the daemon's probe at submit
            raise InvalidInput(f"{t_out} s is past the end of the video ({duration:.3f} s)", field="out_seconds",
                               wanted=f"out_seconds <= {duration:.3f}")
    if t_in >= duration:
        raise InvalidInput(f"{t_in} s is past the end of the video ({duration:.3f} s)", field="in_seconds",
                           wanted=f"in_seconds < {duration:.3f}")
    clip = t_out - t_in
    if clip > MAX_SECONDS:
        raise InvalidInput(f"{clip:.1f} s is too long", field="out_seconds", wanted=f"a clip of at most {MAX_SECONDS:g} s")
    default_target = int(round(Fraction(str(round(clip, 9))) * SAMPLE_RATE))
    lp = plan_length(req.length, default_target_samples=max(1, default_target), default_max_frames=eng.window_frames)
    info: dict[str, Any] = {"mode": req.mode, "clip_seconds": clip, "caption": caption}
    if req.mode == "reference":
        prompt = build_video_prompt(eng.tok, caption)
    else:
        rep("encode", 0.0)
        video = eng.video_input(req.video, t_in, t_out, fps, int(req.max_frames), field="video")
        prompt = build_video_prompt(eng.tok, caption, video, video_pad_id=eng.video_token_id)
        t, h, w = video.grid
        info.update(video_grid=[t, h, w], video_tokens=video.n_tokens)
    plan = TaskPlan(task="video_score", sampling=sampling, seed=seed, length=lp, kind="windows", prompts=[prompt],
                    info=info)
    plan.timings["prepare"] = time.monotonic() - t0
    rep("prepare", 1.0)
    return plan
