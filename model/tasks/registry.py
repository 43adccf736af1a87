"""Which preparation runs for which request: the built-in tasks, and those the daemon teaches the engine
(client/tasks/ entries that bring their own ``prepare``)."""
from __future__ import annotations

from typing import Any, Callable

from ..errors import InvalidInput
from ..requests import MusicRequest, SpeechRequest, VideoScoreRequest
from .base import DEFAULTS, Reporter, TaskPlan
from .music import prepare_music
from .speech import prepare_speech
from .video_score import prepare_video


PREPARE = {"speech": prepare_speech, "music": prepare_music, "video_score": prepare_video}
TASK_OF = {SpeechRequest: "speech", MusicRequest: "music", VideoScoreRequest: "video_score"}


def task_of(req: Any) -> str:
    for cls, name in TASK_OF.items():
        if isinstance(req, cls):
            return name
    raise InvalidInput(f"unknown request type {type(req).__name__}", field="request",
                       wanted=", ".join(cls.__name__ for cls in TASK_OF))


def register_task(name: str, request_type: type, prepare: Callable[[Any, Any, Reporter], TaskPlan],
                  sampling_defaults: dict[str, Any] | None = None) -> None:
    """Teach the engine a task it does not know yet: ``prepare(engine, request, reporter)`` turns a
    ``request_type`` into a :class:`TaskPlan` (the daemon registers the tasks of client/tasks/ that bring
    their own preparation). Sampling defaults: the task's, else music's."""
    PREPARE[name] = prepare
    TASK_OF[request_type] = name
    DEFAULTS.setdefault(name, dict(sampling_defaults or DEFAULTS["music"]))
