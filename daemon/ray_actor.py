"""The engine actor: runs on each Ray node, holds one loaded engine there and batches its jobs continuously
(as the local worker does, through the same ``LocalEngineExecutor``). Inputs arrive as bytes and are written
on the node; results go back through Ray's object store (the daemon writes the files). Imported by Ray on
the nodes and by the daemon's pool (daemon/ray_pool.py), never by the local backend."""
from __future__ import annotations

import contextlib
import os
import queue as stdqueue
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

from ..client.settings import Settings

PROGRESS_EVERY_S = 0.05  # the actor sends at most this often per job (the daemon throttles events again)


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
                "device": h.device, "dtype": h.dtype, "quant": h.quant, "tiny": h.tiny, "tiny_reason": h.tiny_reason,
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
            self.executor.add_job(request, self._progress(job_id, events), self._done(job_id, events))

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
