"""Where the worker's jobs run: one small interface, so the local engine and a Ray cluster of engines
(daemon/ray_backend.py) are driven by the same worker loop (daemon/worker.py), which keeps the job DB,
the events and the files.

At a step boundary the worker asks the executor for its open ``slots`` (room for jobs of a batch key),
claims queued jobs for the first slot that can take them, and hands them over with ``add``. It calls
``step`` while anything is in flight and learns each job's outcome through the ``on_done`` callback it
gave ``add`` (called exactly once per job, from any thread: an ``AudioResult``-like object with
``audio``, ``sample_rate``, ``seed``, ``seconds``, ``timings`` and ``info``, or the exception that
stopped the job; :class:`Rerun` asks for the job to be queued again). Progress and cancel go through the
``progress`` callback (raising ``Cancelled`` from it stops that job at its next step).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from ..client.protocol import BackendInfo, ErrorReply
from .model_host import ModelHost, ModelLoadFailed

OnDone = Callable[[Any], None]
Progress = Callable[[Any], Any]


class Internal(Exception):
    """A job given up because of a daemon bug (logged); reported as an ``internal`` error."""


class Rerun(Exception):
    """The job's run was lost with the engine that held it (a Ray actor or its node died): queue it again,
    the attempt counts. The message is the requeued event's reason."""


@dataclass
class Slot:
    """Room for jobs at a step boundary: ``room`` more jobs of batch key ``key`` (None: an empty batch,
    the first job claimed sets the key), joining ``in_flight`` jobs already running there."""

    key: str | None
    room: int
    in_flight: int = 0
    # True: the head of the queue plus its compatible jobs from anywhere behind it (``JobStore.claim``);
    # False: the head only while it may join (``JobStore.claim_next``: priority stays strict)
    gather: bool = False
    target: Any = None  # the executor's own (Ray: the engine actor)
    started: dict[str, Any] = field(default_factory=dict)  # extra fields of the jobs' ``started`` events


class JobExecutor(Protocol):
    # Whether worker operations (voice encoding, unload) wait until no job is in flight (the local engine
    # runs one thing at a time; Ray actors answer them beside their batches).
    exclusive: bool

    def start(self) -> None:
        """On the worker thread, before its loop (load the model now if the settings ask)."""

    def status(self) -> BackendInfo:
        """The backend's part of ``status``."""

    def slots(self, max_batch: int) -> list[Slot]:
        """Where jobs may be added now, in the order to try them (empty: none now, jobs stay queued)."""

    def queue_refusal(self) -> ErrorReply | None:
        """An error every queued job must fail with now (the backend stayed unreachable too long), or None."""

    def pack(self, job_id: str, request: Any) -> Any:
        """The model request as ``add`` takes it (on the worker thread; raising fails that job before it
        starts)."""

    def load(self) -> None:
        """Make sure the model is ready (raises ``ModelLoadFailed`` with the error to report)."""

    def in_flight(self) -> int:
        """Jobs added and not yet done."""

    def add(self, slot: Slot, key: str, jobs: list[tuple[Any, Progress, OnDone]]) -> None:
        """Start packed requests in ``slot`` (their batch key ``key``). A job that fails to load or prepare
        gets ``on_done(exception)`` at once."""

    def step(self, wake: threading.Event) -> None:
        """Advance the jobs in flight: one decode step here, or, where they run elsewhere, wait for news
        (a result, or ``wake``: the worker has work) a moment."""

    def abort(self, exc: BaseException) -> None:
        """Give up on every job in flight (``on_done(exc)`` for each)."""

    def cancel(self, job_id: str) -> None:
        """Stop a job in flight now where the progress callback cannot (a remote engine); from any thread."""

    def stopping(self, requeue_running: bool) -> None:
        """The daemon stops (from the main thread): jobs in flight are to end soon."""

    def idle(self) -> None:
        """Nothing in flight, nothing admitted: housekeeping (the keep-alive unload)."""

    def close(self) -> None:
        """After the worker's loop: release the engine."""

    def encode_voice(self, audio_path: Path, transcript: str) -> Any:
        """A reference recording as voice codes."""


class LocalEngineExecutor:
    """Jobs on the daemon's own engine (ModelHost), continuously batched (model/scheduler.py)."""

    exclusive = True

    def __init__(self, host: ModelHost, load_at_start: bool = False):
        self.host = host
        self.load_at_start = load_at_start
        self.batch: Any = None  # model.scheduler.JobBatch while jobs are in flight
        self.key: str | None = None  # batch_key of the jobs in flight

    def start(self) -> None:
        if self.load_at_start:
            try:
                self.host.ensure_loaded()
            except ModelLoadFailed:
                pass  # status shows the error; each job reports it

    def status(self) -> BackendInfo:
        return BackendInfo(kind="local", state="ready")

    def slots(self, max_batch: int) -> list[Slot]:
        n = self.in_flight()
        if not n:
            return [Slot(key=None, room=max(1, max_batch))]
        return [Slot(key=self.key, room=max_batch - n, in_flight=n)] if n < max_batch else []

    def queue_refusal(self) -> ErrorReply | None:
        return None

    def pack(self, job_id: str, request: Any) -> Any:
        return request

    def load(self) -> None:
        self.host.ensure_loaded()

    def in_flight(self) -> int:
        return len(self.batch) if self.batch is not None else 0

    def add(self, slot: Slot, key: str, jobs: list[tuple[Any, Progress, OnDone]]) -> None:
        if not self.in_flight():
            self.key = key
        for request, progress, on_done in jobs:
            self.add_job(request, progress, on_done)

    def add_job(self, request: Any, progress: Progress, on_done: OnDone) -> None:
        """Prepare one request and join it to the running batch (also how a Ray engine actor feeds its engine:
        the daemon sends it only compatible jobs)."""
        try:
            engine = self.host.ensure_loaded()
            job = engine.prepare(request, progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the job's owner
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            on_done(exc)
            return
        if self.batch is None:
            # unfitted: the writer fits each result once, at the output's rate (daemon/outputs.render)
            self.batch = engine.job_batch(fit=False)
        try:
            self.batch.add(job, on_done)
        finally:
            self._after_fault()
            self._drop_if_empty()

    def step(self, wake: threading.Event | None = None) -> None:
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

    def cancel(self, job_id: str) -> None:
        pass  # the job's progress callback raises Cancelled at its next step

    def stopping(self, requeue_running: bool) -> None:
        pass  # likewise: the progress callbacks see the worker stopping

    def idle(self) -> None:
        if self.host.idle_expired():
            self.host.unload("idle for keep_alive")

    def close(self) -> None:
        self.host.unload("daemon stopping")

    def encode_voice(self, audio_path: Path, transcript: str) -> Any:
        engine = self.host.ensure_loaded()
        codes = engine.encode_voice(str(audio_path), transcript)
        self.host.touch()
        return codes

    def _drop_if_empty(self) -> None:
        if self.batch is not None and not self.batch:
            self.batch.session.close()
            self.batch = None
