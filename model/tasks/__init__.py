"""The tasks on top of generation: speech (voice-cloning TTS), music (also continuing a clip and
loops), video score; one module each, over what they share.

Each task: validate the request (InvalidInput naming the field) -> prepare inputs (reference voice,
video frames) -> plan generation items (sentence chunks, continuation windows, exact lengths); then a
:class:`Job` generates, decodes with the DAC and joins (pauses, crossfades).

- ``base.py``: sampling with the task's reference defaults, text and type checks, ``Reporter``, ``TaskPlan``
- ``job.py``: ``Job`` (rounds of generation items, assembling the audio), streamed previews
- ``speech.py``, ``music.py``, ``video_score.py``: each task's ``prepare_<task>`` and its own rules
- ``registry.py``: ``PREPARE`` / ``task_of`` / ``register_task`` (the daemon's tasks that bring their own)
- the length rule (target samples, frames to generate) is model/length.py's

The names below are this package's public ones (``from unimoe_audio.model.tasks import X``).
"""
from __future__ import annotations

from ..length import (DEFAULT_MIN_FRAMES, FRAMES_PER_SECOND, HOP, MAX_SECONDS, SAMPLE_RATE, LengthPlan,
                      plan_length, target_samples_of)
from .base import (CODEBOOK_SIZE, DEFAULTS, NUM_CODEBOOKS, SPEECH_PAUSE_SECONDS, Reporter, TaskPlan, check_text,
                   check_type, resolve_sampling)
from .job import STREAM_CONTEXT_FRAMES, IncrementalDecode, Job, crossfade_join, derive_seed, fade
from .music import music_target_samples, prepare_music
from .registry import PREPARE, TASK_OF, register_task, task_of
from .speech import (REFERENCE_MAX_SECONDS, SPEECH_FLOOR_FRAMES_PER_CHAR, SPEECH_MAX_CHARS, SPEECH_MIN_SHARE,
                     SPEECH_RATE_MARGIN, SPEECH_RATE_SLACK_FRAMES, check_voice_codes, frames_per_char,
                     prepare_speech, speech_chunk_frames)
from .video_score import VIDEO_MAX_PIXELS_TOTAL, prepare_video

__all__ = [
    "CODEBOOK_SIZE", "DEFAULTS", "DEFAULT_MIN_FRAMES", "FRAMES_PER_SECOND", "HOP", "IncrementalDecode", "Job",
    "LengthPlan", "MAX_SECONDS", "NUM_CODEBOOKS", "PREPARE", "REFERENCE_MAX_SECONDS", "Reporter", "SAMPLE_RATE",
    "SPEECH_FLOOR_FRAMES_PER_CHAR", "SPEECH_MAX_CHARS", "SPEECH_MIN_SHARE", "SPEECH_PAUSE_SECONDS",
    "SPEECH_RATE_MARGIN", "SPEECH_RATE_SLACK_FRAMES", "STREAM_CONTEXT_FRAMES", "TASK_OF", "TaskPlan",
    "VIDEO_MAX_PIXELS_TOTAL", "check_text", "check_type", "check_voice_codes", "crossfade_join", "derive_seed",
    "fade", "frames_per_char", "music_target_samples", "plan_length", "prepare_music", "prepare_speech",
    "prepare_video", "register_task", "resolve_sampling", "speech_chunk_frames", "target_samples_of", "task_of",
]
