"""A job followed without blocking, for hosts that own their UI thread (REAPER's defer, Blender's timers).

The host calls :meth:`HostJob.poll` from its own timer; each call is one short request to the daemon
(``job``) and returns at once. Only :mod:`unimoe_audio.client` is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from unimoe_audio.client.client import BadRequest, Client, ClientError, DaemonUnavailable

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

    @property
    def final(self) -> bool:
        return self.state in FINAL


class HostJob:
    """Submit with :meth:`submit`, then call :meth:`poll` from a timer until ``result.final``."""

    def __init__(self, client: Client, kind: str, fields: dict[str, Any]):
        self.client = client
        self.kind = kind
        self.fields = dict(fields)
        self.job_id: str | None = None
        self.last: PollResult | None = None

    def submit(self) -> str:
        """Raises BadRequest (with ``.field``) when the daemon refuses the request."""
        job = self.client.submit(self.kind, **self.fields)
        self.job_id = job.id
        return job.id

    def poll(self) -> PollResult:
        assert self.job_id is not None, "submit() first"
        try:
            info = self.client.job(self.job_id)
        except ClientError as exc:
            self.last = PollResult(state="failed", error=str(exc))
            return self.last
        res = PollResult(state=info.state, fraction=float(info.fraction or 0.0), stage=info.stage or info.state)
        if info.state == "done" and info.result is not None:
            res.path, res.seconds, res.sample_rate = info.result.path, info.result.seconds, info.result.sample_rate
            res.fraction = 1.0
        elif info.state == "failed":
            err = info.error
            res.error = (f"{err.field + ': ' if err.field else ''}{err.code}: {err.message}" if err else "failed")
        self.last = res
        return res

    def cancel(self) -> None:
        if self.job_id:
            self.client.cancel(self.job_id)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, BadRequest) and exc.field:
        return f"{exc.field}: {exc}"
    return str(exc)
