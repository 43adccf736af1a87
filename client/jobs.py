"""Following jobs: typed updates and results, the non-blocking :class:`JobWatch` for hosts that own their
UI thread, and the :class:`Job` handle that :meth:`Client.submit` returns."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pydantic import BaseModel

from . import protocol as P
from .channel import Subscription
from .connection import pid_alive
from .errors import DaemonUnavailable, daemon_gone, from_protocol_error

# ``client`` below is a :class:`~.client.Client` (typed Any: the Client imports this module).
__all__ = ["GenerationResult", "PartialAudio", "JobUpdate", "JobWatch", "Job", "update_from_event",
           "update_from_snapshot"]


class GenerationResult(P.ResultFields):
    """A finished job's audio file and its format (the fields of :class:`~.protocol.ResultFields`, as the
    ``done`` event and the job's record carry them), with the job's id, task and tag."""

    job_id: str
    task: str = ""
    status: str = "done"
    sidecar: str = ""
    tag: str | None = None
    host_path: str | None = None  # on a remote host: where the daemon wrote it (``path`` is the local copy)


@dataclass
class PartialAudio:
    """The audio so far of a streaming job (a WAV file under the cache folder)."""

    job_id: str
    path: str
    seconds: float


@dataclass
class JobUpdate:
    """One step of a job: ``kind`` is the event type (accepted, started, progress, partial, done, failed,
    cancelled, requeued, or ``snapshot`` for the state found when the watch began)."""

    kind: str
    job_id: str
    seq: int = 0
    fraction: float = 0.0
    stage: str = ""
    state: str = ""
    event: BaseModel | None = None

    @property
    def final(self) -> bool:
        return self.kind in P.FINAL_EVENTS


class JobWatch:
    """A job followed without blocking, for hosts that own their UI thread (REAPER's defer, Blender's timers).

    Opening the watch subscribes to the job's events, then takes one snapshot (so nothing is missed).
    :meth:`poll` only reads events already received (no request, returns at once) and gives the newest
    update, or None when nothing new came. When no event has come for ``resync_s`` it checks that the
    daemon's process is alive (a local check) and sends one short snapshot request (``resync_timeout``;
    a busy daemon that does not answer in time is simply asked again later), which also covers events
    published before the subscription reached the daemon.
    """

    def __init__(self, client: Any, job_id: str, *, resync_s: float = 5.0, resync_timeout: float = 0.25):
        self.client = client
        self.job_id = job_id
        self.resync_s = resync_s
        self.resync_timeout = resync_timeout
        self.requests = 1  # requests sent to the daemon (the opening snapshot); a host can check its cost
        try:
            self._sub: Subscription | None = client.channel.subscribe([P.job_topic(job_id)])
        except P.ProtocolError as exc:
            raise from_protocol_error(exc) from None
        snap = client.snapshot(job_id)
        self._seq = snap.seq
        self.last: JobUpdate = update_from_snapshot(snap)
        self._pending: JobUpdate | None = self.last
        self._quiet_since = time.monotonic()
        if self.last.final:
            self.close()

    def poll(self) -> JobUpdate | None:
        newest, self._pending = self._pending, None
        while self._sub is not None and not (newest is not None and newest.final):
            msg = self._sub.recv(timeout=0)
            if msg is None:
                break
            seq = int(msg.content.get("seq") or 0)
            if msg.content.get("job_id") != self.job_id or (seq and seq <= self._seq):
                continue
            upd = update_from_event(msg.msg_type, msg.content)
            if upd is not None:
                self._seq = max(self._seq, seq)
                newest = upd
                if upd.kind == "partial":
                    break  # a preview is never folded into a later update: the rest waits for the next poll
        if newest is None and not self.last.final and time.monotonic() - self._quiet_since >= self.resync_s:
            self._quiet_since = time.monotonic()
            newest = self._resync()
        if newest is None:
            return None
        if not newest.final and newest.kind not in ("progress", "snapshot"):
            newest.fraction = max(newest.fraction, self.last.fraction)  # started/partial carry no fraction
        self.last = newest
        self._quiet_since = time.monotonic()
        if newest.final:
            self.close()
        return newest

    def _resync(self) -> JobUpdate | None:
        pid = self.client.info.pid
        if pid and not pid_alive(pid):
            err = P.ErrorReply(code="not_running", message=daemon_gone(pid, self.client.settings.log_path))
            return JobUpdate(kind="failed", job_id=self.job_id, stage="failed", state="failed",
                             event=P.FailedEvent(job_id=self.job_id, error=err))
        self.requests += 1
        try:
            snap = self.client._call("snapshot", P.SnapshotRequest(job_id=self.job_id), timeout=self.resync_timeout)
        except DaemonUnavailable:
            return None  # no answer in time: ask again after the next quiet spell
        assert isinstance(snap, P.SnapshotReply)
        if snap.seq <= self._seq and snap.job.state not in P.FINAL_STATES:
            return None
        self._seq = max(self._seq, snap.seq)
        return update_from_snapshot(snap)

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None


class Job:
    """A submitted job: ``updates()``, ``wait()``, ``stream()``, ``cancel()``, ``info()``."""

    def __init__(self, client: Any, job_id: str, task: str = "", position: int = 0,
                 request: P.SubmitRequest | None = None):
        self.client = client
        self.id = job_id
        self.task = task
        self.position = position
        self.request = request

    def __repr__(self) -> str:
        return f"Job({self.id!r}, task={self.task!r})"

    def updates(self, timeout: float | None = None) -> Iterator[JobUpdate]:
        return self.client.updates(self.id, timeout=timeout)

    def wait(self, timeout: float | None = None, on_progress: Callable[[JobUpdate], Any] | None = None) -> GenerationResult:
        return self.client.wait(self.id, timeout=timeout, on_progress=on_progress)

    def stream(self, timeout: float | None = None) -> Iterator[PartialAudio]:
        return self.client.stream(self.id, timeout=timeout)

    def cancel(self) -> P.CancelReply:
        return self.client.cancel(self.id)

    def info(self) -> P.JobInfo:
        return self.client.job(self.id)


def update_from_event(msg_type: str, content: dict[str, Any]) -> JobUpdate | None:
    try:
        ev = P.parse_event(msg_type, content)
    except P.ProtocolError:
        return None
    if not hasattr(ev, "job_id"):
        return None
    upd = JobUpdate(kind=msg_type, job_id=ev.job_id, seq=getattr(ev, "seq", 0), event=ev)  # type: ignore[attr-defined]
    if isinstance(ev, P.ProgressEvent):
        upd.fraction, upd.stage, upd.state = ev.fraction, ev.stage, "running"
    elif msg_type == "done":
        upd.fraction, upd.stage, upd.state = 1.0, "done", "done"
    elif msg_type in ("failed", "cancelled"):
        upd.stage = upd.state = msg_type
    elif msg_type == "started":
        upd.stage, upd.state = "started", "running"
    elif msg_type in ("accepted", "requeued"):
        upd.stage, upd.state = "queued", "queued"
    elif msg_type == "partial":
        upd.stage, upd.state = "partial", "running"
    return upd


def update_from_snapshot(snap: P.SnapshotReply) -> JobUpdate:
    job = snap.job
    if job.state in P.FINAL_STATES:
        kind = job.state
        event: BaseModel | None = None
        last = snap.last_event or {}
        if kind == "done" and job.result is not None:
            event = P.DoneEvent(job_id=job.job_id, seq=snap.seq, tag=job.tag, task=job.task,
                                **job.result.result_fields())
        elif kind == "failed":
            err = job.error or (P.ErrorReply.model_validate(last["error"]) if isinstance(last.get("error"), dict)
                                else P.ErrorReply(code="error", message="failed"))
            event = P.FailedEvent(job_id=job.job_id, seq=snap.seq, error=err, tag=job.tag)
        elif kind == "cancelled":
            event = P.CancelledEvent(job_id=job.job_id, seq=snap.seq, tag=job.tag)
        return JobUpdate(kind=kind, job_id=job.job_id, seq=snap.seq, fraction=1.0 if kind == "done" else job.fraction,
                         stage=kind, state=kind, event=event)
    return JobUpdate(kind="snapshot", job_id=job.job_id, seq=snap.seq, fraction=job.fraction,
                     stage=job.stage or job.state, state=job.state, event=job)
