"""Batch files: a JSON or YAML list of generation requests, like the reference's task files.

Each item is a mapping. The reference's keys are accepted as they are (``task_type``, ``task_id``,
``caption``, ``target_text``, ``reference_audio``, ``reference_text``, ``output_path``), and so are the
CLI's option names (``text``, ``voice``, ``seconds``, ``bars``, ``tempo``, ``key``, ``seed``, ``video``,
``in``, ``out``, ``output``, ``sample_rate``, ``channels``, ``bit_depth``, ``loudness``, and the timeline's
``frames``, ``fps``, ``record_in``, ``project``, ``scene``, ``take``, ``note``...). Unknown keys
are an error, so a typo never silently falls back to a default.

Relative paths inside a batch file are relative to the batch file's folder. ``output_path`` may name a
file (it has an audio suffix) or a folder (the file is then ``<task_id>.wav`` inside it).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tasks

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}

TASK_ALIASES = {
    "speech": "speech", "speak": "speech", "tts": "speech", "text_to_speech": "speech", "voice_clone": "speech",
    "music": "music", "t2m": "music", "text_to_music": "music",
    "score": "score", "video": "score", "vt2m": "score", "video_to_music": "score",
    "video_text_to_music": "score",
}

# key in the file -> canonical request field
_COMMON = {
    "task_type": None, "task": None, "type": None,
    "task_id": "id", "id": "id", "name": "id",
    "output_path": "output", "output": "output", "o": "output",
    "sample_rate": "sample_rate", "channels": "channels", "bit_depth": "bit_depth",
    "loudness": "loudness", "loudness_lufs": "loudness",
    "seed": "seed", "cfg_scale": "cfg_scale", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k",
    "seconds": "seconds", "duration": "seconds",
    # timeline: exact frame lengths and spotting (BWF bext time reference + iXML)
    "frames": "frames", "fps": "fps", "record_in": "record_in", "project": "project", "scene": "scene",
    "take": "take", "note": "note",
}
_BY_TASK = {
    "speech": {
        "target_text": "text", "text": "text", "input": "text",
        "reference_audio": "reference_audio", "ref_audio": "reference_audio", "audio": "reference_audio",
        "reference_text": "reference_text", "ref_text": "reference_text", "transcript": "reference_text",
        "voice": "voice",
    },
    "music": {
        "caption": "caption", "text": "caption", "input": "caption",
        "bars": "bars", "tempo": "tempo_bpm", "bpm": "tempo_bpm", "tempo_bpm": "tempo_bpm", "key": "key",
        "variations": "variations",
    },
    "score": {
        "video": "video", "video_path": "video", "caption": "caption", "text": "caption",
        "in": "in_seconds", "in_seconds": "in_seconds", "start": "in_seconds",
        "out": "out_seconds", "out_seconds": "out_seconds", "end": "out_seconds",
        "mode": "mode",
    },
}
_PATH_FIELDS = {"output"}  # and every task's input files (client/tasks/)


class BatchError(ValueError):
    """The batch file cannot be read or one of its items is invalid (CLI exit code 2)."""


@dataclass
class BatchItem:
    index: int
    task: str  # "speech" | "music" | "score"
    id: str
    fields: dict[str, Any] = field(default_factory=dict)  # canonical names, see the tables above
    output: Path | None = None


def load_batch_file(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSON or YAML batch file into a list of mappings (a ``{"tasks": [...]}`` wrapper is accepted)."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise BatchError(f"cannot read batch file {p}: {exc.strerror or exc}") from None
    data: Any
    if p.suffix.lower() in (".yaml", ".yml"):
        data = _yaml(text, p)
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            if p.suffix.lower() == ".json":
                raise BatchError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
            data = _yaml(text, p)
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    if not isinstance(data, list):
        raise BatchError(f"{p}: wanted a list of requests, got {type(data).__name__}")
    if not data:
        raise BatchError(f"{p}: the list of requests is empty")
    return data


def _yaml(text: str, p: Path) -> Any:
    import yaml  # light, pure-python fallback available; imported only for YAML batch files

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise BatchError(f"{p}: not valid YAML ({exc})") from None


def parse_item(raw: Any, index: int, base_dir: Path) -> BatchItem:
    where = f"item {index + 1}"
    if not isinstance(raw, dict):
        raise BatchError(f"{where}: wanted a mapping, got {type(raw).__name__}")
    kind_raw = raw.get("task_type", raw.get("task", raw.get("type")))
    if kind_raw is None:
        raise BatchError(f"{where}: missing 'task_type' (one of {', '.join(sorted(set(TASK_ALIASES)))})")
    task = TASK_ALIASES.get(str(kind_raw).strip().lower())
    known = tasks.find(task or str(kind_raw).strip())
    if known is None:
        kinds = ", ".join(t.kind for t in tasks.all_tasks())
        raise BatchError(f"{where}: unknown task_type {kind_raw!r} (use {kinds})")
    task = task or known.kind
    # the reference's and the CLI's names of the built-in tasks' fields; any task's own field names
    table = {**_COMMON, **{f: f for f in known.own_fields()}, **_BY_TASK.get(task, {})}
    fields: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in table:
            raise BatchError(f"{where} ({task}): unknown key {key!r}; allowed: {', '.join(sorted(table))}")
        canon = table[key]
        if canon is None or value is None:
            continue
        if canon in fields and fields[canon] != value:
            raise BatchError(f"{where}: {key!r} repeats a value already given under another name")
        fields[canon] = value
    for req in known.required:
        if not fields.get(req):
            raise BatchError(f"{where} ({task}): missing {req!r}")
    if task == "speech" and not fields.get("voice") and not (fields.get("reference_audio") and fields.get("reference_text")):
        raise BatchError(f"{where} (speech): give 'voice', or 'reference_audio' with 'reference_text'")
    for key in (_PATH_FIELDS | set(known.input_files)) & fields.keys():
        q = Path(str(fields[key])).expanduser()
        fields[key] = str(q if q.is_absolute() else (base_dir / q))
    item_id = str(fields.pop("id", f"{task}_{index + 1:03d}"))
    if not item_id or "/" in item_id or "\\" in item_id:
        raise BatchError(f"{where}: bad task_id {item_id!r}")
    out = fields.pop("output", None)
    output = None
    if out is not None:
        o = Path(out)
        output = o if o.suffix.lower() in AUDIO_SUFFIXES else o / f"{item_id}.wav"
    return BatchItem(index=index, task=task, id=item_id, fields=fields, output=output)


def parse_batch(path: str | Path) -> list[BatchItem]:
    """Read and validate every item of a batch file before anything is submitted."""
    p = Path(path).expanduser().resolve()
    items = [parse_item(raw, i, p.parent) for i, raw in enumerate(load_batch_file(p))]
    seen: dict[str, int] = {}
    for it in items:
        if it.id in seen:
            raise BatchError(f"item {it.index + 1}: task_id {it.id!r} repeats item {seen[it.id] + 1}")
        seen[it.id] = it.index
    return items
