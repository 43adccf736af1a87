"""The panel window and its controller: forms on top, the takes below with a waveform and a transport.

Everything that talks to the daemon runs off the UI thread (see :mod:`.backend`); the UI thread only
builds plain field dicts, sends them through queued signals and paints what comes back. Widgets live in
:mod:`.forms` and :mod:`.widgets`, audio in :mod:`.audio`, what is remembered in :mod:`.store`.

No dead ends: when the daemon goes away the panel says so, turns Generate off with the reason next to
it, and keeps trying to reconnect (quietly, without starting a daemon); Connect makes a fresh client.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QThread, QTimer, Signal
from PySide6.QtWidgets import QWidget

from unimoe_audio.client.protocol import FINAL_STATES
from unimoe_audio.client.settings import Settings, load_settings

from . import panel_layout, script_tab
from .audio import Player
from .continue_actions import ContinueMixin
from .backend import Backend, short_field, wait_thread
from .forms import FormError, MusicForm, OutputBox, ScoreForm, SpeechForm  # noqa: F401 - re-exported
from .jobs_model import JobRow, flat_fields, group_key
from .panel_layout import ERROR_STYLE, OFFLINE_HINT, TABS, TINY_WARNING
from .presets import PresetsMixin
from .store import PanelStore
from .takes import TakesMixin, reveal
from .watcher import JobWatcher


class Panel(TakesMixin, ContinueMixin, PresetsMixin, QWidget):
    """The whole panel. ``settings`` picks the daemon (its UNIMOE_AUDIO_HOME); ``auto_start`` starts one
    in the background when none answers (on the first connect and on Connect, not on quiet retries)."""

    # UI thread -> backend thread (queued)
    _do_connect = Signal(bool)
    _do_status = Signal()
    _do_voices = Signal()
    _do_submit = Signal(str, dict, str)
    _do_cancel = Signal(str)
    _do_save_voice = Signal(str, str, str)
    # UI thread -> watcher thread (queued)
    _do_watch = Signal(object, str)  # client, job_id
    _do_forget_watches = Signal()

    job_finished = Signal(str, str)  # job_id, final state (for scripts and tests)
    preview_shown = Signal(str, str)  # job_id, partial WAV path (a running take's growing preview)

    #: milliseconds between quiet reconnect attempts while no daemon answers
    RETRY_MS = 1500

    def __init__(self, settings: Settings | None = None, *, auto_start: bool = True, status_interval_ms: int = 2000,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("UniMoE Audio")
        self.settings = settings or load_settings()
        self.store = PanelStore.for_settings(self.settings)
        self.status: Any = None
        self.online = False
        self.offline_reason = "connecting to the daemon…"
        self._connecting = False
        self._error_widget: QWidget | None = None
        self._closed = False
        self._ab_partner: str | None = None
        self._shown_job: str | None = None
        self._peaks_todo: list[str] = []
        self._ab_switching = False
        self._not_sent_shown = False  # the error line holds a "Not sent: no daemon" (cleared on reconnect)

        self.player = Player(self)
        self._build()

        self._thread = QThread(self)
        self._thread.setObjectName("unimoe-backend")
        self.backend = Backend(self.settings, auto_start=auto_start)
        self.backend.moveToThread(self._thread)
        self._do_connect.connect(self.backend.connect_daemon)
        self._do_status.connect(self.backend.refresh_status)
        self._do_voices.connect(self.backend.refresh_voices)
        self._do_submit.connect(self.backend.submit)
        self._do_cancel.connect(self.backend.cancel)
        self._do_save_voice.connect(self.backend.save_voice)
        self.backend.notice.connect(self._on_notice)
        self.backend.connected.connect(self._on_connected)
        self.backend.connection_failed.connect(self._on_connection_failed)
        self.backend.jobs_listed.connect(self._on_jobs_listed)
        self.backend.status_changed.connect(self._on_status)
        self.backend.status_failed.connect(self._on_status_failed)
        self.backend.voices_changed.connect(self.speech.set_voices)
        self.backend.submitted.connect(self._on_submitted)
        self.backend.submit_failed.connect(self._on_submit_failed)
        self.backend.cancel_done.connect(self._on_cancel_done)
        self.backend.voice_saved.connect(lambda name: self._on_notice(f"voice '{name}' saved"))
        self.backend.voice_failed.connect(lambda msg, field: self.show_error("speech", msg, field or None))
        self._thread.start()

        self._watch_thread = QThread(self)
        self._watch_thread.setObjectName("unimoe-jobs")
        self.watcher = JobWatcher()
        self.watcher.moveToThread(self._watch_thread)
        self._watch_thread.started.connect(self.watcher.start)
        self._do_watch.connect(self.watcher.watch)
        self._do_forget_watches.connect(self.watcher.forget_all)
        self.watcher.update.connect(self._on_job_update)
        self._watch_thread.start()

        self._timer = QTimer(self)
        self._timer.setInterval(status_interval_ms)
        self._timer.timeout.connect(self._do_status)
        self._retry = QTimer(self)
        self._retry.setInterval(self.RETRY_MS)
        self._retry.timeout.connect(lambda: self._connect(start=False))
        self._peaks_timer = QTimer(self)
        self._peaks_timer.setInterval(0)
        self._peaks_timer.timeout.connect(self._next_peaks)
        self.player.fraction_changed.connect(self._on_play_position)
        self.player.state_changed.connect(self._on_play_state)
        self.player.error.connect(lambda msg: self._on_notice(f"playback: {msg}"))
        self.script_tab = script_tab.add_to_panel(self)  # the Script tab (voiceover): its own module
        self.connect_daemon()

    def _build(self) -> None:
        panel_layout.build(self)

    def sizeHint(self) -> QSize:
        return QSize(680, 860)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        # Space plays the selected take where it cannot mean "type a space" (the list and the waveform).
        if event.type() == QEvent.Type.KeyPress and event.key() == Qt.Key.Key_Space and not event.modifiers():
            self.toggle_play()
            return True
        return super().eventFilter(obj, event)

    # -- daemon ---------------------------------------------------------------------------------------
    def connect_daemon(self) -> None:
        """Connect with a fresh client (Connect button; the first connect): may start a daemon."""
        self.connect_button.setVisible(False)
        self.status_label.setText("Connecting to the daemon…")
        self._connect(start=True)

    def _connect(self, start: bool) -> None:
        if self._connecting or self._closed:
            return
        self._connecting = True
        self._do_connect.emit(start)

    def _on_notice(self, text: str) -> None:
        self.notice_label.setText(text)

    def _set_online(self, online: bool, reason: str = "") -> None:
        self.online = online
        self.offline_reason = "" if online else reason
        self.generate_button.setEnabled(online)
        if online:
            self.offline_label.clear()
            self.offline_label.setVisible(False)
            self.generate_button.setToolTip("Send the request to the daemon (Ctrl+Return)")
            self._retry.stop()
        else:
            why = reason.splitlines()[0] if reason else "not connected"
            text = f"Generate is off: no daemon ({why}). {OFFLINE_HINT[0].upper()}{OFFLINE_HINT[1:]}; the panel " \
                   "reconnects by itself when a daemon appears."
            self.offline_label.setText(text)
            self.offline_label.setVisible(True)
            self.tiny_warning.setVisible(False)  # it described the daemon that went away
            self.generate_button.setToolTip(text)
            self.connect_button.setVisible(True)
            if not self._retry.isActive() and not self._closed:
                self._retry.start()

    def _on_connected(self, status: Any) -> None:
        self._connecting = False
        self._set_online(True)
        if self._not_sent_shown:  # that refusal is no longer true
            self.clear_error()
        self.connect_button.setVisible(False)
        self._on_status(status)
        self._timer.start()
        for row in self.jobs.rows():  # takes that were running when the daemon went away
            if not row.final:
                self.watch(row.job_id)

    def _on_connection_failed(self, message: str) -> None:
        self._connecting = False
        self.status_label.setText(f"<b>No daemon</b>: {_html(message.splitlines()[0] if message else '')}")
        self.status_label.setToolTip(message)
        self._set_online(False, message)

    def _on_status(self, status: Any) -> None:
        self.status = status
        device = status.device or self.settings.device
        if not status.device:
            device += " (not loaded)"
        parts = [f"<b>{_html(status.state)}</b>", f"model {_html(Path(status.model).name or status.model)}",
                 _html(device)]
        if status.dtype:
            parts.append(_html(status.dtype))
        parts.append(f"queue {status.queue_length}")
        self.status_label.setText("Daemon: " + " · ".join(parts))
        tip = f"pid {status.pid}, version {status.version}, protocol {status.protocol_version}"
        if status.error is not None:
            tip += f"\nlast error: {status.error.code}: {status.error.message}"
            self.status_label.setText(self.status_label.text() + f" · <span style='color:#c62828'>error: "
                                      f"{_html(status.error.message[:80])}</span>")
        self.status_label.setToolTip(tip)
        self.tiny_warning.setVisible(bool(status.tiny))
        if status.tiny and status.tiny_reason:
            self.tiny_warning.setToolTip(f"why: {status.tiny_reason}")

    def _on_status_failed(self, message: str) -> None:
        if not self.online:
            return
        self._timer.stop()
        self.status_label.setText(f"<b>Daemon not answering</b>: {_html(message.splitlines()[0])}")
        self._do_forget_watches.emit()  # they follow the old client; _on_connected re-watches
        self._set_online(False, message)

    def _on_jobs_listed(self, infos: list) -> None:
        """The daemon's queue on connect (newest first): earlier sessions' takes join the list, oldest added
        first so takes of one request are numbered in the order they were made; known rows catch up with
        what happened while the panel was away."""
        for info in reversed(infos):
            kind, fields = flat_fields(info.request)
            final = info.state in FINAL_STATES  # a finished take's stage is its state, not its last step's
            values: dict[str, Any] = {"state": info.state, "fraction": 1.0 if info.state == "done" else info.fraction,
                                      "stage": info.state if final else (info.stage or info.state),
                                      "eta_s": info.eta_s}
            if info.result is not None:
                values.update(path=info.result.path, seconds=info.result.seconds, seed=info.result.seed)
            if info.error is not None:
                values.update(error=f"{info.error.code}: {info.error.message}", error_field=info.error.field)
            if self.jobs.get(info.job_id) is None:
                desc = str(fields.get("caption") or fields.get("text") or Path(str(fields.get("video", ""))).name)
                row = JobRow(job_id=info.job_id, task=info.task, description=desc.splitlines()[0][:60] if desc else "",
                             created=info.created or time.time(), kind=kind, fields=fields,
                             group=group_key(kind, fields) if kind else "", kept=self.store.is_kept(info.job_id))
                self.jobs.add(row)
            row = self.jobs.apply(info.job_id, **values)
            if row is not None and row.path and row.peaks is None:
                self._peaks_todo.append(row.job_id)
        if self._peaks_todo:
            self._peaks_timer.start()

    # -- generate -------------------------------------------------------------------------------------
    def current_kind(self) -> str:
        i = self.tabs.currentIndex()
        return TABS[i] if i < len(TABS) else "script"

    def form(self, kind: str) -> Any:
        return {"music": self.music, "speech": self.speech, "score": self.score}[kind]

    def request_fields(self, kind: str | None = None) -> dict[str, Any]:
        kind = kind or self.current_kind()
        fields = dict(self.form(kind).fields())
        fields.update(self.output.fields())
        return fields

    def generate(self) -> None:
        kind = self.current_kind()
        if kind == "script":  # Ctrl+Return there means "Voice all"
            self.script_tab.voice_all()
            return
        self.clear_error()
        if not self.online:  # a click (or Ctrl+Return) that cannot be sent says why
            self.show_error(kind, f"Not sent: no daemon is connected ({self.offline_reason or 'not connected'}); "
                                  f"{OFFLINE_HINT}.", None)
            self._not_sent_shown = True
            return
        try:
            fields = self.request_fields(kind)
        except FormError as exc:
            self.show_error(kind, f"{exc.field}: {exc}", f"spec.{exc.field}")
            return
        self.store.remember(kind, self.form(kind).prompt())
        self.submit(kind, fields, self.form(kind).description())

    def submit(self, kind: str, fields: dict[str, Any], description: str) -> None:
        """Send a request; previews are always asked for (stream_partial), so a running take can be heard."""
        self.generate_button.setEnabled(False)
        QTimer.singleShot(400, lambda: self.generate_button.setEnabled(self.online))
        self._do_submit.emit(kind, {**fields, "stream_partial": True}, description)

    def clear_error(self) -> None:
        self._not_sent_shown = False
        self.error_label.clear()
        self.error_label.setVisible(False)
        if self._error_widget is not None:
            try:
                self._error_widget.setStyleSheet("")
            except RuntimeError:
                pass
            self._error_widget = None

    def show_error(self, kind: str, message: str, field: str | None) -> None:
        """Show a daemon error under the form, naming the field, and outline the field's widget."""
        self.clear_error()
        name = short_field(field)
        text = message
        if field and field not in message:
            text = f"{field}: {message}"
        self.error_label.setText(text)
        self.error_label.setVisible(True)
        widget = None
        if name:
            section = (field or "").split(".")[0]
            if section == "output":
                widget = self.output.widget_for(name)
            else:
                widget = self.form(kind).widget_for(name) or self.output.widget_for(name)
        if widget is not None:
            widget.setStyleSheet(ERROR_STYLE)
            self._error_widget = widget
            self.tabs.setCurrentWidget(self.form(kind))
            widget.setFocus()

    def _on_submit_failed(self, kind: str, message: str, field: str) -> None:
        self.generate_button.setEnabled(self.online)
        self.show_error(kind, message, field or None)

    def _on_submitted(self, job_id: str, task: str, description: str, sent: dict) -> None:
        kind = sent.get("kind", "")
        fields = {k: v for k, v in (sent.get("fields") or {}).items() if k != "stream_partial"}
        row = JobRow(job_id=job_id, task=task, description=description, kind=kind, fields=fields,
                     group=group_key(kind, fields), seed=fields.get("seed"))
        at = self.jobs.add(row)
        self.table.selectRow(at)
        self.watch(job_id)
        self._do_status.emit()


    # -- closing --------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop playback, the watchers and the backend thread, then close the clients (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        self._retry.stop()
        self._peaks_timer.stop()
        self.player.stop()
        self.script_tab.close_tab()
        self._watch_thread.quit()  # a watch being opened finishes its one request first
        wait_thread(self._watch_thread, Backend.request_timeout + 5)
        self.watcher.close()
        self._thread.quit()
        wait_thread(self._thread, 65)
        self.backend.close()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)



def _html(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["Panel", "MusicForm", "SpeechForm", "ScoreForm", "OutputBox", "reveal", "TINY_WARNING"]
