"""Request building: the flat field names of the CLI, batch files and host scripts -> a typed SubmitRequest."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import protocol as P
from . import tasks
from .errors import BadRequest, from_protocol_error

__all__ = ["task_name", "build_request"]



def task_name(kind: str) -> str | None:
    """The protocol task of a flat name (``score`` -> ``video_score``), or None."""
    t = tasks.find(kind)
    return t.name if t is not None else None

_SAMPLING = ("seed", "cfg_scale", "temperature", "top_p", "top_k", "eos_factor")
_LENGTH = {"seconds": "seconds", "frames": "frames", "fps": "fps", "min_seconds": "min_seconds",
           "max_seconds": "max_seconds"}
_OUTPUT = ("sample_rate", "channels", "bit_depth", "true_peak_db", "fit_length", "overwrite")
_TOP = ("priority", "stream_partial", "tag")
_SPOT = ("record_in", "drop", "project", "scene", "take", "note")


def build_request(kind: str, **fields: Any) -> P.SubmitRequest:
    """A SubmitRequest from flat fields.

    ``kind``: speech, music or score. Fields: the task's own (text, voice, reference_audio,
    reference_text / caption, tempo_bpm, key, bars / video, caption, in_seconds, out_seconds, mode ...),
    ``seconds`` (or frames + fps, min_seconds, max_seconds), sampling (seed, cfg_scale, temperature,
    top_p, top_k), output (``output``: a file path, or ``folder`` + ``name``; sample_rate, channels,
    bit_depth, ``loudness``: LUFS or "off", true_peak_db), priority, stream_partial, tag, and spotting
    (``record_in``: a timecode at ``fps``, or seconds since midnight as ``"3600.5s"``; ``drop``,
    ``project``, ``scene``, ``take``, ``note``: see :class:`~unimoe_audio.client.protocol.SpotInfo`).
    Paths are made absolute here (the daemon resolves nothing relative to the client's cwd).
    Raises BadRequest naming the field.
    """
    td = tasks.find(kind)
    if td is None:
        kinds = ", ".join(t.kind for t in tasks.all_tasks())
        raise BadRequest(f"unknown task {kind!r} ({kinds})", "invalid_input", "task")
    task, own, files = td.name, td.own_fields(), td.input_files
    fields = {k: v for k, v in fields.items() if v is not None}
    spec: dict[str, Any] = {"task": task}
    length: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    output: dict[str, Any] = {}
    top: dict[str, Any] = {}
    spot: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "fps" and "record_in" in fields:
            spot["fps"] = value  # the timeline's rate: the record-in's, and the length's when frames are given
            if "frames" in fields:
                length["fps"] = value
        elif key == "record_in":
            text = str(value).strip()
            if text.endswith("s") and ":" not in text:
                try:
                    spot["seconds"] = float(text[:-1])
                except ValueError:
                    raise BadRequest(f"record_in: not a timecode or seconds: {value!r}", "invalid_input",
                                     "spot.record_in") from None
                spot.pop("fps", None)
            else:
                spot["record_in"] = text
        elif key in _SPOT:
            spot[key] = value
        elif key in own:
            if key in files:
                value = str(Path(str(value)).expanduser().resolve())
            spec[key] = value
        elif key in _LENGTH:
            length[_LENGTH[key]] = value
        elif key in _SAMPLING:
            sampling[key] = value
        elif key in _OUTPUT:
            output[key] = value
        elif key == "loudness":
            if isinstance(value, str) and value.lower() in ("off", "none", "no"):
                output["normalize"] = False
            else:
                output["loudness_lufs"] = float(value)
        elif key == "output":
            p = Path(str(value)).expanduser().resolve()
            output["folder"] = str(p.parent)
            output["name"] = p.stem
        elif key in ("folder", "name"):
            output[key] = str(Path(value).expanduser().resolve()) if key == "folder" else value
        elif key in _TOP:
            top[key] = value
        else:
            raise BadRequest(f"{key}: unknown field for a {kind} request", "invalid_input", key)
    if length:
        spec["length"] = length
    if sampling:
        spec["sampling"] = sampling
    if "seconds" in spot:
        spot.pop("fps", None)  # a position in seconds needs no rate
    if spot:
        top["spot"] = spot
    try:
        return P.SubmitRequest(spec=spec, output=output, **top)
    except ValidationError as exc:
        raise from_protocol_error(P.validation_error(exc)) from None
