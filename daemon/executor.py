"""Where the worker's jobs run: a small interface, so the local engine can be swapped for another
backend (e.g. a pool of remote engines) without touching the worker's job DB and event logic.

The worker admits jobs between steps (``add``), calls ``step`` while anything is in flight, and
learns each job's outcome through the ``on_done`` callback it gave ``add`` (called exactly once per
job: an ``AudioResult``-like object with ``audio``, ``sample_rate``, ``seed``, ``seconds`` and
``timings``, or the exception that stopped the job). Progress and cancel go through the
``progress`` callback (raising ``Cancelled`` from it stops that job at its next step).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

from .model_host import ModelHost

OnDone = Callable[[Any], None]


class JobExecutor(Protocol):
    def load(self) -> None:
        """Make sure the model is ready (raises ``ModelLoadFailed`` with the error to report)."""

    def in_flight(self) -> int:
        """Jobs added and not yet done."""

    def add(self, request: Any, progress: Callable[[Any], Any], on_done: OnDone) -> None:
        """Prepare a model request and join it to the running batch (at a step boundary). A job that
        fails to load or prepare gets ``on_done(exception)`` at once."""

    def step(self) -> None:
        """One decode step for every job in flight (``on_done`` for those that finish)."""

    def abort(self, exc: BaseException) -> None:
        """Give up on every job in flight (``on_done(exc)`` for each)."""


class LocalEngineExecutor:
    """Jobs on the daemon's own engine (ModelHost), continuously batched (model/scheduler.py)."""

    def __init__(self, host: ModelHost):
        self.host = host
        self.batch: Any = None  # model.scheduler.JobBatch while jobs are in flight

    def load(self) -> None:
        self.host.ensure_loaded()

    def in_flight(self) -> int:
        return len(self.batch) if self.batch is not None else 0

    def add(self, request: Any, progress: Callable[[Any], Any], on_done: OnDone) -> None:
        try:
            engine = self.host.ensure_loaded()
            job = engine.prepare(request, progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the job's owner
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            on_done(exc)
            return
        if self.batch is None:
            self.batch = engine.job_batch()
        try:
            self.batch.add(job, on_done)
        finally:
            self._after_fault()
            self._drop_if_empty()

    def step(self) -> None:
        if self.batch is None:
            return
        try:
            self.batch.step()
        finally:
            self._after_fault()
            self._drop_if_empty()
            self.host.touch()

    def _after_fault(self) -> None:
        """After a CUDA error the batch has failed its jobs (DeviceFault): drop it and have the host
        reload the model in a fresh context before the next job."""
        fault = getattr(self.batch, "fault", None) if self.batch is not None else None
        if fault is not None:
            self.batch = None
            self.host.device_fault(fault)

    def abort(self, exc: BaseException) -> None:
        if self.batch is not None:
            b, self.batch = self.batch, None
            b.abort(exc)

    def _drop_if_empty(self) -> None:
        if self.batch is not None and not self.batch:
            self.batch.session.close()
            self.batch = None
