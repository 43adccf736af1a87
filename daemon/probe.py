"""Input probing at submit: a job whose inputs cannot work is refused at once with the field named
(exit 2 in the CLI), instead of failing minutes later in the worker.

The path checks (allowed roots, file exists) stay in daemon/outputs.py; this module opens the files
with ffprobe (model/media.py) and checks what the job will need of them: a reference recording with
an audio stream, a video with frames that lasts past the requested clip, an output folder that can be
created. ffprobe reads headers only, so a probe costs tens of milliseconds, not a decode.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ..client import tasks
from ..client.protocol import ProtocolError, SubmitRequest
from ..client.spec import MAX_SECONDS
from ..model import media
from ..model.errors import UniMoEError

END_TOLERANCE_S = media.END_TOLERANCE_S


def _media_info(path: str, field: str) -> media.MediaInfo:
    try:
        return media.probe(path, field=field)
    except UniMoEError as exc:
        raise ProtocolError("media_error", str(exc).removeprefix(f"{field}: "), field=field,
                            wanted=exc.wanted or "a file ffmpeg can read") from None


def probe_reference_audio(path: str, field: str = "spec.reference_audio") -> media.MediaInfo:
    info = _media_info(path, field)
    if not info.has_audio:
        raise ProtocolError("media_error", f"{Path(path).name} has no audio stream", field=field,
                            wanted="a recording of the voice (wav, flac, mp3, ...)")
    if not info.duration > 0:
        raise ProtocolError("media_error", f"{Path(path).name} has no duration (no audio)", field=field,
                            wanted="a recording of the voice (wav, flac, mp3, ...)")
    return info


def probe_video(path: str, in_seconds: float, out_seconds: float | None, field: str = "spec.video") -> media.MediaInfo:
    info = _media_info(path, field)
    if not info.has_video:
        raise ProtocolError("media_error", f"{Path(path).name} has no video stream", field=field, wanted="a video file")
    if not info.duration > 0:
        raise ProtocolError("media_error", f"{Path(path).name} has no duration (no frames)", field=field,
                            wanted="a video file with frames")
    if in_seconds >= info.duration:
        raise ProtocolError("invalid_input", f"{in_seconds:g} s is at or past the end of the video "
                            f"({info.duration:.2f} s)", field="spec.in_seconds",
                            wanted=f"a start before {info.duration:.2f} s")
    end = info.duration if out_seconds is None else out_seconds
    if end - in_seconds > MAX_SECONDS:
        raise ProtocolError("invalid_input", f"a clip of {end - in_seconds:.1f} s is too long", field="spec.out_seconds",
                            wanted=f"a clip of at most {MAX_SECONDS:g} s (give out_seconds)")
    if out_seconds is not None and out_seconds > info.duration + END_TOLERANCE_S:
        raise ProtocolError("invalid_input", f"{out_seconds:g} s is past the end of the video "
                            f"({info.duration:.2f} s)", field="spec.out_seconds",
                            wanted=f"an end at or before {info.duration:.2f} s")
    return info


def probe_music_splice(spec: Any, field: str = "spec.continue_audio") -> None:
    """A music continuation or loop (model/continuation.py): the clip is audio and at least 1 s long, and
    the lengths work out (the join inside the clip, an end after it, a loop of at least a bar): the same
    rules the engine applies when it plans the job, so what passes here does not fail there."""
    from ..model.continuation import plan_times

    duration = None
    if spec.continue_audio:
        name = Path(spec.continue_audio).name
        try:
            info = _media_info(spec.continue_audio, field)
        except ProtocolError as exc:
            raise ProtocolError("media_error", f"{name} is not audio ({exc.message})", field=field,
                                wanted="an audio file (wav, flac, aiff, mp3, ...)") from None
        if not info.has_audio:
            raise ProtocolError("media_error", f"{name} is not audio: it has no audio stream", field=field,
                                wanted="an audio file (wav, flac, aiff, mp3, ...)")
        duration = info.duration
    try:
        plan_times(spec, duration)
    except UniMoEError as exc:
        raise ProtocolError(exc.code, exc.detail, field=f"spec.{exc.field}" if exc.field else field,
                            wanted=exc.wanted) from None


def probe_output_folder(folder: Path, field: str = "output.folder") -> None:
    """The folder exists and is writable, or its nearest existing parent is a writable folder (the
    worker creates the rest when it writes the file)."""
    p = Path(folder)
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise ProtocolError("invalid_input", f"{p} is not a folder", field=field, wanted="a folder")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ProtocolError("path_not_allowed", f"{p} is not writable by the daemon", field=field,
                            wanted="a folder the daemon's user can write")


def probe_submit(req: SubmitRequest, output_folder: Path, roots: list[Path], voices: Any) -> None:
    """Everything a submit can check about its inputs before it is queued (raises ProtocolError): the
    task's own probe (client/tasks/; it gets this module's probes and the voices), then the output folder."""
    task = tasks.get(req.spec.task)
    if task.probe is not None:
        task.probe(req.spec, tasks.ProbeContext(roots=roots, voices=voices, media=sys.modules[__name__],
                                                error=ProtocolError))
    probe_output_folder(output_folder)
