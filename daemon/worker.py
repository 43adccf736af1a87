"""The worker: one thread that owns the job loop. It claims jobs from the SQLite queue, runs them on an
executor (daemon/executor.py: the local engine, continuously batched; or engine actors on a Ray cluster,
daemon/ray_backend.py), writes the output files, and reports every step to the main loop through the
outbox (which publishes events; only the main thread touches the sockets). ``make_worker`` builds it for
the configured backend.

Scheduling (continuous batching): between two decode steps the worker admits the head of the queue
(highest priority, then oldest) while it is compatible with the jobs in flight (same ``batch_key``:
task kind and CFG on/off) and fewer than ``settings.max_batch`` jobs run; the new job's prefill runs
and its rows join the shared batch. (With Ray, each engine actor is such a batch: the executor's
``slots`` say which may take jobs.) A job leaves as soon as it is done, so a short job submitted
while a long one runs finishes long before it. An incompatible head waits until the batch drains
(priority stays strict), and so do worker operations (voice encoding, unload).
"""
from __future__ import annotations

import queue as stdqueue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from ..client.protocol import (
    PROTOCOL_VERSION,
    BackendInfo,
    ErrorReply,
    JobResult,
    ProtocolError,
    SubmitRequest,
)
from ..client import tasks
from ..client.settings import Settings
from . import outputs
from .crash import crash_if_asked
from .executor import Internal, JobExecutor, LocalEngineExecutor, Rerun, Slot
from .logs import get_logger
from .model_host import ModelHost, ModelLoadFailed, error_from_exception
from .queue import JobStore
from .voices import VoiceStore

log = get_logger("worker")

PROGRESS_MIN_INTERVAL = 0.05  # seconds between progress events of one job
PARTIAL_MIN_INTERVAL = 0.5
PARTIAL_EVERY_SECONDS = 0.5  # seconds of new audio between streamed previews


def batch_key(req: SubmitRequest) -> str:
    """Jobs with the same key may share a running batch: same task kind, same CFG setting (on/off:
    a CFG job takes two decode rows). Empty: never batched (rows of older databases)."""
    spec = req.spec
    return f"{spec.task}:{'nocfg' if spec.sampling.cfg_scale == 0 else 'cfg'}"


def to_model_request(req: SubmitRequest, voices: VoiceStore) -> Any:
    """The engine's request for a job: the fields every task shares mapped here, the rest by the task's
    own ``model_request`` (client/tasks/). A task that brings its own preparation is taught to the engine."""
    from ..model.requests import Length, SamplingParams

    spec = req.spec
    task = tasks.get(spec.task)
    ls = spec.length
    if ls.frames is None and ls.seconds is None:
        # the task's own length rule (bars at a tempo, a clip's in/out), computed once: client/spec.py
        length = Length(seconds=spec.target_seconds(), min_seconds=ls.min_seconds, max_seconds=ls.max_seconds)
    else:
        length = Length(seconds=ls.seconds, frames=ls.frames, fps=ls.fps_fraction(), min_seconds=ls.min_seconds,
                        max_seconds=ls.max_seconds)
    ctx = tasks.ModelContext(length=length, sampling=SamplingParams(**spec.sampling.model_dump()),
                             stream_every=PARTIAL_EVERY_SECONDS if req.stream_partial else None, voices=voices)
    if task.model_request is None:
        raise ProtocolError("internal", f"task {task.name!r} has no model_request hook", field="spec.task")
    register_model_task(task)
    return task.model_request(spec, ctx)


def register_model_task(task: tasks.TaskDef) -> None:
    """Teach the engine a task that brings its own preparation (idempotent; the built-in ones it knows)."""
    if task.prepare is None or task.request_type is None:
        return
    from ..model import tasks as model_tasks

    if model_tasks.PREPARE.get(task.name) is not task.prepare:
        model_tasks.register_task(task.name, task.request_type, task.prepare, task.sampling_defaults)


class Worker(threading.Thread):
    def __init__(self, settings: Settings, store: JobStore, host: ModelHost, voices: VoiceStore,
                 outbox: Any, version: str = "", executor: JobExecutor | None = None):
        super().__init__(name="worker", daemon=True)
        self.settings = settings
        self.store = store
        self.host = host
        self.voices = voices
        self.outbox = outbox
        self.version = version
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._finish_first = False
        self._cancel: set[str] = set()
        self._ops: stdqueue.Queue[Callable[[], None]] = stdqueue.Queue()
        self.running: dict[str, float] = {}  # job id -> start time (monotonic)
        self._durations: deque[float] = deque(maxlen=20)  # wall seconds per job, recent
        self.roots = settings.allowed_root_paths()
        self.executor: JobExecutor = (executor if executor is not None
                                      else LocalEngineExecutor(host, load_at_start=settings.load_at_start))

    # -- called from the main thread -------------------------------------------------------------
    def backend_status(self) -> BackendInfo:
        return self.executor.status()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        self._cancel.add(job_id)
        self.executor.cancel(job_id)

    def submit_op(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the worker thread (voice encoding, unload) before the next job."""
        self._ops.put(fn)
        self._wake.set()

    def stop(self, requeue_running: bool = True) -> None:
        self._finish_first = not requeue_running
        self._stopping.set()
        self.executor.stopping(requeue_running)
        self._wake.set()

    def avg_job_seconds(self) -> float | None:
        if not self._durations:
            return None
        return sum(self._durations) / len(self._durations)

    def eta(self, position: int | None) -> float | None:
        """Seconds until a queued job at ``position`` is done (None: no throughput measured yet)."""
        avg = self.avg_job_seconds()
        if avg is None:
            return None
        now = time.monotonic()
        remaining = sum(max(0.0, avg - (now - t0)) for t0 in list(self.running.values()))
        return round(remaining + ((position or 0) + 1) * avg, 3)

    # -- the loop --------------------------------------------------------------------------------
    def run(self) -> None:
        self.executor.start()
        while True:
            if not (self.executor.exclusive and self.executor.in_flight()):
                self._run_ops()
            if self._stopping.is_set() and not self.executor.in_flight():
                break
            try:
                self._admit()
            except Exception:  # noqa: BLE001 - a bug here must not kill the worker
                log.exception("admitting jobs failed")
            if self.executor.in_flight():
                try:
                    self.executor.step(self._wake)
                except Exception:  # noqa: BLE001 - a bug here must not kill the worker
                    log.exception("decode step failed unexpectedly")
                    self.executor.abort(Internal("unexpected daemon error (logged)"))
                continue
            self.executor.idle()
            self._wake.wait(1.0)
            self._wake.clear()
        self._run_ops()
        self.executor.close()

    def _run_ops(self) -> None:
        while True:
            try:
                fn = self._ops.get_nowait()
            except stdqueue.Empty:
                return
            try:
                fn()
            except Exception:  # noqa: BLE001
                log.exception("worker operation failed")

    # -- admission (at a step boundary) ----------------------------------------------------------
    def _admit(self) -> None:
        """Claim queued jobs for the executor's open slots (the queue's head while it may join a slot's jobs),
        then start them there."""
        if self._stopping.is_set() or (self.executor.exclusive and not self._ops.empty()):
            return  # stopping, or an operation waits for the batch to drain
        slots = self.executor.slots(self.settings.max_batch)
        if not slots:
            err = self.executor.queue_refusal()
            if err is not None:
                self._fail_queued(err)
            return
        for slot in slots:
            rows = self._claim(slot)
            if rows:
                self._start(slot, rows)

    def _claim(self, slot: Slot) -> list[dict[str, Any]]:
        if slot.gather:
            return self.store.claim(slot.room)
        key, rows = slot.key, []
        while len(rows) < slot.room:
            try:
                row = self.store.claim_next(key)
            except Exception:  # noqa: BLE001
                log.exception("claiming jobs failed")
                break
            if row is None:
                break
            key = row["batch_key"] if key is None else key
            rows.append(row)
            if not row["batch_key"]:
                break  # never batched
        return rows

    def _start(self, slot: Slot, rows: list[dict[str, Any]]) -> None:
        live: list[tuple[dict[str, Any], SubmitRequest, Any]] = []
        for row in rows:
            try:
                got = self._validate(row)
            except Exception:  # noqa: BLE001
                log.exception("validating job %s failed", row["id"])
                self._fail(row, ErrorReply(code="internal", message="unexpected daemon error (logged)"))
                got = None
            if got is not None:
                live.append(got)
        if not live:
            return
        try:
            self.executor.load()
        except ModelLoadFailed as exc:
            for row, _, _ in live:
                self._fail(row, exc.error)
            return
        size = slot.in_flight + len(live)
        t0 = time.monotonic()
        for row, _, _ in live:
            self.running[row["id"]] = t0
            self.outbox.event("started", {"job_id": row["id"], "tag": row["tag"], "attempt": row["attempts"],
                                          "batch_size": size, **slot.started})
        jobs = []
        for row, req, packed in live:
            crash_if_asked(row["tag"])  # tests only: a real daemon killed by a real signal
            jobs.append((packed, self._progress_cb(row, req), self._on_done(row, req, t0, size)))
        self.executor.add(slot, rows[0]["batch_key"], jobs)

    def _fail_queued(self, err: ErrorReply) -> None:
        while True:
            rows = self.store.claim(1)
            if not rows:
                return
            self._fail(rows[0], err)

    def _validate(self, row: dict[str, Any]) -> tuple[dict[str, Any], SubmitRequest, Any] | None:
        if row["id"] in self._cancel:
            self._cancelled(row)
            self._cancel.discard(row["id"])
            return None
        if row["attempts"] > 3:
            self._fail(row, ErrorReply(code="internal", message="too many attempts"))
            return None
        try:
            req = SubmitRequest.model_validate_json(row["request"])
            # Inputs may have vanished since the job was queued.
            outputs.check_input_files(req.spec, self.roots)
            packed = self.executor.pack(row["id"], to_model_request(req, self.voices))
        except ProtocolError as exc:
            self._fail(row, exc.to_reply())
            return None
        except Exception as exc:  # noqa: BLE001
            self._fail(row, error_from_exception(exc))
            return None
        return row, req, packed

    # -- outcomes --------------------------------------------------------------------------------
    def _fail(self, row: dict[str, Any], err: ErrorReply) -> None:
        self.store.finish(row["id"], "failed", error=err)
        log.warning("job %s failed: %s %s%s", row["id"], err.code, err.message,
                    f" (field {err.field})" if err.field else "")
        self.outbox.event("failed", {"job_id": row["id"], "tag": row["tag"], "error": err.model_dump(exclude_none=True)})

    def _cancelled(self, row: dict[str, Any]) -> None:
        self.store.finish(row["id"], "cancelled")
        log.info("job %s cancelled while running", row["id"])
        self.outbox.event("cancelled", {"job_id": row["id"], "tag": row["tag"]})

    def _requeue(self, row: dict[str, Any]) -> None:
        self.store.requeue(row["id"])
        log.info("job %s requeued (daemon stopping)", row["id"])
        self.outbox.event("requeued", {"job_id": row["id"], "tag": row["tag"], "reason": "daemon stopping"})

    def _on_done(self, row: dict[str, Any], req: SubmitRequest, t0: float, size: int) -> Callable[[Any], None]:
        def done(res: Any) -> None:
            try:
                self._outcome(row, req, res)
            except Exception:  # noqa: BLE001 - a bug here must not kill the worker
                log.exception("finishing job %s failed", row["id"])
                if self.store.state(row["id"]) == "running":
                    self._fail(row, ErrorReply(code="internal", message="unexpected daemon error (logged)"))
            finally:
                self._durations.append((time.monotonic() - t0) / max(1, size))
                self.running.pop(row["id"], None)
                self._cancel.discard(row["id"])

        return done

    def _outcome(self, row: dict[str, Any], req: SubmitRequest, res: Any) -> None:
        from ..model.errors import Cancelled

        if isinstance(res, ModelLoadFailed):
            self._fail(row, res.error)
            return
        if isinstance(res, Internal):
            self._fail(row, ErrorReply(code="internal", message=str(res)))
            return
        if isinstance(res, Rerun):
            if row["id"] in self._cancel:
                self._cancelled(row)
            else:
                self.store.requeue(row["id"], count_attempt=True)
                log.info("job %s requeued (%s)", row["id"], res)
                self.outbox.event("requeued", {"job_id": row["id"], "tag": row["tag"], "reason": str(res)})
            return
        if isinstance(res, BaseException):
            if (self._stopping.is_set() and not self._finish_first and row["id"] not in self._cancel
                    and isinstance(res, Cancelled)):
                self._requeue(row)
            elif isinstance(res, Cancelled) or row["id"] in self._cancel:
                self._cancelled(row)
            else:
                if not isinstance(res, ProtocolError):
                    log.error("job %s: %s", row["id"], res, exc_info=res)
                self._fail(row, res.to_reply() if isinstance(res, ProtocolError) else error_from_exception(res))
            return
        try:
            self._write(row, req, res)
        except ProtocolError as exc:
            self._fail(row, exc.to_reply())
        except Exception as exc:  # noqa: BLE001
            log.exception("writing job %s failed", row["id"])
            self._fail(row, error_from_exception(exc))

    def _progress_cb(self, row: dict[str, Any], req: SubmitRequest) -> Callable[[Any], bool]:
        from ..model.errors import Cancelled

        job_id, tag = row["id"], row["tag"]
        t_start = time.monotonic()
        state = {"last": 0.0, "stage": None, "partial_t": 0.0, "partial_n": 0}
        partial_dir = self.settings.cache_path / "partials"

        def cb(p: Any) -> bool:
            if job_id in self._cancel:
                raise Cancelled("cancelled by request")
            if self._stopping.is_set() and not self._finish_first:
                raise Cancelled("daemon stopping")
            now = time.monotonic()
            frac = float(max(0.0, min(1.0, p.fraction)))
            if p.stage != state["stage"] or now - state["last"] >= PROGRESS_MIN_INTERVAL or frac >= 1.0:
                state["last"], state["stage"] = now, p.stage
                elapsed = now - t_start
                eta = round(elapsed / frac * (1 - frac), 3) if frac > 0.01 else None
                self.outbox.event("progress", {"job_id": job_id, "tag": tag, "fraction": frac, "stage": p.stage,
                                               "frames": int(p.frames_done or 0), "frames_total": int(p.frames_total or 0),
                                               "eta_s": eta})
            audio = getattr(p, "partial_audio", None)
            if req.stream_partial and audio is not None and now - state["partial_t"] >= PARTIAL_MIN_INTERVAL:
                state["partial_t"] = now
                state["partial_n"] += 1
                try:
                    path = outputs.write_partial(audio, 16000, partial_dir, job_id, state["partial_n"])
                    self.outbox.event("partial", {"job_id": job_id, "tag": tag, "path": str(path),
                                                  "seconds": audio.shape[-1] / 16000})
                except Exception:  # noqa: BLE001
                    log.exception("partial write failed")
            return True

        return cb

    def _write(self, row: dict[str, Any], req: SubmitRequest, res: Any) -> None:
        s = self.settings
        folder = outputs.output_folder(req.output.folder, s.output_path, self.roots)
        sidecar = {
            "job_id": row["id"],
            "task": req.spec.task,
            "request": req.model_dump(mode="json"),
            "seed": int(res.seed),
            "model": {"name": s.model, "id": self.host.model_id, "dir": str(self.host.model_dir),
                      "hash": self.host.model_hash,
                      "tiny": self.host.tiny, "device": self.host.device, "dtype": self.host.dtype},
            "timings": {k: float(v) for k, v in (res.timings or {}).items()},
            "model_sample_rate": int(res.sample_rate),
            "model_seconds": float(res.seconds),
            "attempts": row["attempts"],
            "created": row["created"],
            "protocol_version": PROTOCOL_VERSION,
            "version": self.version,
        }
        out = outputs.write_output(res.audio, int(res.sample_rate), job_id=row["id"], task=req.spec.task,
                                   folder=folder, name=req.output.name, opts=req.output, defaults=s,
                                   target_seconds=req.spec.target_seconds(), sidecar=sidecar, spot=req.spot,
                                   description=f"{req.spec.task}: {req.spec.describe()}".strip().rstrip(":"),
                                   version=self.version, splice=(res.info or {}).get("splice"),
                                   new_only=bool(getattr(req.spec, "new_only", False)))
        result = JobResult(seed=int(res.seed), **out)
        self.store.finish(row["id"], "done", result=result)
        log.info("job %s done: %s (%.2f s audio)", row["id"], result.path, result.seconds)
        self.outbox.event("done", {"job_id": row["id"], "tag": row["tag"], "task": req.spec.task,
                                   **result.model_dump()})
        if req.stream_partial:
            import shutil

            shutil.rmtree(s.cache_path / "partials" / row["id"], ignore_errors=True)

    # -- voices ------------------------------------------------------------------------------------
    def encode_voice(self, audio_path: Path, transcript: str) -> Any:
        return self.executor.encode_voice(audio_path, transcript)


def make_worker(settings: Settings, store: JobStore, host: ModelHost, voices: VoiceStore, outbox: Any,
                version: str = "") -> Worker:
    """The worker for the configured backend: the local engine, or engine actors on a Ray cluster (Ray is
    imported only then)."""
    executor: JobExecutor | None = None
    if settings.backend == "ray":
        from .ray_backend import RayExecutor

        executor = RayExecutor(settings, host)
    return Worker(settings, store, host, voices, outbox, version=version, executor=executor)
