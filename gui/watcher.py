"""Following the panel's jobs without blocking: one :class:`JobWatcher` on its own QThread polls a
:class:`~unimoe_audio.client.jobs.JobWatch` per job from a QTimer.

A ``JobWatch`` subscribes once and then only reads events already received (a short snapshot request
only after a quiet spell), so following many jobs costs one timer tick, not a thread and a fresh
subscription per job. The watcher lives on its own thread because opening a watch asks the daemon for
a snapshot, which the UI thread must never wait for; its ZeroMQ sockets are only touched there.
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QObject, QTimer, Signal, Slot

from unimoe_audio.client.client import Client, ClientError, JobWatch

from .backend import update_values

__all__ = ["JobWatcher"]


class JobWatcher(QObject):
    """Owns the panel's :class:`JobWatch` objects. Call its slots through queued signals."""

    update = Signal(str, dict)  # job_id, update_values(...) or {"kind": "lost", "stage": ...}

    #: milliseconds between polls of the watches (each poll returns at once)
    TICK_MS = 100
    #: seconds without events before a watch asks for a snapshot (also how a gone daemon is noticed)
    RESYNC_S = 2.0
    #: milliseconds before a watch that could not be opened (busy daemon) is tried again
    RETRY_MS = 1000

    def __init__(self) -> None:
        super().__init__()
        self._watches: dict[str, JobWatch] = {}
        self._pending: dict[str, Client] = {}  # could not open yet: retried on the next RETRY_MS
        self._timer: QTimer | None = None
        self._retry: QTimer | None = None

    @Slot()
    def start(self) -> None:
        """Create the timers on the watcher's own thread (connect to ``QThread.started``)."""
        self._timer = QTimer(self)
        self._timer.setInterval(self.TICK_MS)
        self._timer.timeout.connect(self.poll)
        self._retry = QTimer(self)
        self._retry.setInterval(self.RETRY_MS)
        self._retry.timeout.connect(self._open_pending)

    @Slot(object, str)
    def watch(self, client: Client, job_id: str) -> None:
        if job_id in self._watches or job_id in self._pending:
            return
        self._pending[job_id] = client
        self._open_pending()

    @Slot()
    def forget_all(self) -> None:
        """Drop every watch (their client is gone; the panel watches again once it reconnects)."""
        self.close()
        self._sync_timers()

    def _open_pending(self) -> None:
        for job_id, client in list(self._pending.items()):
            try:
                w = client.watch(job_id, resync_s=self.RESYNC_S)
            except ClientError as exc:
                self.update.emit(job_id, {"kind": "lost", "stage": f"daemon: {exc}"})
                continue
            except Exception as exc:  # noqa: BLE001 - never let a watch die silently
                self.update.emit(job_id, {"kind": "lost", "stage": f"watcher error: {exc}"})
                continue
            del self._pending[job_id]
            self._watches[job_id] = w  # its first poll gives the state found when the watch began
        self._sync_timers()

    @Slot()
    def poll(self) -> None:
        for job_id, w in list(self._watches.items()):
            try:
                upd = w.poll()
            except Exception as exc:  # noqa: BLE001
                self.update.emit(job_id, {"kind": "lost", "stage": f"watcher error: {exc}"})
                self._drop(job_id)
                continue
            if upd is not None:
                self._deliver(w, upd)
        self._sync_timers()

    def _deliver(self, w: JobWatch, upd: Any) -> None:
        err = getattr(upd.event, "error", None)
        if upd.kind == "failed" and err is not None and err.code == "not_running" and not upd.seq:
            # JobWatch's own verdict on a daemon process that is gone, not the job's: the queue is durable,
            # so the job may still finish under the next daemon (the panel re-watches after reconnecting).
            self.update.emit(w.job_id, {"kind": "lost", "stage": f"daemon: {err.message}"})
            self._drop(w.job_id)
            return
        upd = w.client.localized(upd)  # a remote host's done audio: fetched here first
        self.update.emit(w.job_id, update_values(upd))
        if upd.final:
            self._drop(w.job_id)

    def _drop(self, job_id: str) -> None:
        w = self._watches.pop(job_id, None)
        if w is not None:
            w.close()

    def _sync_timers(self) -> None:
        if self._timer is not None:
            if self._watches and not self._timer.isActive():
                self._timer.start()
            elif not self._watches and self._timer.isActive():
                self._timer.stop()
        if self._retry is not None:
            if self._pending and not self._retry.isActive():
                self._retry.start()
            elif not self._pending and self._retry.isActive():
                self._retry.stop()

    def watching(self) -> set[str]:
        return set(self._watches) | set(self._pending)

    def close(self) -> None:
        """Close every watch (on the watcher's thread, or after it has stopped: the timers are left alone)."""
        for job_id in list(self._watches):
            self._drop(job_id)
        self._pending.clear()
