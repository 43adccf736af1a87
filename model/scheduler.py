"""Continuous batching of requests: task jobs join a running batch at a step boundary and leave
when done, so a short request that arrives while a long one runs does not wait for it.

    batch = engine.job_batch()                       # one DecodeSession underneath
    batch.add(engine.prepare(req, progress), on_done=lambda res: ...)   # any time between steps
    while batch:
        batch.step()                                 # one decode step for every job in flight

A :class:`~.tasks.Job` yields generation items round by round (speech: all its sentence chunks at
once; music and video: one continuation window after another). Its items are added to the session
(their prefill, then their rows in the shared cache); when all of a round's items are done the job
accepts them and its next round joins at once, without waiting for the other jobs. A finished job's
audio is assembled (codec decode) at that step boundary and handed to its ``on_done``.

What stays exact per job, whatever else shares the batch: its progress and cancel (the job's own
callbacks, called every step; a raised ``Cancelled`` stops only its items), its seeds (each item's
own counter-based random stream, model/sampling.py) and its codes (rows never mix). An item that
fails on its own (non-finite logits: ``BadLogits``) fails its job only. A step that fails as a whole
fails every job in it; when the accelerator itself failed (a CUDA error) they fail with
``DeviceFault`` and :attr:`JobBatch.fault` tells the owner to reload the model before going on.
Priority is the caller's: it decides who is added next.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .errors import as_device_fault, is_device_fault
from .generation import DecodeSession
from .tasks import Job

# Test hook for the device-fault path on machines without a GPU: "N" raises torch.AcceleratorError (the
# type a CUDA fault raises) from the Nth decode step of this process, once. Unset in normal use.
# Test hook: "N" makes the Nth decode step of the process raise the error type a CUDA fault raises,
# once; "N:sticky" also leaves the (simulated) context unusable, as a device-side assert does, so the
# daemon's device probe fails and it restarts in a fresh process (which drops the hook: once per daemon).
SIMULATE_FAULT_ENV = "UNIMOE_AUDIO_SIMULATE_DEVICE_FAULT"
_steps_run = 0
_sticky_fired = False


def _maybe_simulated_fault() -> None:
    global _steps_run, _sticky_fired
    _steps_run += 1
    at = os.environ.get(SIMULATE_FAULT_ENV)
    if at and _steps_run == int(at.split(":")[0]):
        _sticky_fired = at.endswith(":sticky")
        raise torch.AcceleratorError("CUDA error: device-side assert triggered (simulated by "
                                     f"{SIMULATE_FAULT_ENV}={at})")


def simulated_dead_context() -> bool:
    """True once the test hook's sticky fault fired in this process (the device probe then fails)."""
    return _sticky_fired

OnDone = Callable[[Any], None]  # AudioResult or the exception that stopped the job


@dataclass
class _Entry:
    job: Job
    on_done: OnDone | None
    states: list[Any] = field(default_factory=list)  # the session handles of its current round
    result: Any = None


class JobBatch:
    """Jobs in flight on one :class:`~.generation.DecodeSession` (see the module docstring)."""

    def __init__(self, session: DecodeSession, decode: Callable[[np.ndarray], np.ndarray],
                 fit_length: Callable[..., np.ndarray] | None):
        self.session = session
        self.decode = decode
        self.fit_length = fit_length
        self.entries: list[_Entry] = []
        # the accelerator's error that ended this batch (every job in it failed with DeviceFault); the
        # owner must reload the model in a fresh context before running anything else on it
        self.fault: BaseException | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)

    @property
    def jobs(self) -> list[Job]:
        return [e.job for e in self.entries]

    @property
    def rows(self) -> int:
        """Decode rows in use (a CFG item takes two)."""
        return self.session.n_rows

    def add(self, job: Job, on_done: OnDone | None = None) -> list[tuple[Job, Any]]:
        """Join ``job`` now (its first round's prefill runs here). Returns the jobs that finished in
        doing so (this one, when it has nothing to generate or its prefill failed)."""
        e = _Entry(job, on_done)
        self.entries.append(e)
        try:
            with torch.inference_mode():
                return self._next_round(e)
        except _Fault as f:
            return self._device_fault(f.exc)

    def step(self) -> list[tuple[Job, Any]]:
        """One decode step for every job in flight; returns (job, result or exception) for each job
        that finished in it (its ``on_done`` was called too)."""
        if not self.session.active and not self.session.waiting:
            try:
                return self._flush()
            except _Fault as f:
                return self._device_fault(f.exc)
        t = time.monotonic()
        try:
            with torch.inference_mode():
                _maybe_simulated_fault()
                done = self.session.step()
        except BaseException as exc:  # noqa: BLE001 - the whole step failed: every job in it fails
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if is_device_fault(exc):
                return self._device_fault(exc)
            return self.abort(exc)
        try:
            return self._after_step(done, time.monotonic() - t)
        except _Fault as f:
            return self._device_fault(f.exc)

    def _after_step(self, done: list[Any], dt: float) -> list[tuple[Job, Any]]:
        live = {id(st) for st in self.session.active + self.session.waiting}
        finished: list[tuple[Job, Any]] = []
        done_ids = {id(st) for st in done}
        for e in list(self.entries):
            if not e.states:
                continue
            e.job.gen_seconds += dt
            failed = [st for st in e.states if id(st) in done_ids and st.error is not None]
            if failed and any(id(st) in live for st in e.states):
                # one of the job's items failed (bad logits, cancel): its other items are of no use
                self.session.drop(e.states)
                live = {id(st) for st in self.session.active}
            if any(id(st) in done_ids for st in e.states) and not any(id(st) in live for st in e.states):
                results = [self.session.result(st) for st in e.states]
                e.states = []
                e.job.accept(results)
                with torch.inference_mode():
                    finished += self._next_round(e)
        return finished

    def _flush(self) -> list[tuple[Job, Any]]:
        out = []
        for e in list(self.entries):
            if not e.states:
                with torch.inference_mode():
                    out += self._next_round(e)
        return out

    def _next_round(self, e: _Entry) -> list[tuple[Job, Any]]:
        job = e.job
        try:
            items = job.next_items()
        except BaseException as exc:  # noqa: BLE001
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            job.error = exc
            items = []
        if items:
            t = time.monotonic()
            try:
                e.states = self.session.add(items)
                job.gen_seconds += time.monotonic() - t
                return []
            except BaseException as exc:  # noqa: BLE001 - this job's prefill failed; the others go on
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                if is_device_fault(exc):
                    raise _Fault(exc) from exc  # the device is gone for every job, not only this one
                job.error = exc
        elif job.error is None:
            job.done = True
        return self._finish(e)

    def _finish(self, e: _Entry) -> list[tuple[Job, Any]]:
        job = e.job
        if e in self.entries:
            self.entries.remove(e)
        if job.error is not None:
            res: Any = job.error
        else:
            try:
                res = job.assemble(self.decode, self.fit_length)
            except BaseException as exc:  # noqa: BLE001
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                res = exc
        e.result = res
        if e.on_done is not None:
            e.on_done(res)
        return [(job, res)]

    def _device_fault(self, exc: BaseException) -> list[tuple[Job, Any]]:
        """The accelerator failed: every job in flight fails with a named ``DeviceFault``."""
        fault = as_device_fault(exc)
        self.fault = fault
        return self.abort(fault)

    def abort(self, exc: BaseException) -> list[tuple[Job, Any]]:
        """Give up on every job in flight: each finishes with ``exc``."""
        self.session.close()
        out = []
        for e in list(self.entries):
            e.job.error = exc
            out += self._finish(e)
        return out

    def run(self) -> None:
        """Step until every job is done."""
        while self.entries:
            self.step()


class _Fault(Exception):
    """Carries a device fault out of a job's round to the batch (which fails every job)."""

    def __init__(self, exc: BaseException):
        super().__init__(str(exc))
        self.exc = exc
