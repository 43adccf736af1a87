"""Scale-out on Ray: generation runs in Ray actors, the daemon keeps everything else.

With ``backend = "ray"`` the daemon's queue, protocol, progress events, cancel and file writing stay exactly
as with the local backend (clients see no difference); only the engine moves. One :class:`EngineActor` per
GPU of each live node (or per ``ray_actor_cpus`` CPUs where the cluster has no GPU), pinned to its node, loads
the model once and runs batches of compatible jobs. Inputs travel to the actor as bytes and the audio comes
back through Ray's object store, so no shared filesystem is assumed.

- Elastic: every few seconds the pool reconciles its actors with ``ray.nodes()``: a node that joins gets its
  actors, a node that leaves has its actors removed (``ray_actors`` caps the total). With no actor alive,
  jobs stay queued (no attempt spent) and run when a node returns; status says the daemon waits for capacity.
- Placement: each batch goes to an idle actor, the one that has done the least work first (least loaded).
- Progress: the actor's ``run`` is a streaming generator; it yields progress (and streamed previews) while
  the engine works in a thread of the actor, then one result per job.
- Faults: actors are detached, named and restartable (``max_restarts=-1``). A batch whose actor died is put
  back in the queue with the attempt counted, so it reruns on another actor (or the restarted one) and only
  the run that returns writes a file. A restarted daemon finds the same actors by name and re-attaches.
- An unreachable cluster is ``backend_unavailable`` in ``status`` at once, and on each queued job once it has
  stayed unreachable for ``ray_unavailable_s``.
- Status is the actors': the daemon loads no model itself; each actor reports its model (id, hash, tiny,
  device, dtype, quantization); actors serving different models are flagged, and work then goes only to
  the model most of them serve. A connection without Ray's token authentication is warned about.

Rooms: this module is the executor the worker drives (daemon/executor.py's seam); daemon/ray_pool.py follows
the cluster and its actors; daemon/ray_actor.py is what runs on the nodes. Ray is imported only by these,
and only when the backend is used (``make_worker`` imports this module for ``backend = "ray"``).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..client import tasks
from ..client.protocol import BackendInfo, ErrorReply
from ..client.settings import Settings
from ..model.errors import Cancelled
from .executor import Internal, Rerun, Slot
from .logs import get_logger
from .ray_actor import EngineActor, RemoteFailure
from .ray_pool import BackendUnavailable, PoolActor, RayPool, short_error

log = get_logger("ray")

RECONNECT_EVERY_S = 5.0
REFRESH_EVERY_S = 2.0  # how often the worker asks the actors for their state (status, ps)


def _inputs_of(mreq: Any) -> dict[str, tuple[str, bytes]]:
    """The input files a model request names, as bytes (the actor's node may not see this filesystem)."""
    out: dict[str, tuple[str, bytes]] = {}
    for name in tasks.input_fields():  # the tasks' input-file fields (client/tasks/)
        path = getattr(mreq, name, None)
        if path:
            out[name] = (Path(path).suffix, Path(path).read_bytes())
    return out


# -- the executor that feeds the pool ---------------------------------------------------------------------
class RayExecutor:
    """The worker's jobs on Ray (daemon/executor.py's ``JobExecutor``): each usable engine actor is a slot (an
    idle one takes a new batch, a busy one whose batch has room a compatible job); a batch placed on an actor
    is followed by a dispatch thread of its own, which passes the actor's progress and results to the
    worker's callbacks. Validation, events, cancel and file writing stay the worker's."""

    exclusive = False  # voice encoding goes to an actor while others generate

    def __init__(self, settings: Settings, host: Any):
        self.settings = settings
        self.host = host
        self.pool = RayPool(settings)
        self._threads: list[threading.Thread] = []
        self._jobs: dict[str, PoolActor] = {}  # job id -> its actor, until its on_done
        self._lock = threading.Lock()
        self._news = threading.Event()  # a result arrived (a dispatch thread ended, an actor has room)
        self._next_connect = 0.0
        self._next_refresh = 0.0
        self._unreachable_since: float | None = None
        # The daemon serves no model of its own here: each node has its own, reported by its actors. Drop what
        # the model host guessed from this machine's models folder (no "tiny" about a folder nothing loads).
        h = self.host
        h.tiny, h.tiny_reason, h.model_dir, h.model_hash, h.model_id = False, None, None, None, None

    # -- connection and the cluster's nodes -----------------------------------------------------------
    def _connected(self) -> bool:
        if self.pool.state in ("ready", "waiting"):
            self._unreachable_since = None
            return True
        if time.monotonic() < self._next_connect:
            return False
        self._next_connect = time.monotonic() + RECONNECT_EVERY_S
        try:
            self.pool.connect()
        except BackendUnavailable:
            if self._unreachable_since is None:
                self._unreachable_since = time.monotonic()
            self.host._set("error", self.pool.error)
            return False
        self._unreachable_since = None
        self.host._set("idle")
        self._mirror_host()
        return True

    def _mirror_host(self) -> None:
        """Status reads the model host: show what the actors serve there (tiny only when an actor's weights are
        random; the hash only when they all agree). No model folder: the daemon loads none."""
        info = self.pool.model_summary()
        h = self.host
        if info is None:
            return
        h.tiny, h.tiny_reason = info["tiny"], info["tiny_reason"]
        h.tiny_builtin = False
        h.model_hash, h.model_id, h.model_dir = info["model_hash"], info["model_id"], None
        h.device, h.dtype, h.quant = info["device"], info["dtype"], info["quant"]
        if h.state != "ready":
            h._set("ready")

    def _follow_cluster(self) -> None:
        """Reconcile the actors with the live nodes (joins and leaves); a lost head makes the pool unavailable
        (jobs wait, reconnect is tried)."""
        try:
            self.pool.reconcile()
        except Exception as exc:  # noqa: BLE001 - the head or the connection went away
            log.warning("Ray cluster lost: %s", short_error(exc))
            self.pool.state = "unavailable"
            self.pool.error = ErrorReply(code="backend_unavailable", message=f"Ray backend: {short_error(exc)}",
                                         wanted="a running Ray cluster at ray_address (see docs/ray.md)")
            return
        self._mirror_host()

    # -- JobExecutor ------------------------------------------------------------------------------------
    def start(self) -> None:
        pass  # the actors load their models themselves

    def status(self) -> BackendInfo:
        return self.pool.status()

    def slots(self, max_batch: int) -> list[Slot]:
        """Idle actors first (least loaded; each takes the queue's head and its compatible jobs), then busy
        actors whose batch has room (the head joins one if it is compatible: continuous batching, as the local
        worker does). None while the cluster cannot be reached, or with no usable actor (every node gone):
        nothing is claimed, so queued jobs wait for capacity without spending attempts."""
        self._threads = [t for t in self._threads if t.is_alive()]
        if not self._connected():
            return []
        if time.monotonic() >= self._next_refresh:
            self._next_refresh = time.monotonic() + REFRESH_EVERY_S
            self._follow_cluster()
        # With actors serving different models, work goes only to those of the model most of them serve, so no
        # request's variations mix models (status warns; the operator fixes the odd node).
        main_hash = self.pool.main_hash()
        out = [Slot(key=None, room=max(1, max_batch), gather=True, target=a, started={"actor": a.name, "joined": False})
               for a in self.pool.idle_actors(main_hash)]
        for a in self.pool.joinable(max_batch):
            if main_hash is not None and a.info.get("model_hash") not in (None, main_hash):
                continue
            out.append(Slot(key=a.key, room=1, in_flight=len(a.busy), target=a,
                            started={"actor": a.name, "joined": True}))
        return out

    def queue_refusal(self) -> ErrorReply | None:
        """Jobs wait for the cluster (a restarting head, a network blip) up to ``ray_unavailable_s``, then fail."""
        if self._unreachable_since is None or \
                time.monotonic() - self._unreachable_since < self.settings.ray_unavailable_s:
            return None
        return self.pool.error or ErrorReply(code="backend_unavailable", message="the Ray cluster cannot be reached")

    def pack(self, job_id: str, request: Any) -> dict[str, Any]:
        """The job as the actor takes it: its input files travel as bytes (the node may not see this disk)."""
        return {"job_id": job_id, "request": request, "inputs": _inputs_of(request)}

    def load(self) -> None:
        pass  # each actor has loaded (or is loading) its model

    def in_flight(self) -> int:
        with self._lock:
            return len(self._jobs)

    def add(self, slot: Slot, key: str, jobs: list[tuple[Any, Any, Any]]) -> None:
        actor: PoolActor = slot.target
        ids = [packed["job_id"] for packed, _, _ in jobs]
        self.pool.reserve(actor, ids, key)
        with self._lock:
            self._jobs.update({i: actor for i in ids})
        t = threading.Thread(target=self._dispatch, args=(actor, jobs), name=f"ray-{actor.name}", daemon=True)
        self._threads.append(t)
        t.start()

    def step(self, wake: threading.Event) -> None:
        """The jobs run on the actors: wait for a result (an actor with room again) or for the worker's wake."""
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline and not wake.is_set() and not self._news.is_set():
            wake.wait(0.05)
        self._news.clear()
        wake.clear()

    def abort(self, exc: BaseException) -> None:
        with self._lock:
            ids = list(self._jobs)
        for job_id in ids:
            self.cancel(job_id)  # the dispatch threads report each job's end

    def cancel(self, job_id: str) -> None:
        with self._lock:
            actor = self._jobs.get(job_id)
        if actor is not None:
            try:
                actor.handle.cancel.remote([job_id])
            except Exception:  # noqa: BLE001 - a dead actor stops anyway
                pass

    def stopping(self, requeue_running: bool) -> None:
        if requeue_running:  # finish-first stops let them run to the end
            with self._lock:
                ids = list(self._jobs)
            for job_id in ids:
                self.cancel(job_id)

    def idle(self) -> None:
        pass

    def close(self) -> None:
        for t in self._threads:
            t.join(timeout=30)

    def encode_voice(self, audio_path: Path, transcript: str) -> Any:
        import ray

        from ..client.protocol import ProtocolError

        if not self._connected():
            err = self.pool.error or ErrorReply(code="backend_unavailable", message="the Ray cluster cannot be reached")
            raise ProtocolError(err.code, err.message, wanted=err.wanted)
        actor = self.pool.idle() or next((a for a in self.pool.actors if a.usable), None)
        if actor is None:
            raise ProtocolError("backend_unavailable", "no Ray engine actor is alive to encode the voice "
                                "(every node has left the cluster)", wanted="a node with an engine actor")
        return ray.get(actor.handle.encode_voice.remote(Path(audio_path).read_bytes(), Path(audio_path).suffix,
                                                        transcript))

    # -- one batch on one actor (its own thread) ------------------------------------------------------------
    def _dispatch(self, actor: PoolActor, jobs: list[tuple[dict[str, Any], Any, Any]]) -> None:
        ids = [packed["job_id"] for packed, _, _ in jobs]
        callbacks = {packed["job_id"]: (progress, on_done) for packed, progress, on_done in jobs}
        try:
            self._run_on_actor(actor, [packed for packed, _, _ in jobs], callbacks)
        except Exception:  # noqa: BLE001 - a bug here must not lose jobs
            log.exception("Ray dispatch failed")
            for job_id in ids:
                self._settle(actor, job_id, callbacks, Internal("unexpected daemon error (logged)"))
        finally:
            for job_id in ids:  # every job learns its end exactly once
                self._settle(actor, job_id, callbacks, Cancelled("no result"))
            self._news.set()

    def _settle(self, actor: PoolActor, job_id: str, callbacks: dict[str, Any], res: Any) -> None:
        with self._lock:
            if self._jobs.get(job_id) is not actor:
                return
            del self._jobs[job_id]
        self.pool.release(actor, [job_id])  # room for a compatible job to join
        self._news.set()
        callbacks[job_id][1](res)

    def _run_on_actor(self, actor: PoolActor, jobs: list[dict[str, Any]], callbacks: dict[str, Any]) -> None:
        import ray

        try:
            for ref in actor.handle.run.remote(jobs):  # a streaming generator: one object per yield
                kind, job_id, value = ray.get(ref)
                if kind == "progress":
                    try:
                        callbacks[job_id][0](SimpleNamespace(**value))
                    except Cancelled:
                        actor.handle.cancel.remote([job_id])
                else:
                    self._settle(actor, job_id, callbacks,
                                 value.exception() if isinstance(value, RemoteFailure) else value)
        except ray.exceptions.RayActorError as exc:
            # The actor (or its node) died mid-batch: rerun its jobs elsewhere, the attempt counts.
            log.warning("actor %s died with %d job(s): %s", actor.name, len(jobs), exc)
            actor.dead = True
            for job in jobs:
                self._settle(actor, job["job_id"], callbacks, Rerun(f"actor {actor.name} died"))
        self.pool.refresh(timeout=1.0)
        self._mirror_host()


__all__ = ["EngineActor", "RayPool", "RayExecutor", "BackendUnavailable"]
