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
from ..client.protocol import ActorInfo, BackendInfo, ErrorReply
from ..client.settings import Settings
from .executor import Internal, Rerun, Slot
from .logs import get_logger
from ..model.errors import Cancelled

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
    node_id: str = ""  # the Ray node it is pinned to (NodeAffinity): it lives and goes with that node
    info: dict[str, Any] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)  # its jobs in flight
    key: str | None = None  # their batch_key: only compatible jobs join them
    dead: bool = False  # its process died (Ray restarts it) or its node left
    gone: bool = False  # removed from the pool (its node left): never placed again
    restarts: int = 0
    started: int = 0  # dispatches so far (least-loaded tie-break)

    @property
    def usable(self) -> bool:
        return not (self.dead or self.gone)


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


def token_auth_in_use() -> bool | None:
    """Whether this process talks to Ray with token authentication (Ray >= 2.52; None when Ray cannot say)."""
    try:
        from ray._raylet import AuthenticationMode, get_authentication_mode
    except ImportError:
        return None
    try:
        return get_authentication_mode() == AuthenticationMode.TOKEN
    except Exception:  # noqa: BLE001 - an older or odd build: unknown
        return None


NO_AUTH_WARNING = ("the Ray cluster is used without token authentication: anyone who can reach its ports can run "
                   "code on every node (docs/ray.md: 'A cluster that asks for a token')")


def node_slots(nodes: list[dict[str, Any]], actor_cpus: float, cap: int) -> list[tuple[str, int, dict[str, float]]]:
    """(node id, engine actors it takes, resources each reserves) for the live nodes: one actor per GPU where the
    cluster has GPUs, else one per ``actor_cpus`` CPUs; ``cap`` (ray_actors, 0: none) bounds the total, filled
    node by node in a stable order so a node that joins does not move the others' actors."""
    live = sorted((n for n in nodes if n.get("Alive")), key=lambda n: n["NodeID"])
    gpus = any(float(n.get("Resources", {}).get("GPU", 0)) >= 1 for n in live)
    out, total = [], 0
    for n in live:
        res = n.get("Resources", {})
        if gpus:
            count, each = int(float(res.get("GPU", 0))), {"num_gpus": 1, "num_cpus": 0}
        else:
            count, each = int(float(res.get("CPU", 0)) // actor_cpus), {"num_cpus": actor_cpus}
        if cap:
            count = max(0, min(count, cap - total))
        if count:
            out.append((n["NodeID"], count, each))
            total += count
    return out


def actor_name(node_id: str, slot: int) -> str:
    return f"{ACTOR_PREFIX}{node_id[:12]}-{slot}"


class RayPool:
    """The daemon's view of the engine actors: connect, follow the cluster's nodes (an actor per slot of
    each live node, created when a node joins, removed when it leaves), place, observe."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.state = "connecting"
        self.error: ErrorReply | None = None
        self.actors: list[_Actor] = []
        self.wanted = 0
        self.auth: bool | None = None
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
            self.auth = token_auth_in_use()
            if self.auth is False:
                log.warning(NO_AUTH_WARNING)
            self.reconcile()
        except Exception as exc:  # noqa: BLE001 - any failure here means "no backend"
            self.state = "unavailable"
            self.error = ErrorReply(code="backend_unavailable", message=f"Ray backend: {_short(exc)}",
                                    wanted="a running Ray cluster at ray_address (see docs/ray.md)")
            log.warning("Ray backend unavailable: %s", exc)
            raise BackendUnavailable(str(exc)) from exc
        self.error = None
        self._set_state()

    def _set_state(self) -> None:
        self.state = "ready" if any(a.usable for a in self.actors) else "waiting"

    # follow the cluster -------------------------------------------------------------------------------
    def reconcile(self) -> None:
        """Make the actors match the live nodes: create those of a node that joined, remove those of a node that
        left (a job running there is requeued by its dispatch thread), end named actors no node calls for."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        s = self.settings
        desired: dict[str, tuple[str, dict[str, float]]] = {}
        for node_id, count, each in node_slots(ray.nodes(), s.ray_actor_cpus, s.ray_actors):
            for k in range(count):
                desired[actor_name(node_id, k)] = (node_id, each)
        self.wanted = len(desired)
        with self._lock:
            have = {a.name: a for a in self.actors}
        new: list[_Actor] = []
        if any(n not in have for n in desired):
            remote_cls = ray.remote(EngineActor)
            model_settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in
                              s.model_dump(include=set(MODEL_SETTINGS)).items()}
            for name, (node_id, each) in desired.items():
                if name in have:
                    continue
                handle = remote_cls.options(
                    name=name, namespace=s.ray_namespace, lifetime="detached", get_if_exists=True,
                    max_restarts=-1, max_task_retries=0, max_concurrency=ACTOR_THREADS,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False), **each,
                ).remote(model_settings)
                # Fire and forget: the actor gets these when it is up. Loading now means the first job does not
                # wait for the model; reset: a re-attaching daemon owns none of the actor's earlier work.
                handle.reset.remote()
                handle.load.remote()
                new.append(_Actor(name, handle, node_id))
                log.info("engine actor %s on node %s", name, node_id[:12])
        leaving = [a for a in have.values() if a.name not in desired]
        for a in leaving:
            a.gone = a.dead = True
            log.info("engine actor %s removed: its node %s left the cluster (or ray_actors was lowered)",
                     a.name, a.node_id[:12])
            with contextlib.suppress(Exception):
                ray.kill(a.handle, no_restart=True)
        with self._lock:
            self.actors = [a for a in self.actors if not a.gone or a.busy] + new
        # Detached actors outlive daemons: ones no live node calls for (their node is gone, or ray_actors was
        # lowered) would hold their GPU or CPUs, or wait forever for a node that is not coming back.
        known = set(desired)
        for name in ray.util.list_named_actors():
            if name.startswith(ACTOR_PREFIX) and name not in known:
                log.info("ending surplus engine actor %s", name)
                with contextlib.suppress(Exception):
                    ray.kill(ray.get_actor(name, namespace=s.ray_namespace), no_restart=True)
        self.refresh()

    # observe ------------------------------------------------------------------------------------------
    def refresh(self, timeout: float = 2.0) -> None:
        """Ask every actor for its info (pid, node, device, model, state); one that cannot answer is dead for
        now (Ray restarts a killed actor's process; a new pid means it must load its model again)."""
        import ray

        actors = [a for a in self.actors if not a.gone]
        refs = {a.name: a.handle.info.remote() for a in actors}
        for a in actors:
            try:
                info = ray.get(refs[a.name], timeout=timeout)
            except ray.exceptions.GetTimeoutError:
                continue  # starting, restarting or loading: keep the last known info
            except ray.exceptions.RayActorError:
                a.dead = True
                continue
            if a.info.get("pid") and info.get("pid") != a.info.get("pid"):
                a.restarts += 1
                log.info("actor %s restarted (pid %s -> %s)", a.name, a.info.get("pid"), info.get("pid"))
                a.handle.load.remote()
            a.info, a.dead = info, False
        self._set_state()

    def warnings(self) -> list[str]:
        out = [NO_AUTH_WARNING] if self.auth is False else []
        hashes = {a.info.get("model_hash") for a in self.actors if a.usable and a.info.get("model_hash")}
        if len(hashes) > 1:
            out.append(f"the engine actors serve {len(hashes)} different models (by hash): a request's variations "
                       "run on actors of one model only; give every node the same model folder")
        return out

    def status(self) -> BackendInfo:
        def state(a: _Actor) -> str:
            if a.gone:
                return "gone"
            if a.dead:
                return "restarting"
            return "busy" if a.busy else a.info.get("state", "starting")

        actors = [ActorInfo(name=a.name, state=state(a), node=a.info.get("node") or a.node_id[:12] or None,
                            host=a.info.get("host"), pid=a.info.get("pid"), device=a.info.get("device"),
                            dtype=a.info.get("dtype"), quant=a.info.get("quant"), model_id=a.info.get("model_id"),
                            model_hash=a.info.get("model_hash"),
                            tiny=a.info.get("tiny") if a.info else None, running=list(a.busy),
                            jobs_done=int(a.info.get("jobs_done", 0)), restarts=a.restarts)
                  for a in list(self.actors)]
        return BackendInfo(kind="ray", state=self.state, address=self.settings.ray_address, error=self.error,
                           actors=actors, wanted=self.wanted, auth=self.auth, warnings=self.warnings())

    # place --------------------------------------------------------------------------------------------
    def idle(self, model_hash: str | None = None) -> _Actor | None:
        """The least-loaded usable actor with nothing in flight (fewest dispatches so far), or None; with
        ``model_hash``, only an actor serving that model (or one that has not said yet)."""
        with self._lock:
            free = [a for a in self.actors if not a.busy and a.usable
                    and (model_hash is None or a.info.get("model_hash") in (None, model_hash))]
            return min(free, key=lambda a: a.started) if free else None

    def idle_actors(self, model_hash: str | None = None) -> list[_Actor]:
        """Every usable actor with nothing in flight, least loaded first (as :meth:`idle` picks them)."""
        with self._lock:
            free = [a for a in self.actors if not a.busy and a.usable
                    and (model_hash is None or a.info.get("model_hash") in (None, model_hash))]
            return sorted(free, key=lambda a: a.started)

    def joinable(self, max_batch: int) -> list[_Actor]:
        """Busy actors whose batch has room, least loaded first (a compatible job may join them)."""
        with self._lock:
            room = [a for a in self.actors if a.busy and a.usable and a.key and len(a.busy) < max_batch]
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
                if actor.gone:
                    self.actors = [a for a in self.actors if a is not actor]

    def main_hash(self) -> str | None:
        """When usable actors serve different models: the hash most of them serve (work goes there only);
        None when they agree."""
        hashes = [a.info.get("model_hash") for a in self.actors if a.usable and a.info.get("model_hash")]
        return max(set(hashes), key=hashes.count) if len(set(hashes)) > 1 else None

    def model_summary(self) -> dict[str, Any] | None:
        """What the usable actors serve, for the daemon's own status: the model most of them serve, tiny when
        any serves random weights (with which actor); None before any actor has loaded."""
        infos = [a.info for a in self.actors if a.usable and a.info.get("model_hash")]
        if not infos:
            return None
        tiny = [i for i in infos if i.get("tiny")]
        hashes = {i.get("model_hash") for i in infos}
        main = max(infos, key=lambda i: sum(j.get("model_hash") == i.get("model_hash") for j in infos))
        return {"model_id": main.get("model_id"), "model_hash": main.get("model_hash") if len(hashes) == 1 else None,
                "device": main.get("device"), "dtype": main.get("dtype"), "quant": main.get("quant"),
                "tiny": bool(tiny),
                "tiny_reason": (f"engine actor(s) on {len(tiny)} of {len(infos)} node(s) serve a tiny random model"
                                f" ({tiny[0].get('tiny_reason') or 'no weights on that node'})") if tiny else None}


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
        self._jobs: dict[str, _Actor] = {}  # job id -> its actor, until its on_done
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
            log.warning("Ray cluster lost: %s", _short(exc))
            self.pool.state = "unavailable"
            self.pool.error = ErrorReply(code="backend_unavailable", message=f"Ray backend: {_short(exc)}",
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
        actor: _Actor = slot.target
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
    def _dispatch(self, actor: _Actor, jobs: list[tuple[dict[str, Any], Any, Any]]) -> None:
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

    def _settle(self, actor: _Actor, job_id: str, callbacks: dict[str, Any], res: Any) -> None:
        with self._lock:
            if self._jobs.get(job_id) is not actor:
                return
            del self._jobs[job_id]
        self.pool.release(actor, [job_id])  # room for a compatible job to join
        self._news.set()
        callbacks[job_id][1](res)

    def _run_on_actor(self, actor: _Actor, jobs: list[dict[str, Any]], callbacks: dict[str, Any]) -> None:
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
