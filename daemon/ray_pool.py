"""The daemon's view of the engine actors on a Ray cluster: connect (failing fast where the head is not
there), one actor per GPU (or per ``ray_actor_cpus`` CPUs) of each live node, reconciled as nodes join and
leave, their state for ``status``, and which actor may take work (idle, or with room in its batch)."""
from __future__ import annotations

import contextlib
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..client.protocol import ActorInfo, BackendInfo, ErrorReply
from ..client.settings import Settings
from .logs import get_logger
from .ray_actor import EngineActor

log = get_logger("ray")

ACTOR_PREFIX = "unimoe-engine-"
CONNECT_TIMEOUT_S = 5.0
ACTOR_THREADS = 64  # one per run stream (a job that joins opens one) plus info/cancel/load calls
# The settings an actor takes from the daemon; folders come from the node's own settings (environment or
# config.toml there), so each node finds the model in its own models folder.
MODEL_SETTINGS = ("model", "dac", "device", "dtype")


class BackendUnavailable(Exception):
    pass


@dataclass
class PoolActor:
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


def short_error(exc: BaseException) -> str:
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
        self.actors: list[PoolActor] = []
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
            self.error = ErrorReply(code="backend_unavailable", message=f"Ray backend: {short_error(exc)}",
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
        new: list[PoolActor] = []
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
                new.append(PoolActor(name, handle, node_id))
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
        def state(a: PoolActor) -> str:
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
    def idle(self, model_hash: str | None = None) -> PoolActor | None:
        """The least-loaded usable actor with nothing in flight (fewest dispatches so far), or None; with
        ``model_hash``, only an actor serving that model (or one that has not said yet)."""
        with self._lock:
            free = [a for a in self.actors if not a.busy and a.usable
                    and (model_hash is None or a.info.get("model_hash") in (None, model_hash))]
            return min(free, key=lambda a: a.started) if free else None

    def idle_actors(self, model_hash: str | None = None) -> list[PoolActor]:
        """Every usable actor with nothing in flight, least loaded first (as :meth:`idle` picks them)."""
        with self._lock:
            free = [a for a in self.actors if not a.busy and a.usable
                    and (model_hash is None or a.info.get("model_hash") in (None, model_hash))]
            return sorted(free, key=lambda a: a.started)

    def joinable(self, max_batch: int) -> list[PoolActor]:
        """Busy actors whose batch has room, least loaded first (a compatible job may join them)."""
        with self._lock:
            room = [a for a in self.actors if a.busy and a.usable and a.key and len(a.busy) < max_batch]
            return sorted(room, key=lambda a: len(a.busy))

    def reserve(self, actor: PoolActor, job_ids: list[str], key: str) -> int:
        """Count the jobs in flight on ``actor``; returns its batch size with them."""
        with self._lock:
            if not actor.busy:
                actor.key = key
            actor.busy.update(job_ids)
            actor.started += 1
            return len(actor.busy)

    def release(self, actor: PoolActor, job_ids: list[str]) -> None:
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
