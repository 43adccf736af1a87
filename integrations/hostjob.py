"""A job followed without blocking, for hosts that own their UI thread (REAPER's defer, Blender's timers).

The host calls :meth:`HostJob.poll` from its own timer; a call reads the job's events already received
and returns at once (no request to the daemon). Only :mod:`unimoe_audio.client` is used.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import Any

from unimoe_audio.client import protocol as P
from unimoe_audio.client.client import BadRequest, Client, ClientError, DaemonUnavailable, JobWatch

FINAL = ("done", "failed", "cancelled")

NO_DAEMON_HELP = ("no unimoe-audio daemon is running: start it with 'unimoe-audio serve' "
                  "(scripts inside a host do not start one: the host's Python is not a daemon's Python)")


def connect(settings: Any = None, timeout: float = 10.0) -> Client:
    """A client of the running daemon. Hosts never auto-start one (``sys.executable`` is REAPER or
    Blender there, not a Python that can run the daemon)."""
    try:
        return Client(settings, auto_start=False, connect_timeout=timeout, timeout=timeout)
    except DaemonUnavailable as exc:
        raise DaemonUnavailable(f"{NO_DAEMON_HELP}\n({exc})", exc.code) from None


@dataclass
class PollResult:
    state: str
    fraction: float = 0.0
    stage: str = ""
    path: str = ""
    seconds: float = 0.0
    sample_rate: int = 0
    error: str = ""
    changed: bool = True  # False: nothing new since the previous poll

    @property
    def final(self) -> bool:
        return self.state in FINAL


class HostJob:
    """Submit with :meth:`submit`, then call :meth:`poll` from a timer until ``result.final``.

    :meth:`poll` never waits on the daemon: it reads the job's events already received through a
    :class:`~unimoe_audio.client.client.JobWatch` (one short request only after a long silence), so a host's
    UI thread is not blocked. ``result.changed`` says whether anything new came since the last poll.
    """

    def __init__(self, client: Client, kind: str, fields: dict[str, Any]):
        self.client = client
        self.kind = kind
        self.fields = dict(fields)
        self.job_id: str | None = None
        self.last: PollResult | None = None
        self.watch: JobWatch | None = None

    def submit(self) -> str:
        """Raises BadRequest (with ``.field``) when the daemon refuses the request."""
        job = self.client.submit(self.kind, **self.fields)
        self.job_id = job.id
        self.watch = self.client.watch(job.id)
        return job.id

    @classmethod
    def resume(cls, client: Client, job_id: str, kind: str = "") -> "HostJob":
        """Follow a job submitted earlier (by this host before it closed): its events from now on, after
        one snapshot, so a job that ended meanwhile gives its final result at the first poll."""
        job = cls(client, kind, {})
        job.job_id = job_id
        job.watch = client.watch(job_id)
        return job

    def poll(self) -> PollResult:
        assert self.watch is not None, "submit() first"
        try:
            upd = self.watch.poll()
        except ClientError as exc:
            upd = None
            self.last = PollResult(state="failed", error=str(exc))
        if upd is None:
            if self.last is None:
                self.last = PollResult(state="queued", stage="queued")
            self.last.changed = False
            return self.last
        res = PollResult(state=upd.state or upd.kind, fraction=float(upd.fraction or 0.0),
                         stage=upd.stage or upd.state, changed=True)
        ev = upd.event
        if upd.kind == "done" and isinstance(ev, P.DoneEvent):
            # On a remote host (docs/remote.md) the file is fetched to this machine; locally it is ev.path.
            res.path, res.seconds, res.sample_rate, res.fraction = (self.client.local_path(upd.job_id, ev.path),
                                                                    ev.seconds, ev.sample_rate, 1.0)
        elif upd.kind == "failed":
            err = getattr(ev, "error", None)
            res.error = (f"{err.field + ': ' if err.field else ''}{err.code}: {err.message}"
                         + (f" (wanted: {err.wanted})" if err.wanted else "")) if err else "failed"
        self.last = res
        return res

    def cancel(self) -> None:
        if self.job_id:
            self.client.cancel(self.job_id)


def submit_with_fallback(client: Client, kind: str, fields: dict[str, Any]) -> tuple[HostJob, str | None]:
    """Submit with the host's own ``folder`` (a project's media folder, a .blend's folder); when the daemon
    may not write there (``path_not_allowed``: outside its allowed roots), submit again without it so the
    daemon writes into its own output folder. Returns (job, the folder to copy the result into, or None)."""
    job = HostJob(client, kind, fields)
    try:
        job.submit()
        return job, None
    except BadRequest as exc:
        if exc.code != "path_not_allowed" or not fields.get("folder"):
            raise
    job = HostJob(client, kind, {k: v for k, v in fields.items() if k != "folder"})
    job.submit()
    return job, str(fields["folder"])


def copy_into(folder: str, path: str) -> str:
    """Copy ``path`` into ``folder`` (created if needed) without overwriting (``name-2.wav`` ...); returns
    the copy's path."""
    os.makedirs(folder, exist_ok=True)
    stem, ext = os.path.splitext(os.path.basename(path))
    dest, n = os.path.join(folder, stem + ext), 1
    while os.path.exists(dest):
        n += 1
        dest = os.path.join(folder, f"{stem}-{n}{ext}")
    shutil.copy2(path, dest)
    return dest


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, BadRequest) and exc.field:
        return f"{exc.field}: {exc}"
    return str(exc)
