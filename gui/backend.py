"""The panel's link to the daemon, off the UI thread.

- :class:`Backend` is a QObject moved to its own QThread; it owns the :class:`Client` and runs the short
  requests (connect/auto-start, status, the queue's jobs, voices, submit, cancel). Every connect makes
  a fresh client, so a daemon that was replaced (new pid, new keys, new ports) is found again. The UI calls it through queued signals
  and hears back through signals, so the UI thread never waits on a socket.
- :func:`update_values` turns a job update into the plain dict the job list takes; the jobs themselves
  are followed by :class:`~.watcher.JobWatcher`.

Only :mod:`unimoe_audio.client` is used: no queue database, no model, no daemon imports.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from unimoe_audio.client import connection
from unimoe_audio.client.client import BadRequest, Client, ClientError, JobUpdate
from unimoe_audio.client.settings import Settings

FINAL = ("done", "failed", "cancelled")


def short_field(field: str | None) -> str:
    """``spec.length.seconds`` -> ``seconds``; ``output.folder`` -> ``folder``; ``spec.caption`` -> ``caption``."""
    if not field:
        return ""
    return field.split(".")[-1]


def error_text(exc: BaseException) -> str:
    field = getattr(exc, "field", None)
    msg = str(exc)
    return f"{field}: {msg}" if field and not msg.startswith(f"{field}:") else msg


def update_values(upd: JobUpdate) -> dict[str, Any]:
    """A JobUpdate as plain values for the job list (``state``, ``fraction``, ``stage``, ``eta_s``, and on
    the final update ``path``/``seconds`` or ``error``/``error_field``)."""
    ev = upd.event
    values: dict[str, Any] = {"kind": upd.kind, "fraction": float(upd.fraction or 0.0), "stage": upd.stage or ""}
    state = upd.state or ("running" if upd.kind in ("progress", "started", "partial") else "")
    if state:
        values["state"] = state
    eta = getattr(ev, "eta_s", None)
    values["eta_s"] = float(eta) if isinstance(eta, (int, float)) else None
    if upd.kind == "partial":
        path = getattr(ev, "path", None)
        if path:
            values["partial_path"] = str(path)
    if upd.kind == "done":
        values["state"] = "done"
        values["fraction"] = 1.0
        path = getattr(ev, "path", None)
        if path:
            values["path"] = str(path)
            values["seconds"] = getattr(ev, "seconds", None)
        if getattr(ev, "seed", None) is not None:
            values["seed"] = int(ev.seed)  # type: ignore[union-attr]
    elif upd.kind == "failed":
        err = getattr(ev, "error", None)
        if err is not None:
            where = f"{err.field}: " if err.field else ""
            values["error"] = f"{where}{err.code}: {err.message}" + (f" (wanted: {err.wanted})" if err.wanted else "")
            values["error_field"] = err.field
        else:
            values["error"] = "failed"
    elif upd.kind == "cancelled":
        values["state"] = "cancelled"
    return values


class Backend(QObject):
    """Lives on a worker QThread; every slot is called through a queued connection."""

    notice = Signal(str)
    connected = Signal(object)  # StatusReply
    connection_failed = Signal(str)
    jobs_listed = Signal(list)  # [JobInfo] of the daemon's queue (earlier sessions too), newest first
    status_changed = Signal(object)  # StatusReply
    status_failed = Signal(str)
    voices_changed = Signal(list)  # [VoiceInfo]
    submitted = Signal(str, str, str, dict)  # job_id, task, description, {"kind", "fields"}
    submit_failed = Signal(str, str, str)  # kind, message, field (dotted, may be "")
    cancel_done = Signal(str, str)  # job_id, state or error text
    voice_saved = Signal(str)  # name
    voice_failed = Signal(str, str)  # message, field

    #: how many of the queue's latest jobs the panel lists on connect
    JOBS_LISTED = 50

    #: seconds per request: the daemon answers status/submit/jobs at once (the work runs on its worker), so
    #: a longer silence means it is gone; voice_add passes its own, longer bound
    request_timeout = 15.0

    def __init__(self, settings: Settings, *, auto_start: bool = True, connect_timeout: float = 60.0):
        super().__init__()
        self.settings = settings
        self.auto_start = auto_start
        self.connect_timeout = connect_timeout
        self.client: Client | None = None
        self._retired: list[Client] = []  # replaced clients; their watchers may still be winding down
        self._lock = threading.Lock()

    # -- connection -------------------------------------------------------------------------------
    @Slot(bool)
    def connect_daemon(self, start: bool = True) -> None:
        """A fresh client (the old one may point at a daemon that is gone). ``start``: start a daemon when
        none answers (if the panel allows auto-start); the quiet retries pass False."""
        self.drop_client()
        try:
            client = Client(self.settings, auto_start=self.auto_start and start, notice=self.notice.emit,
                            connect_timeout=self.connect_timeout, timeout=self.request_timeout)
            status = client.status()
            jobs = client.jobs(limit=self.JOBS_LISTED)
        except ClientError as exc:
            self.connection_failed.emit(str(exc))
            return
        except Exception as exc:  # noqa: BLE001
            self.connection_failed.emit(f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            self.client = client
        self.jobs_listed.emit(jobs)
        self.connected.emit(status)
        self.refresh_voices()

    @Slot()
    def drop_client(self) -> None:
        with self._lock:
            c, self.client = self.client, None
        if c is not None:
            self._retired.append(c)

    @Slot()
    def refresh_status(self) -> None:
        c = self.client
        if c is None:
            return
        if c.pid and not connection.pid_alive(c.pid):  # a local daemon that exited: say so now, not after a timeout
            self.status_failed.emit(f"the daemon (pid {c.pid}) is gone")
            return
        try:
            self.status_changed.emit(c.status())
        except ClientError as exc:
            self.status_failed.emit(str(exc))

    @Slot()
    def refresh_voices(self) -> None:
        c = self.client
        if c is None:
            return
        try:
            self.voices_changed.emit(c.voices())
        except ClientError as exc:
            self.notice.emit(f"voices: {exc}")

    # -- jobs ---------------------------------------------------------------------------------------
    @Slot(str, dict, str)
    def submit(self, kind: str, fields: dict, description: str) -> None:
        c = self.client
        if c is None:
            self.submit_failed.emit(kind, "not connected to the daemon", "")
            return
        try:
            job = c.submit(kind, **fields)
        except BadRequest as exc:
            self.submit_failed.emit(kind, str(exc), exc.field or "")
            return
        except ClientError as exc:
            self.submit_failed.emit(kind, str(exc), exc.field or "")
            return
        self.submitted.emit(job.id, job.task, description, {"kind": kind, "fields": fields})

    @Slot(str)
    def cancel(self, job_id: str) -> None:
        c = self.client
        if c is None:
            return
        try:
            reply = c.cancel(job_id)
            self.cancel_done.emit(job_id, reply.state)
        except ClientError as exc:
            self.cancel_done.emit(job_id, f"error: {exc}")

    @Slot(str, str, str)
    def save_voice(self, name: str, audio: str, transcript: str) -> None:
        c = self.client
        if c is None:
            self.voice_failed.emit("not connected to the daemon", "")
            return
        try:
            c.voice_add(name, audio, transcript)
        except ClientError as exc:
            self.voice_failed.emit(str(exc), exc.field or "")
            return
        self.voice_saved.emit(name)
        self.refresh_voices()

    def close(self) -> None:
        """Close the clients (call after the thread and the watchers have stopped)."""
        self.drop_client()
        for c in self._retired:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing a client of a vanished daemon
                pass
        self._retired.clear()


def wait_thread(thread: QThread, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while thread.isRunning() and time.monotonic() < deadline:
        thread.wait(50)
    return not thread.isRunning()
