"""Scale-out on Ray: generation runs in Ray actors, the daemon keeps everything else.

With ``backend = "ray"`` the daemon's queue, protocol, progress events, cancel and file writing stay exactly
as with the local backend (clients see no difference); only the engine moves. One :class:`EngineActor` per
GPU of the cluster (or per ``ray_actor_cpus`` CPUs where it has none) loads the model once and runs batches
of compatible jobs. Inputs travel to the actor as bytes and the audio comes back through Ray's object store,
so no shared filesystem is assumed.

- Placement: each batch goes to an idle actor, the one that has done the least work first (least loaded).
- Progress: the actor's ``run`` is a streaming generator; it yields progress (and streamed previews) while
  the engine works in a thread of the actor, then one result per job.
- Faults: actors are detached, named and restartable (``max_restarts=-1``). A batch whose actor died is put
  back in the queue with the attempt counted, so it reruns on another actor (or the restarted one) and only
  the run that returns writes a file. A restarted daemon finds the same actors by name and re-attaches.
- An unreachable cluster is the error ``backend_unavailable`` on each job and in ``status``.

Ray is imported only here, and only when the backend is used.
"""
from __future__ import annotations

import contextlib
import os
import queue as stdqueue
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

from ..client import tasks
from ..client.protocol import ActorInfo, BackendInfo, ErrorReply, SubmitRequest
from ..client.settings import Settings
from .logs import get_logger
from .worker import Worker

log = get_logger("ray")

ACTOR_PREFIX = "unimoe-engine-"
PROGRESS_EVERY_S = 0.05  # the actor sends at most this often per job (the daemon throttles events again)
CONNECT_TIMEOUT_S = 5.0
RECONNECT_EVERY_S = 5.0
ACTOR_THREADS = 64  # one per run stream (a job that joins opens one) plus info/cancel/load calls
REFRESH_EVERY_S = 2.0  # how often the worker asks the actors for their state (status, ps)
# The settings an actor takes from the daemon; folders come from the node's own settings (environment or
# config.toml there), so each node finds the model in its own models folder.
MODEL_SETTINGS = ("model", "dac", "device", "dtype")


class BackendUnavailable(Exception):
    pass


# -- the actor (runs on the Ray nodes) ---------------------------------------------------------------------
class EngineActor:
    """Holds one loaded engine on a Ray node and batches its jobs continuously, as the local worker does
    (daemon/executor.py): a job sent while others run joins their batch at the next step and leaves when
    done. Threaded (max_concurrency) so each ``run`` stream, ``cancel`` and ``info`` are answered while
    one engine thread steps the batch."""

    def __init__(self, model_settings: dict[str, Any]):
        from .executor import LocalEngineExecutor
        from .model_host import ModelHost

        self.settings = Settings(**{k: v for k, v in model_settings.items() if v is not None})
        self.host = ModelHost(self.settings)
        self.executor = LocalEngineExecutor(self.host)
        self.engine_lock = threading.Lock()  # the engine thread's, and load's
        self.pending: stdqueue.Queue[tuple[str, Any, stdqueue.Queue[Any]]] = stdqueue.Queue()
        self.cancelled: set[str] = set()
        self.running: list[str] = []
        self.jobs_done = 0
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        h = self.host
        return {"pid": os.getpid(), "node": ctx.get_node_id()[:12], "host": socket.gethostname(),
                "state": ("busy" if self.running else ("ready" if h.engine is not None else
                                                       ("loading" if h.state == "loading" else "starting"))),
                "device": h.device, "dtype": h.dtype, "tiny": h.tiny, "tiny_reason": h.tiny_reason,
                "model_hash": h.model_hash, "model_id": h.model_id, "model_dir": str(h.model_dir or ""),
                "running": list(self.running), "jobs_done": self.jobs_done}

    def load(self) -> dict[str, Any]:
        with self.engine_lock:
            self.host.ensure_loaded()
        return self.info()

    def cancel(self, job_ids: list[str]) -> None:
        self.cancelled.update(job_ids)

    def reset(self) -> None:
        """A (re)attaching daemon owns no earlier work: stop whatever still runs for a previous daemon."""
        self.cancelled.update(self.running)

    def encode_voice(self, audio: bytes, suffix: str, transcript: str) -> Any:
        with tempfile.TemporaryDirectory(prefix="unimoe-voice-") as tmp:
            path = Path(tmp) / f"reference{suffix}"
            path.write_bytes(audio)
            with self.engine_lock:
                engine = self.host.ensure_loaded()
                return engine.encode_voice(str(path), transcript)

    def run(self, jobs: list[dict[str, Any]]) -> Iterator[tuple[str, str, Any]]:
        """Yields ("progress", job_id, dict), then ("result", job_id, AudioResult | RemoteFailure) per job.
        The jobs join the actor's running batch (the daemon sends only jobs compatible with it)."""
        events: stdqueue.Queue[tuple[str, str, Any]] = stdqueue.Queue()
        with tempfile.TemporaryDirectory(prefix="unimoe-ray-") as tmp:  # inputs live until the jobs end
            for job in jobs:
                self.pending.put((job["job_id"], _materialize(job, Path(tmp)), events))
            self._ensure_thread()
            left = len(jobs)
            while left:
                item = events.get()
                left -= item[0] == "result"
                yield item

    # -- the engine thread ---------------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._engine_loop, name="engine", daemon=True)
                self._thread.start()

    def _engine_loop(self) -> None:
        while True:
            with self.engine_lock:
                self._admit()
                if self.executor.in_flight():
                    try:
                        self.executor.step()
                    except Exception as exc:  # noqa: BLE001 - every job in flight learns of it
                        self.executor.abort(exc)
                    continue
            with self._thread_lock:
                if self.pending.empty():
                    self._thread = None
                    return

    def _admit(self) -> None:
        while True:
            try:
                job_id, request, events = self.pending.get_nowait()
            except stdqueue.Empty:
                return
            self.running.append(job_id)
            self.executor.add(request, self._progress(job_id, events), self._done(job_id, events))

    def _progress(self, job_id: str, events: stdqueue.Queue[Any]) -> Any:
        from ..model.errors import Cancelled

        last = [0.0]

        def cb(p: Any) -> bool:
            if job_id in self.cancelled:
                raise Cancelled("cancelled by request")
            now = time.monotonic()
            partial = getattr(p, "partial_audio", None)
            if partial is not None or now - last[0] >= PROGRESS_EVERY_S or p.fraction >= 1.0:
                last[0] = now
                events.put(("progress", job_id, {
                    "stage": p.stage, "fraction": float(p.fraction), "frames_done": int(p.frames_done or 0),
                    "frames_total": int(p.frames_total or 0), "partial_audio": partial}))
            return True
        return cb

    def _done(self, job_id: str, events: stdqueue.Queue[Any]) -> Any:
        def done(res: Any) -> None:
            if isinstance(res, BaseException):
                res = RemoteFailure.of(res)
            else:
                self.jobs_done += 1
                res = replace(res, codes=None)  # the daemon writes audio only
            with contextlib.suppress(ValueError):
                self.running.remove(job_id)
            self.cancelled.discard(job_id)
            self.host.touch()
            events.put(("result", job_id, res))
        return done


@dataclass
class RemoteFailure:
    """An exception raised on a node, as plain data (exception classes need not unpickle in the daemon)."""

    code: str
    message: str
    field: str | None = None
    wanted: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> "RemoteFailure":
        from .model_host import error_from_exception

        e = error_from_exception(exc)
        return cls(e.code, e.message, e.field, e.wanted)

    def exception(self) -> BaseException:
        from ..client.protocol import ProtocolError
        from ..model.errors import Cancelled

        if self.code == "cancelled":
            return Cancelled(self.message)
        return ProtocolError(self.code, self.message, self.field, self.wanted)


def _materialize(job: dict[str, Any], tmp: Path) -> Any:
    """The job's model request with its input files written on this node."""
    req = job["request"]
    for name, (suffix, data) in job.get("inputs", {}).items():
        path = tmp / f"{job['job_id']}-{name}{suffix}"
        path.write_bytes(data)
        req = replace(req, **{name: str(path)})
    return req


def _inputs_of(mreq: Any) -> dict[str, tuple[str, bytes]]:
    """The input files a model request names, as bytes (the actor's node may not see this filesystem)."""
    out: dict[str, tuple[str, bytes]] = {}
    for name in tasks.input_fields():  # the tasks' input-file fields (client/tasks/)
        path = getattr(mreq, name, None)
        if path:
            out[name] = (Path(path).suffix, Path(path).read_bytes())
    return out


# -- the pool (runs in the daemon) -------------------------------------------------------------------------
@dataclass
class _Actor:
    name: str
    handle: Any
    info: dict[str, Any] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # its jobs in flight
    key: str | None = None  # their batch_key: only compatible jobs join them
    dead: bool = False
    restarts: int = 0
    started: int = 0  # dispatches so far (least-loaded tie-break)


def _short(exc: BaseException) -> str:
    """Ray's errors carry ANSI colours and whole remote tracebacks: keep the last error line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", ln)]
    return (errs[-1] if errs else (lines[0] if lines else type(exc).__name__))[:500]


def _gcs_reachable(address: str, timeout: float) -> None:
    """Fail fast where ray.init would wait minutes for a head that is not there."""
    if address in ("auto", "local", ""):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"the Ray cluster at {address} cannot be reached ({exc})") from exc


class RayPool:
    """The daemon's view of the engine actors: connect, create or re-attach, place, observe."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.state = "connecting"
        self.error: ErrorReply | None = None
        self.actors: list[_Actor] = []
        self._lock = threading.Lock()

    # connect ------------------------------------------------------------------------------------------
    def connect(self) -> None:
        s = self.settings
        try:
            _gcs_reachable(s.ray_address, CONNECT_TIMEOUT_S)
            import ray

            if not ray.is_initialized():
                ray.init(address=s.ray_address, namespace=s.ray_namespace, log_to_driver=False,
                         include_dashboard=False, configure_logging=False)
            self._attach(ray)
        except Exception as exc:  # noqa: BLE001 - any failure here means "no backend"
            self.state = "unavailable"
            self.error = ErrorReply(code="backend_unavailable", message=f"Ray backend: {_short(exc)}",
                                    wanted="a running Ray cluster at ray_address (see docs/ray.md)")
            log.warning("Ray backend unavailable: %s", exc)
            raise BackendUnavailable(str(exc)) from exc
        self.state, self.error = "ready", None

    def _count(self, ray: Any) -> tuple[int, dict[str, float]]:
        s = self.settings
        res = ray.cluster_resources()
        gpus = int(res.get("GPU", 0))
        if gpus:
            return (s.ray_actors or gpus), {"num_gpus": 1, "num_cpus": 1}
        n = s.ray_actors or max(1, int(res.get("CPU", 0) // s.ray_actor_cpus))
        return n, {"num_cpus": s.ray_actor_cpus}

    def _attach(self, ray: Any) -> None:
        n, resources = self._count(ray)
        remote_cls = ray.remote(EngineActor)
        model_settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in
                          self.settings.model_dump(include=set(MODEL_SETTINGS)).items()}
        actors = []
        for i in range(n):
            name = f"{ACTOR_PREFIX}{i}"
            handle = remote_cls.options(
                name=name, namespace=self.settings.ray_namespace, lifetime="detached", get_if_exists=True,
                max_restarts=-1, max_task_retries=0, max_concurrency=ACTOR_THREADS, scheduling_strategy="SPREAD",
                **resources).remote(model_settings)
            actors.append(_Actor(name, handle))
        # Actors are detached: ones beyond the configured count (ray_actors was lowered) would hold their GPU
        # or CPUs forever. End them.
        for name in ray.util.list_named_actors():
            if name.startswith(ACTOR_PREFIX) and name not in {a.name for a in actors}:
                log.info("ending surplus engine actor %s", name)
                ray.kill(ray.get_actor(name, namespace=self.settings.ray_namespace))
        for a in actors:
            # Fire and forget: an actor still starting gets these when it is up. Loading now means the
            # first job does not wait for the model (the daemon's load_at_start, on every actor).
            a.handle.reset.remote()
            a.handle.load.remote()
        with self._lock:
            self.actors = actors
        self.refresh()
        log.info("Ray backend: %d engine actor(s) in namespace %s", len(actors), self.settings.ray_namespace)

    # observe ------------------------------------------------------------------------------------------
    def refresh(self, timeout: float = 2.0) -> None:
        """Ask every actor for its info (pid, node, device, state); an actor that does not answer is dead."""
        import ray

        refs = {a.name: a.handle.info.remote() for a in self.actors}
        for a in self.actors:
            try:
                info = ray.get(refs[a.name], timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                continue  # busy starting or loading: keep the last known info
            except ray.exceptions.RayActorError:
                a.dead = True
                continue
            if a.info.get("pid") and info.get("pid") != a.info.get("pid"):
                a.restarts += 1  # Ray restarted the actor in a new process: load its model again
                log.info("actor %s restarted (pid %s -> %s)", a.name, a.info.get("pid"), info.get("pid"))
                a.handle.load.remote()
            a.info, a.dead = info, False

    def status(self) -> BackendInfo:
        actors = [ActorInfo(name=a.name, state="dead" if a.dead else ("busy" if a.busy else a.info.get("state", "starting")),
                            node=a.info.get("node"), host=a.info.get("host"), pid=a.info.get("pid"),
                            device=a.info.get("device"), dtype=a.info.get("dtype"), running=list(a.busy),
                            jobs_done=int(a.info.get("jobs_done", 0)), restarts=a.restarts)
                  for a in list(self.actors)]
        return BackendInfo(kind="ray", state=self.state, address=self.settings.ray_address, error=self.error,
                           actors=actors)

    # place --------------------------------------------------------------------------------------------
    def idle(self) -> _Actor | None:
        """The least-loaded actor with nothing in flight (fewest dispatches so far), or None."""
        with self._lock:
            free = [a for a in self.actors if not a.busy]
            return min(free, key=lambda a: (a.dead, a.started)) if free else None

    def joinable(self, max_batch: int) -> list[_Actor]:
        """Busy actors whose batch has room, least loaded first (a compatible job may join them)."""
        with self._lock:
            room = [a for a in self.actors if a.busy and not a.dead and a.key and len(a.busy) < max_batch]
            return sorted(room, key=lambda a: len(a.busy))

    def reserve(self, actor: _Actor, job_ids: list[str], key: str) -> int:
        """Count the jobs in flight on ``actor``; returns its batch size with them."""
        with self._lock:
            if not actor.busy:
                actor.key = key
            actor.busy.update(job_ids)
            actor.started += 1
            return len(actor.busy)

    def release(self, actor: _Actor, job_ids: list[str]) -> None:
        with self._lock:
            actor.busy.difference_update(job_ids)
            if not actor.busy:
                actor.key = None

    def any_ready(self) -> dict[str, Any] | None:
        for a in self.actors:
            if a.info.get("model_hash"):
                return a.info
        return None


# -- the worker that feeds the pool ----------------------------------------------------------------------
class RayWorker(Worker):
    """The daemon's worker with generation on Ray: it claims jobs as actors free up and runs one dispatch
    thread per batch in flight. Validation, progress events, cancel and file writing are the local worker's."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.pool = RayPool(self.settings)
        self._threads: list[threading.Thread] = []
        self._next_connect = 0.0
        self._next_refresh = 0.0

    def backend_status(self) -> BackendInfo:
        return self.pool.status()

    def _connected(self) -> bool:
        if self.pool.state == "ready":
            return True
        if time.monotonic() < self._next_connect:
            return False
        self._next_connect = time.monotonic() + RECONNECT_EVERY_S
        try:
            self.pool.connect()
        except BackendUnavailable:
            self.host._set("error", self.pool.error)
            return False
        self.host._set("idle")
        self._mirror_host()
        return True

    def _mirror_host(self) -> None:
        """Status reads the model host: show the actors' model there (tiny, hash, device)."""
        info = self.pool.any_ready()
        h = self.host
        if info is None:
            return
        h.tiny, h.tiny_reason = bool(info.get("tiny")), info.get("tiny_reason")
        h.model_hash, h.model_id = info.get("model_hash"), info.get("model_id")
        h.device, h.dtype = info.get("device"), info.get("dtype")
        if h.state != "ready":
            h._set("ready")

    def run(self) -> None:
        while True:
            self._run_ops()
            self._threads = [t for t in self._threads if t.is_alive()]
            if self._stopping.is_set():
                break
            if not self._connected():
                self._fail_queued_unavailable()
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            if time.monotonic() >= self._next_refresh:
                self._next_refresh = time.monotonic() + REFRESH_EVERY_S
                self.pool.refresh(timeout=0.5)
                self._mirror_host()
            if self._place():
                continue
            self._wake.wait(0.5)
            self._wake.clear()
        for job_id in list(self.running):
            self._cancel_on_actor(job_id)
        for t in self._threads:
            t.join(timeout=30)
        self._run_ops()

    def _place(self) -> bool:
        """Give work to an actor: compatible queued jobs to an idle one (least loaded first), else the
        queue's head to a busy actor whose batch it may join (continuous batching, as the local worker
        does; priority stays strict). False when nothing could be placed."""
        actor, joined = self.pool.idle(), False
        rows = self.store.claim(self.settings.max_batch) if actor is not None else []
        if not rows:
            for actor in self.pool.joinable(self.settings.max_batch):
                row = self.store.claim_next(actor.key)
                if row is not None:
                    rows, joined = [row], True
                    break
        if not rows:
            return False
        size = self.pool.reserve(actor, [r["id"] for r in rows], rows[0]["batch_key"])
        t = threading.Thread(target=self._dispatch, args=(rows, actor, size, joined), name=f"ray-{actor.name}",
                             daemon=True)
        self._threads.append(t)
        t.start()
        return True

    def _fail_queued_unavailable(self) -> None:
        err = self.pool.error or ErrorReply(code="backend_unavailable", message="the Ray cluster cannot be reached")
        while True:
            rows = self.store.claim(1)
            if not rows:
                return
            self._fail(rows[0], err)

    def cancel(self, job_id: str) -> None:
        super().cancel(job_id)
        self._cancel_on_actor(job_id)

    def _cancel_on_actor(self, job_id: str) -> None:
        for a in self.pool.actors:
            if job_id in a.busy:
                try:
                    a.handle.cancel.remote([job_id])
                except Exception:  # noqa: BLE001 - a dead actor stops anyway
                    pass

    def _dispatch(self, rows: list[dict[str, Any]], actor: _Actor, size: int, joined: bool) -> None:
        try:
            self._run_on_actor(rows, actor, size, joined)
        except Exception:  # noqa: BLE001 - a bug here must not lose jobs
            log.exception("Ray dispatch failed")
            for row in rows:
                if self.store.state(row["id"]) == "running":
                    self._fail(row, ErrorReply(code="internal", message="unexpected daemon error (logged)"))
        finally:
            self.pool.release(actor, [r["id"] for r in rows])
            for row in rows:
                self.running.pop(row["id"], None)
                self._cancel.discard(row["id"])
            self._wake.set()

    def _run_on_actor(self, rows: list[dict[str, Any]], actor: _Actor, size: int, joined: bool) -> None:
        import ray

        from ..model.errors import Cancelled

        live = [got for got in map(self._validate, rows) if got is not None]
        if not live:
            return
        jobs = []
        for row, req, mreq in live:
            try:
                inputs = _inputs_of(mreq)
            except OSError as exc:
                from .model_host import error_from_exception

                self._fail(row, error_from_exception(exc))
                continue
            jobs.append({"job_id": row["id"], "task": req.spec.task, "request": mreq, "inputs": inputs})
        live = [x for x in live if any(j["job_id"] == x[0]["id"] for j in jobs)]
        if not live:
            return
        t0 = time.monotonic()
        for row, _, _ in live:
            self.running[row["id"]] = t0
            self.outbox.event("started", {"job_id": row["id"], "tag": row["tag"], "attempt": row["attempts"],
                                          "batch_size": size, "actor": actor.name, "joined": joined})
        callbacks = {row["id"]: self._progress_cb(row, req) for row, req, _ in live}
        results: dict[str, Any] = {}
        try:
            for ref in actor.handle.run.remote(jobs):  # a streaming generator: one object per yield
                kind, job_id, value = ray.get(ref)
                if kind == "progress":
                    try:
                        callbacks[job_id](SimpleNamespace(**value))
                    except Cancelled:
                        actor.handle.cancel.remote([job_id])
                else:
                    results[job_id] = value.exception() if isinstance(value, RemoteFailure) else value
                    self.pool.release(actor, [job_id])  # room for a compatible job to join
                    self._wake.set()
        except ray.exceptions.RayActorError as exc:
            # The actor (or its node) died mid-batch: rerun its jobs elsewhere, the attempt counts.
            log.warning("actor %s died with %d job(s): %s", actor.name, len(live), exc)
            actor.dead = True
            for row, _, _ in live:
                if row["id"] in results:
                    continue
                if row["id"] in self._cancel:
                    self._cancelled(row)
                else:
                    self.store.requeue(row["id"], count_attempt=True)
                    self.outbox.event("requeued", {"job_id": row["id"], "tag": row["tag"],
                                                   "reason": f"actor {actor.name} died"})
            live = [x for x in live if x[0]["id"] in results]
        for row, req, _ in live:
            self._on_done(row, req, t0, size)(results.get(row["id"], Cancelled("no result")))
        self.pool.refresh(timeout=1.0)
        self._mirror_host()

    def encode_voice(self, audio_path: Path, transcript: str) -> Any:
        import ray

        if not self._connected():
            from ..client.protocol import ProtocolError

            err = self.pool.error or ErrorReply(code="backend_unavailable", message="the Ray cluster cannot be reached")
            raise ProtocolError(err.code, err.message, wanted=err.wanted)
        actor = self.pool.idle() or self.pool.actors[0]
        return ray.get(actor.handle.encode_voice.remote(Path(audio_path).read_bytes(), Path(audio_path).suffix,
                                                        transcript))


def make_worker(settings: Settings, *args: Any, **kwargs: Any) -> Worker:
    """The worker for the configured backend."""
    if settings.backend == "ray":
        return RayWorker(settings, *args, **kwargs)
    return Worker(settings, *args, **kwargs)


__all__ = ["EngineActor", "RayPool", "RayWorker", "BackendUnavailable", "make_worker", "SubmitRequest"]
