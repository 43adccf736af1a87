"""The task registry: one :class:`TaskDef` per task, declared by the task's own module.

A task module (``client/tasks/music.py``, or any module named in ``UNIMOE_AUDIO_TASKS``) declares:

- its request fields and their limits: a :class:`~unimoe_audio.client.spec.TaskSpecBase` subclass;
- its flat names (CLI verbs, batch files, ``Client.submit``), its OSC address and positional arguments;
- which fields name input files (made absolute by the client, checked inside the allowed roots at
  submit and again when the job runs, shipped to Ray actors);
- the hooks the daemon runs: ``probe`` (open the inputs at submit, so a bad file is refused naming its
  field) and ``model_request`` (the spec as the engine's request dataclass), and for a task the engine
  does not know yet, ``prepare`` (the engine's preparation of that request);
- the panel's hints (tab label, help text per field).

The protocol, the OSC bridge, the probe, the worker, the Ray backend, the request builder and the panel
read this registry, so a new task is one module. Hooks run only in the daemon and import the daemon's
and the model's helpers inside the function, so a task module imports without torch.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

from ..spec import TaskSpecBase

__all__ = ["TaskDef", "ProbeContext", "ModelContext", "register", "get", "find", "names", "all_tasks",
           "input_fields", "load_plugins", "PLUGIN_ENV"]

#: Extra task modules to import (comma-separated module names), in clients and in the daemon alike.
PLUGIN_ENV = "UNIMOE_AUDIO_TASKS"


@dataclass
class ProbeContext:
    """What a task's ``probe`` hook may use at submit (in the daemon's main thread). The daemon hands in
    its helpers, so a task module never imports the daemon."""

    roots: Any  # the allowed roots (daemon.outputs)
    voices: Any  # the VoiceStore: exists(name)
    media: Any  # daemon/probe.py: probe_reference_audio(path, field), probe_video(path, in, out, field) ...
    error: type[Exception]  # ProtocolError: raise ctx.error(code, message, field=..., wanted=...)


@dataclass
class ModelContext:
    """What a task's ``model_request`` hook gets: the fields every engine request shares, already mapped."""

    length: Any  # model.requests.Length
    sampling: Any  # model.requests.SamplingParams
    stream_every: float | None
    voices: Any  # the VoiceStore


@dataclass(frozen=True)
class TaskDef:
    name: str  #: the protocol's task name (``spec.task``, the job's ``task``)
    spec: type[TaskSpecBase]  #: request fields and their limits
    kinds: tuple[str, ...] = ()  #: flat names (CLI, batch, Client.submit); the first is the short one
    label: str = ""  #: the panel's tab and job-list label
    osc_address: str = ""  #: e.g. "/unimoe/music"; empty: not on OSC
    osc_args: tuple[str, ...] = ()  #: spec fields given positionally after the address (strings)
    osc_aliases: dict[str, str] = field(default_factory=dict)  #: OSC key -> spec field ("in" -> "in_seconds")
    input_files: tuple[str, ...] = ()  #: spec fields naming input files
    probe: Callable[[Any, ProbeContext], None] | None = None  #: daemon: check inputs at submit (ProtocolError)
    model_request: Callable[[Any, ModelContext], Any] | None = None  #: daemon: spec -> engine request
    prepare: Callable[..., Any] | None = None  #: engine: (engine, request, reporter) -> TaskPlan, new tasks only
    request_type: type | None = None  #: the engine request class ``prepare`` takes (new tasks only)
    sampling_defaults: dict[str, Any] | None = None  #: the engine's defaults for this task (new tasks only)
    form: dict[str, str] = field(default_factory=dict)  #: panel hints: field -> help text
    required: tuple[str, ...] = ()  #: fields a flat request must give (batch files, the panel's check)

    @property
    def kind(self) -> str:
        """The short flat name (``score`` for video_score)."""
        return self.kinds[0] if self.kinds else self.name

    def own_fields(self) -> tuple[str, ...]:
        """The spec's own fields (not task, length, sampling): the flat vocabulary of this task."""
        return tuple(n for n in self.spec.model_fields if n not in ("task", "length", "sampling"))

    def osc_keys(self) -> dict[str, str]:
        """OSC key -> spec field, for the optional key-value arguments."""
        keys = {n: n for n in self.own_fields() if n not in self.osc_args}
        for alias, target in self.osc_aliases.items():
            keys.pop(target, None)
            keys[alias] = target
        return keys


_TASKS: dict[str, TaskDef] = {}
_KINDS: dict[str, str] = {}


def register(task: TaskDef) -> TaskDef:
    """Add a task (a module calls this at import). A name registered twice must be the same task."""
    known = _TASKS.get(task.name)
    if known is not None and known.spec is not task.spec:
        raise ValueError(f"task {task.name!r} is registered twice")
    if task.spec.model_fields["task"].default != task.name:
        raise ValueError(f"task {task.name!r}: its spec needs task: Literal[{task.name!r}] = {task.name!r}")
    _TASKS[task.name] = task
    for k in (task.name, *task.kinds):
        _KINDS[k] = task.name
    return task


def get(name: str) -> TaskDef:
    """The task of a protocol name (``video_score``) or a flat name (``score``); KeyError if none."""
    return _TASKS[_KINDS[name]]


def find(name: str) -> TaskDef | None:
    t = _KINDS.get(name)
    return _TASKS[t] if t is not None else None


def names() -> tuple[str, ...]:
    return tuple(_TASKS)


def all_tasks() -> tuple[TaskDef, ...]:
    return tuple(_TASKS.values())


def input_fields() -> tuple[str, ...]:
    """Every task's input-file fields (the names Ray ships as bytes)."""
    out: list[str] = []
    for t in _TASKS.values():
        out.extend(f for f in t.input_files if f not in out)
    return tuple(out)


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the task modules named in ``UNIMOE_AUDIO_TASKS`` (comma-separated); returns their names."""
    spec = os.environ.get(PLUGIN_ENV, "") if spec is None else spec
    loaded = []
    for name in (s.strip() for s in spec.split(",")):
        if name:
            importlib.import_module(name)
            loaded.append(name)
    return loaded
