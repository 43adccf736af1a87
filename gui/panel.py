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

from PySide6.QtCore import QEvent, QObject, QSize, Qt, QThread, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView, QFrame, QHBoxLayout, QHeaderView, QInputDialog, QLabel, QMenu, QPushButton, QTableView,
    QTabWidget, QToolButton, QVBoxLayout, QWidget,
)

from unimoe_audio.client.settings import Settings, load_settings

from .audio import Player, read_peaks
from .backend import Backend, JobWatcher, short_field, wait_thread
from .forms import (
    OUTPUT_FIELDS, FormError, MusicForm, OutputBox, ScoreForm, SpeechForm,  # noqa: F401 - re-exported
)
from .jobs_model import (
    COL_DESC, COL_PROGRESS, COL_STAGE, COL_TAKE, COL_TASK, COL_WAVE, COLUMNS, JobRow, JobsModel, flat_fields,
    group_key,
)
from .store import PanelStore
from .widgets import ProgressDelegate, WaveDelegate, WaveformView

TABS = ("music", "speech", "score")

TINY_WARNING = ("The built-in tiny test model is serving: every result is noise. Install the real weights "
                "with 'unimoe-audio models pull' and restart the daemon.")
OFFLINE_HINT = "start one with 'unimoe-audio serve' or press Connect"

_ERROR_STYLE = "border: 1px solid #c62828;"


class Panel(QWidget):
    """The whole panel. ``settings`` picks the daemon (its UNIMOE_AUDIO_HOME); ``auto_start`` starts one
    in the background when none answers (on the first connect and on Connect, not on quiet retries)."""

    # UI thread -> backend thread (queued)
    _do_connect = Signal(bool)
    _do_status = Signal()
    _do_voices = Signal()
    _do_submit = Signal(str, dict, str)
    _do_cancel = Signal(str)
    _do_save_voice = Signal(str, str, str)

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
        self._watchers: dict[str, JobWatcher] = {}
        self._error_widget: QWidget | None = None
        self._closed = False
        self._ab_partner: str | None = None
        self._shown_job: str | None = None
        self._peaks_todo: list[str] = []
        self._ab_switching = False

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
        self.connect_daemon()

    # -- layout ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)
        root.setContentsMargins(10, 10, 10, 10)
        root.setSpacing(8)

        top = QHBoxLayout()
        self.status_label = QLabel("Connecting to the daemon…")
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label.setWordWrap(True)
        top.addWidget(self.status_label, 1)
        self.connect_button = QPushButton("Connect")
        self.connect_button.setToolTip("Connect again with a fresh client (starts a daemon when allowed)")
        self.connect_button.setVisible(False)
        self.connect_button.clicked.connect(self.connect_daemon)
        top.addWidget(self.connect_button)
        root.addLayout(top)

        self.tiny_warning = QLabel("⚠ " + TINY_WARNING)
        self.tiny_warning.setWordWrap(True)
        self.tiny_warning.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; border: 1px solid #ffda6a;"
                                        " border-radius: 4px; padding: 6px; }")
        self.tiny_warning.setVisible(False)
        root.addWidget(self.tiny_warning)

        self.tabs = QTabWidget()
        self.music = MusicForm()
        self.speech = SpeechForm()
        self.score = ScoreForm()
        self.tabs.addTab(self.music, "Music")
        self.tabs.addTab(self.speech, "Speech")
        self.tabs.addTab(self.score, "Score")
        self.speech.refresh_voices.connect(lambda: self._do_voices.emit())
        self.speech.save_voice.connect(self.ask_save_voice)
        corner = QWidget()
        lay = QHBoxLayout(corner)
        lay.setContentsMargins(0, 0, 0, 2)
        lay.setSpacing(2)
        self.history_button = QToolButton()
        self.history_button.setText("History")
        self.history_button.setToolTip("Prompts you generated with on this tab (kept between sessions)")
        self.history_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.history_button.setMenu(QMenu(self.history_button))
        self.history_button.menu().aboutToShow.connect(self._fill_history_menu)
        self.presets_button = QToolButton()
        self.presets_button.setText("Presets")
        self.presets_button.setToolTip("Saved settings of this tab; 'Save as preset…' keeps the current ones")
        self.presets_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.presets_button.setMenu(QMenu(self.presets_button))
        self.presets_button.menu().aboutToShow.connect(self._fill_presets_menu)
        lay.addWidget(self.history_button)
        lay.addWidget(self.presets_button)
        self.tabs.setCornerWidget(corner, Qt.Corner.TopRightCorner)
        root.addWidget(self.tabs)

        self.output = OutputBox()
        root.addWidget(self.output)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("QLabel { color: #c62828; }")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setVisible(False)
        root.addWidget(self.error_label)

        self.offline_label = QLabel()
        self.offline_label.setStyleSheet("QLabel { color: #6d4c00; background: #fff8e1; border: 1px solid #ffe082;"
                                         " border-radius: 4px; padding: 4px; }")
        self.offline_label.setWordWrap(True)
        self.offline_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.offline_label.setVisible(False)
        root.addWidget(self.offline_label)

        gen = QHBoxLayout()
        self.notice_label = QLabel()
        self.notice_label.setStyleSheet("QLabel { color: palette(mid); }")
        self.notice_label.setWordWrap(True)
        self.notice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        gen.addWidget(self.notice_label, 1)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumWidth(120)
        self.generate_button.setEnabled(False)
        self.generate_button.clicked.connect(self.generate)
        gen.addWidget(self.generate_button)
        root.addLayout(gen)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.generate)

        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        root.addWidget(line)

        self.jobs = JobsModel(self)
        self.table = QTableView()
        self.table.setModel(self.jobs)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setDragEnabled(True)
        self.table.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.table.setDefaultDropAction(Qt.DropAction.CopyAction)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(26)
        self.table.setAlternatingRowColors(True)
        self.table.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(self.table))
        self.table.setItemDelegateForColumn(COL_WAVE, WaveDelegate(self.table))
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_DESC, QHeaderView.ResizeMode.Stretch)
        for col, width in ((COL_PROGRESS, 80), (COL_STAGE, 80), (COL_WAVE, 90)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, width)
        header.resizeSection(COL_TASK, 60)
        header.moveSection(header.visualIndex(COL_TAKE), 1)  # Task, Take, Description, Wave, State, ...
        header.moveSection(header.visualIndex(COL_WAVE), 3)
        self.table.setMinimumHeight(140)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._on_selection())
        self.table.doubleClicked.connect(lambda *_: self.toggle_play())
        self.table.installEventFilter(self)
        root.addWidget(self.table, 1)

        self.waveform = WaveformView()
        self.waveform.seek_requested.connect(self.seek)
        self.waveform.installEventFilter(self)
        root.addWidget(self.waveform)

        transport = QHBoxLayout()
        self.play_button = QPushButton("▶ Play")
        self.play_button.setToolTip("Play or stop the selected take (Space)")
        self.play_button.clicked.connect(self.toggle_play)
        self.loop_button = QPushButton("Loop")
        self.loop_button.setCheckable(True)
        self.loop_button.setToolTip("Play the take over and over")
        self.loop_button.toggled.connect(self.player.set_loop)
        self.ab_button = QPushButton("A/B")
        self.ab_button.setToolTip("Switch to the other take of this request at the same position")
        self.ab_button.clicked.connect(self.ab_switch)
        self.keep_button = QPushButton("Keep")
        self.keep_button.setCheckable(True)
        self.keep_button.setToolTip("Mark the take as a keeper (★; kept takes survive Clear finished)")
        self.keep_button.clicked.connect(lambda on: self.set_kept(on))
        self.same_seed_button = QPushButton("Again, same seed")
        self.same_seed_button.setToolTip("Generate this request again with the seed of this take")
        self.same_seed_button.clicked.connect(lambda: self.regenerate(same_seed=True))
        self.new_seed_button = QPushButton("New take")
        self.new_seed_button.setToolTip("Generate this request again with a new seed (a new take in its group)")
        self.new_seed_button.clicked.connect(lambda: self.regenerate(same_seed=False))
        for b in (self.play_button, self.loop_button, self.ab_button, self.keep_button):
            transport.addWidget(b)
        transport.addStretch(1)
        transport.addWidget(self.same_seed_button)
        transport.addWidget(self.new_seed_button)
        root.addLayout(transport)

        buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.reveal_button = QPushButton("Reveal file")
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.copy_button = QPushButton("Copy path")
        self.copy_button.clicked.connect(self.copy_selected_path)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.setToolTip("Remove finished takes from the list (kept takes stay)")
        self.clear_button.clicked.connect(self.jobs.remove_finished)
        for b in (self.cancel_button, self.reveal_button, self.copy_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        root.addLayout(buttons)
        self._sync_buttons()

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
            self.generate_button.setToolTip(text)
            self.connect_button.setVisible(True)
            if not self._retry.isActive() and not self._closed:
                self._retry.start()

    def _on_connected(self, status: Any) -> None:
        self._connecting = False
        self._set_online(True)
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
        for w in list(self._watchers.values()):  # they follow the old client; _on_connected re-watches
            w.stop()
        self._set_online(False, message)

    def _on_jobs_listed(self, infos: list) -> None:
        """The daemon's queue on connect (newest first): earlier sessions' takes join the list, oldest added
        first so takes of one request are numbered in the order they were made; known rows catch up with
        what happened while the panel was away."""
        for info in reversed(infos):
            kind, fields = flat_fields(info.request)
            values: dict[str, Any] = {"state": info.state, "fraction": 1.0 if info.state == "done" else info.fraction,
                                      "stage": info.stage or info.state, "eta_s": info.eta_s}
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
        return TABS[self.tabs.currentIndex()]

    def form(self, kind: str) -> Any:
        return {"music": self.music, "speech": self.speech, "score": self.score}[kind]

    def request_fields(self, kind: str | None = None) -> dict[str, Any]:
        kind = kind or self.current_kind()
        fields = dict(self.form(kind).fields())
        fields.update(self.output.fields())
        return fields

    def generate(self) -> None:
        kind = self.current_kind()
        self.clear_error()
        if not self.online:  # a click (or Ctrl+Return) that cannot be sent says why
            self.show_error(kind, f"Not sent: no daemon is connected ({self.offline_reason or 'not connected'}); "
                                  f"{OFFLINE_HINT}.", None)
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
            widget.setStyleSheet(_ERROR_STYLE)
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

    def watch(self, job_id: str) -> None:
        client = self.backend.client
        if client is None or job_id in self._watchers:
            return
        w = JobWatcher(client, job_id, self)
        w.update.connect(self._on_job_update)
        w.finished.connect(lambda j=job_id, w=w: self._watcher_done(j, w))
        self._watchers[job_id] = w
        w.start()

    def _watcher_done(self, job_id: str, w: JobWatcher) -> None:
        if self._watchers.get(job_id) is w:
            del self._watchers[job_id]
        w.deleteLater()

    def _on_job_update(self, job_id: str, values: dict) -> None:
        values = dict(values)
        kind = values.pop("kind", "")
        row = self.jobs.get(job_id)
        if row is None:
            return
        was_final = row.final
        if kind == "lost":
            self.jobs.apply(job_id, stage=values.get("stage", ""))
            return
        self.jobs.apply(job_id, **values)
        if kind in ("failed", "cancelled") and not row.path:
            row.peaks = None  # the preview of a take that never finished is gone with it
            self.jobs.changed(job_id)
        if values.get("partial_path") and not row.final:
            self._show_preview(row)
        if kind == "done" and row.path:
            self._load_peaks(row)
        if kind in ("done", "failed", "cancelled") and not was_final:
            self._sync_buttons()
            if self.selected_row() is row:
                self._show_selected(keep_position=True)
            self.job_finished.emit(job_id, kind)

    def _show_preview(self, row: JobRow) -> None:
        try:
            row.peaks = read_peaks(row.partial_path)
        except Exception:  # noqa: BLE001 - a preview replaced or removed under us: the next one comes
            return
        self.jobs.changed(row.job_id)
        if self.selected_row() is row:
            self._show_selected(keep_position=True)
        self.preview_shown.emit(row.job_id, row.partial_path)

    def _load_peaks(self, row: JobRow) -> None:
        try:
            row.peaks = read_peaks(row.path)
        except Exception as exc:  # noqa: BLE001 - the file may be gone (moved, deleted by the user)
            row.peaks = None
            self.jobs.apply(row.job_id, stage=f"cannot read the file: {exc}")
        self.jobs.changed(row.job_id)

    def _next_peaks(self) -> None:
        while self._peaks_todo:
            row = self.jobs.get(self._peaks_todo.pop(0))
            if row is not None and row.path and row.peaks is None:
                self._load_peaks(row)
                if self.selected_row() is row:
                    self._show_selected()
                return  # one file per tick: the UI stays responsive while earlier takes load
        self._peaks_timer.stop()

    # -- takes: selection, playback, A/B, keep, regenerate ------------------------------------------------
    def selected_row(self) -> JobRow | None:
        idx = self.table.selectionModel().selectedRows()
        return self.jobs.at(idx[0].row()) if idx else None

    def select_job(self, job_id: str) -> None:
        i = self.jobs.row_of(job_id)
        if i >= 0:
            self.table.selectRow(i)

    def _on_selection(self) -> None:
        row = self.selected_row()
        prev = self.jobs.get(self._shown_job) if self._shown_job else None
        if row is not None and prev is not None and prev is not row and prev.group == row.group and prev.audio_path:
            self._ab_partner = prev.job_id
        elif row is None or prev is None or prev.group != row.group:
            self._ab_partner = None
        self._show_selected(keep_position=self._ab_switching)
        self._sync_buttons()

    def _show_selected(self, keep_position: bool = False) -> None:
        row = self.selected_row()
        self._shown_job = row.job_id if row is not None else None
        if row is not None and row.path and row.peaks is None:
            self._load_peaks(row)
        path = row.audio_path if row is not None else ""
        self.waveform.set_peaks(row.peaks if row is not None and path else None, partial=bool(row and not row.path))
        self.player.load(path, keep_position=keep_position)
        self.waveform.set_playhead(self.player.fraction() if path else None)
        self._sync_buttons()

    def toggle_play(self) -> bool:
        """Play or stop the selected take (the growing preview while it runs). Returns whether it plays."""
        row = self.selected_row()
        if row is None or not row.audio_path:
            self._on_notice("nothing to play yet: select a take that has audio")
            return False
        if self.player.path != row.audio_path:
            self.player.load(row.audio_path)
        return self.player.toggle()

    def seek(self, fraction: float) -> None:
        row = self.selected_row()
        if row is not None and row.audio_path and self.player.path != row.audio_path:
            self.player.load(row.audio_path)
        self.player.seek(fraction)
        self.waveform.set_playhead(fraction)

    def _on_play_position(self, fraction: float) -> None:
        if self.player.path and self.player.path == self.waveform.path:
            self.waveform.set_playhead(fraction)

    def _on_play_state(self, playing: bool) -> None:
        self.play_button.setText("■ Stop" if playing else "▶ Play")

    def ab_target(self) -> JobRow | None:
        row = self.selected_row()
        if row is None or not row.group:
            return None
        partner = self.jobs.get(self._ab_partner) if self._ab_partner else None
        if partner is not None and partner.group == row.group and partner.audio_path and partner is not row:
            return partner
        others = [r for r in self.jobs.takes(row.group) if r is not row and r.audio_path]
        return others[0] if others else None

    def ab_switch(self) -> JobRow | None:
        """Switch to the other take of the request, at the same play position (and keep playing)."""
        target = self.ab_target()
        if target is None:
            return None
        self._ab_switching = True
        try:
            self.select_job(target.job_id)
        finally:
            self._ab_switching = False
        return target

    def set_kept(self, kept: bool) -> None:
        row = self.selected_row()
        if row is None:
            return
        row.kept = kept
        self.store.set_kept(row.job_id, kept)
        self.jobs.changed(row.job_id)
        self._sync_buttons()

    def regenerate(self, same_seed: bool) -> bool:
        """Another take of the selected request: same seed (repeat it) or a new one (a variation)."""
        row = self.selected_row()
        if row is None or not row.kind:
            return False
        fields = dict(row.fields)
        fields.pop("seed", None)
        if same_seed:
            seed = row.seed if row.seed is not None else row.fields.get("seed")
            if seed is None:
                return False
            fields["seed"] = int(seed)
        if not self.online:
            self.show_error(row.kind, f"Not sent: no daemon is connected; {OFFLINE_HINT}.", None)
            return False
        self.submit(row.kind, fields, row.description)
        return True

    def _sync_buttons(self) -> None:
        row = self.selected_row()
        self.cancel_button.setEnabled(row is not None and not row.final)
        has_file = row is not None and bool(row.path)
        self.reveal_button.setEnabled(has_file)
        self.copy_button.setEnabled(has_file)
        self.play_button.setEnabled(row is not None and bool(row.audio_path))
        self.ab_button.setEnabled(self.ab_target() is not None)
        self.keep_button.setEnabled(row is not None)
        self.keep_button.setChecked(bool(row is not None and row.kept))
        can_again = row is not None and bool(row.kind)
        self.new_seed_button.setEnabled(can_again)
        self.same_seed_button.setEnabled(can_again and (row.seed is not None or "seed" in row.fields))

    # -- history and presets ---------------------------------------------------------------------------
    def _fill_history_menu(self) -> None:
        menu = self.history_button.menu()
        menu.clear()
        kind = self.current_kind()
        items = self.store.history(kind)
        if not items:
            menu.addAction("(nothing generated on this tab yet)").setEnabled(False)
        for text in items[:20]:
            label = text if len(text) <= 70 else text[:67] + "…"
            menu.addAction(label, lambda t=text: self.form(kind).set_prompt(t))

    def _fill_presets_menu(self) -> None:
        menu = self.presets_button.menu()
        menu.clear()
        kind = self.current_kind()
        for name in sorted(self.store.presets(kind)):
            menu.addAction(name, lambda n=name: self.apply_preset(n))
        if self.store.presets(kind):
            menu.addSeparator()
        menu.addAction("Save as preset…", self._ask_save_preset)

    def _ask_save_preset(self) -> None:
        name, ok = QInputDialog.getText(self, "Save preset", "Name of the preset:")
        if ok and name.strip():
            self.save_preset(name.strip())

    def save_preset(self, name: str) -> None:
        kind = self.current_kind()
        try:
            fields = self.request_fields(kind)
        except FormError as exc:
            self.show_error(kind, f"{exc.field}: {exc}", f"spec.{exc.field}")
            return
        self.store.save_preset(name, kind, fields)
        self._on_notice(f"preset '{name}' saved")

    def apply_preset(self, name: str) -> bool:
        preset = self.store.presets().get(name)
        if preset is None:
            return False
        kind, fields = preset["kind"], preset["fields"]
        self.tabs.setCurrentWidget(self.form(kind))
        self.form(kind).set_fields(fields)
        self.output.set_fields({k: fields.get(k) for k in OUTPUT_FIELDS})
        return True

    # -- speech: save a voice --------------------------------------------------------------------------
    def ask_save_voice(self, audio: str, transcript: str) -> None:
        name, ok = QInputDialog.getText(self, "Save as voice", "Name of the voice:", text=Path(audio).stem)
        if ok and name.strip():
            self.save_voice(name.strip(), audio, transcript)

    def save_voice(self, name: str, audio: str, transcript: str) -> None:
        self._on_notice(f"saving voice '{name}'…")
        self._do_save_voice.emit(name, audio, transcript)

    # -- job actions ----------------------------------------------------------------------------------
    def cancel_selected(self) -> None:
        row = self.selected_row()
        if row is not None and not row.final:
            self.jobs.apply(row.job_id, stage="cancelling…")
            self._do_cancel.emit(row.job_id)

    def _on_cancel_done(self, job_id: str, state: str) -> None:
        if state.startswith("error"):
            self.jobs.apply(job_id, stage=state)

    def copy_selected_path(self) -> str:
        row = self.selected_row()
        if row is None or not row.path:
            return ""
        QGuiApplication.clipboard().setText(row.path)
        self.notice_label.setText(f"copied {row.path}")
        return row.path

    def reveal_selected(self) -> bool:
        """Open the take's folder in the file manager; where none answers, show the folder's path."""
        row = self.selected_row()
        if row is None or not row.path:
            return False
        folder = str(Path(row.path).parent)
        if reveal(row.path):
            self._on_notice(f"opened {folder}")
            return True
        self._on_notice(f"No file manager answered. The file is in: {folder}")
        return False

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
        watchers = list(self._watchers.values())
        for w in watchers:
            w.stop()
        for w in watchers:
            wait_thread(w, JobWatcher.SLICE + Backend.request_timeout + 5)
        self._thread.quit()
        wait_thread(self._thread, 65)
        self.backend.close()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        super().closeEvent(event)


def reveal(path: str) -> bool:
    """Show a file in the platform's file manager (its folder, selected where the platform allows).
    False where nothing could be opened (no file manager, no desktop session)."""
    import subprocess
    import sys

    p = Path(path)
    try:
        if sys.platform == "darwin":
            return subprocess.call(["open", "-R", str(p)]) == 0
        if sys.platform == "win32":
            subprocess.Popen(["explorer", "/select,", str(p)])
            return True
    except OSError:
        return False
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(p.parent if p.is_file() else p)))


def _html(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["Panel", "MusicForm", "SpeechForm", "ScoreForm", "OutputBox", "reveal", "TINY_WARNING"]
