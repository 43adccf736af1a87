"""The desktop panel: Music / Speech / Score forms, output options, a live job list and the daemon status.

Everything that talks to the daemon runs off the UI thread (see :mod:`.backend`); the UI thread only
builds plain field dicts, sends them through queued signals and paints what comes back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QSize, Qt, QThread, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (
    QAbstractItemView, QApplication, QButtonGroup, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
    QFrame, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QPlainTextEdit, QPushButton, QRadioButton,
    QSizePolicy, QSpinBox, QStyle, QStyledItemDelegate, QStyleOptionProgressBar, QStyleOptionViewItem, QTableView,
    QTabWidget, QToolButton, QVBoxLayout, QWidget,
)

from unimoe_audio.client.settings import Settings, load_settings

from .backend import Backend, JobWatcher, short_field, wait_thread
from .jobs_model import COL_DESC, COL_PROGRESS, COL_STAGE, COL_TASK, COLUMNS, JobRow, JobsModel

KEYS = ["", "C major", "G major", "D major", "A major", "E major", "F major", "Bb major", "Eb major",
        "A minor", "E minor", "B minor", "D minor", "G minor", "C minor", "F# minor"]
RATES = [("default", None), ("44100 Hz", 44100), ("48000 Hz", 48000), ("96000 Hz", 96000)]
CHANNELS = [("default", None), ("stereo", 2), ("mono", 1)]
TABS = ("music", "speech", "score")

TINY_WARNING = ("The built-in tiny test model is serving: every result is noise. Install the real weights "
                "with 'unimoe-audio models pull' and restart the daemon.")

_ERROR_STYLE = "border: 1px solid #c62828;"


class ProgressDelegate(QStyledItemDelegate):
    """Paints the Progress column as a progress bar."""

    def paint(self, painter: Any, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        fraction = index.data(Qt.ItemDataRole.UserRole)
        if not isinstance(fraction, (int, float)):
            return super().paint(painter, option, index)
        bar = QStyleOptionProgressBar()
        bar.rect = option.rect.adjusted(2, 3, -2, -3)
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(max(0.0, min(1.0, float(fraction))) * 1000)
        bar.text = f"{int(round(fraction * 100))} %"
        bar.textVisible = True
        bar.state = option.state
        style = option.widget.style() if option.widget else QApplication.style()
        style.drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter, option.widget)


class _Row(QWidget):
    """A horizontal row inside a form: as tall as its contents, so the form's label lines up with it."""

    def __init__(self) -> None:
        super().__init__()
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)


def _file_row(edit: QLineEdit, button: QToolButton) -> QWidget:
    w = _Row()
    lay = QHBoxLayout(w)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(4)
    lay.addWidget(edit, 1)
    lay.addWidget(button)
    return w


def _seed_box() -> QSpinBox:
    box = QSpinBox()
    box.setRange(-1, 2**31 - 1)
    box.setValue(-1)
    box.setSpecialValueText("random")
    box.setToolTip("Seed for a repeatable result; 'random' lets the daemon pick one (reported back).")
    return box


class FormError(ValueError):
    """A form value the panel can reject before asking the daemon (``field`` as the protocol names it)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def _form(widget: QWidget) -> QFormLayout:
    form = QFormLayout(widget)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    form.setFormAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    return form


class MusicForm(QWidget):
    def __init__(self) -> None:
        super().__init__()
        form = _form(self)
        self.caption = QPlainTextEdit()
        self.caption.setPlaceholderText("e.g. calm piano with soft strings, slow and warm")
        self.caption.setFixedHeight(54)
        form.addRow("Caption", self.caption)

        self.by_seconds = QRadioButton("Seconds")
        self.by_bars = QRadioButton("Bars (4/4)")
        self.by_seconds.setChecked(True)
        group = QButtonGroup(self)
        group.addButton(self.by_seconds)
        group.addButton(self.by_bars)
        self.seconds = QDoubleSpinBox()
        self.seconds.setRange(0.1, 600.0)
        self.seconds.setDecimals(2)
        self.seconds.setValue(8.0)
        self.seconds.setSuffix(" s")
        self.bars = QSpinBox()
        self.bars.setRange(1, 1024)
        self.bars.setValue(4)
        length = _Row()
        lay = QHBoxLayout(length)
        lay.setContentsMargins(0, 0, 0, 0)
        for w in (self.by_seconds, self.seconds, self.by_bars, self.bars):
            lay.addWidget(w)
        lay.addStretch(1)
        form.addRow("Length", length)

        self.tempo = QDoubleSpinBox()
        self.tempo.setRange(0.0, 400.0)
        self.tempo.setDecimals(1)
        self.tempo.setValue(0.0)
        self.tempo.setSpecialValueText("any")
        self.tempo.setSuffix(" BPM")
        self.tempo.setToolTip("Tempo; with a length in bars it also sets the exact length")
        self.key = QComboBox()
        self.key.setEditable(True)
        self.key.addItems(KEYS)
        self.key.lineEdit().setPlaceholderText("any key")
        self.seed = _seed_box()
        row = _Row()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tempo)
        lay.addWidget(QLabel("Key"))
        lay.addWidget(self.key, 1)
        lay.addWidget(QLabel("Seed"))
        lay.addWidget(self.seed)
        form.addRow("Tempo", row)
        self.by_seconds.toggled.connect(self._sync)
        self._sync()

    def _sync(self) -> None:
        secs = self.by_seconds.isChecked()
        self.seconds.setEnabled(secs)
        self.bars.setEnabled(not secs)
        self.tempo.setSpecialValueText("any" if secs else "— needed —")

    def fields(self) -> dict[str, Any]:
        f: dict[str, Any] = {"caption": self.caption.toPlainText().strip()}
        if self.by_seconds.isChecked():
            f["seconds"] = float(self.seconds.value())
        else:  # the client turns bars at a tempo into a sample-exact length (4/4)
            f["bars"] = int(self.bars.value())
            if self.tempo.value() <= 0:
                raise FormError("tempo_bpm", "a length in bars needs a tempo")
        if self.tempo.value() > 0:
            f["tempo_bpm"] = float(self.tempo.value())
        key = self.key.currentText().strip()
        if key:
            f["key"] = key
        if self.seed.value() >= 0:
            f["seed"] = int(self.seed.value())
        return {k: v for k, v in f.items() if v is not None}

    def description(self) -> str:
        return self.caption.toPlainText().strip().splitlines()[0][:60] if self.caption.toPlainText().strip() else ""

    def widget_for(self, name: str) -> QWidget | None:
        return {"caption": self.caption, "seconds": self.seconds, "frames": self.seconds, "bars": self.bars,
                "tempo_bpm": self.tempo, "key": self.key, "seed": self.seed, "length": self.seconds}.get(name)


class SpeechForm(QWidget):
    refresh_voices = Signal()

    def __init__(self) -> None:
        super().__init__()
        form = _form(self)
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("What should be said")
        self.text.setFixedHeight(54)
        form.addRow("Text", self.text)

        self.voice = QComboBox()
        self.voice.addItem("(no saved voice)", None)
        refresh = QToolButton()
        refresh.setText("↻")
        refresh.setToolTip("Reload the daemon's saved voices")
        refresh.clicked.connect(self.refresh_voices)
        row = _Row()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.voice, 1)
        lay.addWidget(refresh)
        form.addRow("Voice", row)

        self.reference = QLineEdit()
        self.reference.setPlaceholderText("or a reference recording (WAV/FLAC/MP3)")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        form.addRow("Reference", _file_row(self.reference, browse))
        self.transcript = QLineEdit()
        self.transcript.setPlaceholderText("what the reference recording says")
        form.addRow("Transcript", self.transcript)

        self.seconds = QDoubleSpinBox()
        self.seconds.setRange(0.0, 600.0)
        self.seconds.setDecimals(2)
        self.seconds.setSpecialValueText("auto")
        self.seconds.setSuffix(" s")
        self.seed = _seed_box()
        row = _Row()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.seconds, 1)
        lay.addWidget(QLabel("Seed"))
        lay.addWidget(self.seed)
        form.addRow("Length", row)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Reference recording", "",
                                              "Audio (*.wav *.flac *.mp3 *.ogg *.m4a);;All files (*)")
        if path:
            self.reference.setText(path)

    def set_voices(self, voices: list[Any]) -> None:
        current = self.voice.currentData()
        self.voice.clear()
        self.voice.addItem("(no saved voice)", None)
        for v in voices:
            label = f"{v.name} ({v.seconds:.1f} s)" if getattr(v, "seconds", None) else v.name
            self.voice.addItem(label, v.name)
        i = self.voice.findData(current)
        self.voice.setCurrentIndex(max(0, i))

    def fields(self) -> dict[str, Any]:
        f: dict[str, Any] = {"text": self.text.toPlainText().strip()}
        voice = self.voice.currentData()
        if voice:
            f["voice"] = voice
        ref = self.reference.text().strip()
        if ref and not voice:
            f["reference_audio"] = ref
            f["reference_text"] = self.transcript.text().strip() or None
        if self.seconds.value() > 0:
            f["seconds"] = float(self.seconds.value())
        if self.seed.value() >= 0:
            f["seed"] = int(self.seed.value())
        return {k: v for k, v in f.items() if v is not None}

    def description(self) -> str:
        t = self.text.toPlainText().strip()
        return t.splitlines()[0][:60] if t else ""

    def widget_for(self, name: str) -> QWidget | None:
        return {"text": self.text, "voice": self.voice, "reference_audio": self.reference,
                "reference_text": self.transcript, "seconds": self.seconds, "length": self.seconds,
                "seed": self.seed}.get(name)


class ScoreForm(QWidget):
    def __init__(self) -> None:
        super().__init__()
        form = _form(self)
        self.video = QLineEdit()
        self.video.setPlaceholderText("video file (mp4, mov, mkv...)")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        form.addRow("Video", _file_row(self.video, browse))

        self.in_s = QDoubleSpinBox()
        self.in_s.setRange(0.0, 86400.0)
        self.in_s.setDecimals(3)
        self.in_s.setSuffix(" s")
        self.out_s = QDoubleSpinBox()
        self.out_s.setRange(0.0, 86400.0)
        self.out_s.setDecimals(3)
        self.out_s.setSuffix(" s")
        self.out_s.setSpecialValueText("end")
        row = _Row()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(QLabel("In"))
        lay.addWidget(self.in_s, 1)
        lay.addWidget(QLabel("Out"))
        lay.addWidget(self.out_s, 1)
        form.addRow("Range", row)

        self.caption = QLineEdit()
        self.caption.setPlaceholderText("optional: e.g. tense strings, building")
        form.addRow("Caption", self.caption)
        self.mode = QComboBox()
        self.mode.addItem("vision: follow the picture", "vision")
        self.mode.addItem("reference: use the clip as a style reference", "reference")
        self.seed = _seed_box()
        row = _Row()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.mode, 1)
        lay.addWidget(QLabel("Seed"))
        lay.addWidget(self.seed)
        form.addRow("Mode", row)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Video", "", "Video (*.mp4 *.mov *.mkv *.avi *.webm);;All files (*)")
        if path:
            self.video.setText(path)

    def fields(self) -> dict[str, Any]:
        f: dict[str, Any] = {"video": self.video.text().strip(), "caption": self.caption.text().strip(),
                             "in_seconds": float(self.in_s.value()), "mode": self.mode.currentData()}
        if self.out_s.value() > 0:
            f["out_seconds"] = float(self.out_s.value())
        if self.seed.value() >= 0:
            f["seed"] = int(self.seed.value())
        return f

    def description(self) -> str:
        v = self.video.text().strip()
        name = Path(v).name if v else ""
        rng = f" {self.in_s.value():g}–{self.out_s.value():g} s" if self.out_s.value() > 0 else ""
        return f"{name}{rng}"

    def widget_for(self, name: str) -> QWidget | None:
        return {"video": self.video, "in_seconds": self.in_s, "out_seconds": self.out_s, "caption": self.caption,
                "mode": self.mode, "seed": self.seed}.get(name)


class OutputBox(QGroupBox):
    def __init__(self) -> None:
        super().__init__("Output")
        form = _form(self)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("the daemon's output folder")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        form.addRow("Folder", _file_row(self.folder, browse))
        self.rate = QComboBox()
        for label, value in RATES:
            self.rate.addItem(label, value)
        self.channels = QComboBox()
        for label, value in CHANNELS:
            self.channels.addItem(label, value)
        row = _Row()
        lay = QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.rate, 1)
        lay.addWidget(QLabel("Channels"))
        lay.addWidget(self.channels, 1)
        form.addRow("Sample rate", row)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder", self.folder.text())
        if path:
            self.folder.setText(path)

    def fields(self) -> dict[str, Any]:
        f: dict[str, Any] = {}
        if self.folder.text().strip():
            f["folder"] = self.folder.text().strip()
        if self.rate.currentData():
            f["sample_rate"] = int(self.rate.currentData())
        if self.channels.currentData():
            f["channels"] = int(self.channels.currentData())
        return f

    def widget_for(self, name: str) -> QWidget | None:
        return {"folder": self.folder, "name": self.folder, "sample_rate": self.rate,
                "channels": self.channels}.get(name)


class Panel(QWidget):
    """The whole panel. ``settings`` picks the daemon (its UNIMOE_AUDIO_HOME); ``auto_start`` starts one
    in the background when none answers."""

    # UI thread -> backend thread (queued)
    _do_connect = Signal()
    _do_status = Signal()
    _do_voices = Signal()
    _do_submit = Signal(str, dict, str)
    _do_cancel = Signal(str)

    job_finished = Signal(str, str)  # job_id, final state (for scripts and tests)

    def __init__(self, settings: Settings | None = None, *, auto_start: bool = True, status_interval_ms: int = 2000,
                 parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("UniMoE Audio")
        self.settings = settings or load_settings()
        self.status: Any = None
        self._watchers: dict[str, JobWatcher] = {}
        self._error_widget: QWidget | None = None
        self._closed = False

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
        self.backend.notice.connect(self._on_notice)
        self.backend.connected.connect(self._on_connected)
        self.backend.connection_failed.connect(self._on_connection_failed)
        self.backend.status_changed.connect(self._on_status)
        self.backend.status_failed.connect(self._on_status_failed)
        self.backend.voices_changed.connect(self.speech.set_voices)
        self.backend.submitted.connect(self._on_submitted)
        self.backend.submit_failed.connect(self._on_submit_failed)
        self.backend.cancel_done.connect(self._on_cancel_done)
        self._thread.start()

        self._timer = QTimer(self)
        self._timer.setInterval(status_interval_ms)
        self._timer.timeout.connect(self._do_status)
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
        root.addWidget(self.tabs)

        self.output = OutputBox()
        root.addWidget(self.output)

        self.error_label = QLabel()
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("QLabel { color: #c62828; }")
        self.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error_label.setVisible(False)
        root.addWidget(self.error_label)

        gen = QHBoxLayout()
        self.notice_label = QLabel()
        self.notice_label.setStyleSheet("QLabel { color: palette(mid); }")
        gen.addWidget(self.notice_label, 1)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.setMinimumWidth(120)
        self.generate_button.setEnabled(False)
        self.generate_button.clicked.connect(self.generate)
        gen.addWidget(self.generate_button)
        root.addLayout(gen)

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
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(24)
        self.table.setAlternatingRowColors(True)
        self.table.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(self.table))
        header = self.table.horizontalHeader()
        for col in range(len(COLUMNS)):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COL_DESC, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(COL_PROGRESS, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(COL_PROGRESS, 90)
        header.setSectionResizeMode(COL_STAGE, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(COL_STAGE, 90)
        header.resizeSection(COL_TASK, 60)
        self.table.setMinimumHeight(150)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self._sync_buttons())
        self.table.doubleClicked.connect(lambda *_: self.reveal_selected())
        root.addWidget(self.table, 1)

        buttons = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_selected)
        self.reveal_button = QPushButton("Reveal file")
        self.reveal_button.clicked.connect(self.reveal_selected)
        self.copy_button = QPushButton("Copy path")
        self.copy_button.clicked.connect(self.copy_selected_path)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.clicked.connect(self.jobs.remove_finished)
        for b in (self.cancel_button, self.reveal_button, self.copy_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.clear_button)
        root.addLayout(buttons)
        self._sync_buttons()

    def sizeHint(self) -> QSize:
        return QSize(620, 760)

    # -- daemon ---------------------------------------------------------------------------------------
    def connect_daemon(self) -> None:
        self.connect_button.setVisible(False)
        self.status_label.setText("Connecting to the daemon…")
        self._do_connect.emit()

    def _on_notice(self, text: str) -> None:
        self.notice_label.setText(text)

    def _on_connected(self, status: Any) -> None:
        self.generate_button.setEnabled(True)
        self._on_status(status)
        self._timer.start()

    def _on_connection_failed(self, message: str) -> None:
        self.status_label.setText(f"<b>No daemon</b>: {_html(message.splitlines()[0] if message else '')}")
        self.status_label.setToolTip(message)
        self.connect_button.setVisible(True)
        self.generate_button.setEnabled(False)

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
        self.status_label.setText(f"<b>Daemon not answering</b>: {_html(message.splitlines()[0])}")
        self.connect_button.setVisible(True)

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
        try:
            fields = self.request_fields(kind)
        except FormError as exc:
            self.show_error(kind, f"{exc.field}: {exc}", f"spec.{exc.field}")
            return
        self.generate_button.setEnabled(False)
        QTimer.singleShot(400, lambda: self.generate_button.setEnabled(self.backend.client is not None))
        self._do_submit.emit(kind, fields, self.form(kind).description())

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
        self.generate_button.setEnabled(self.backend.client is not None)
        self.show_error(kind, message, field or None)

    def _on_submitted(self, job_id: str, task: str, description: str) -> None:
        self.jobs.add(JobRow(job_id=job_id, task=task, description=description))
        self.table.selectRow(0)
        self.watch(job_id)
        self._do_status.emit()

    def watch(self, job_id: str) -> None:
        client = self.backend.client
        if client is None or job_id in self._watchers:
            return
        w = JobWatcher(client, job_id, self)
        w.update.connect(self._on_job_update)
        w.finished.connect(lambda j=job_id: self._watcher_done(j))
        self._watchers[job_id] = w
        w.start()

    def _watcher_done(self, job_id: str) -> None:
        w = self._watchers.pop(job_id, None)
        if w is not None:
            w.deleteLater()

    def _on_job_update(self, job_id: str, values: dict) -> None:
        values = dict(values)
        kind = values.pop("kind", "")
        row = self.jobs.get(job_id)
        if row is None:
            return
        was_final = row.final
        self.jobs.apply(job_id, **values)
        if kind in ("done", "failed", "cancelled") and not was_final:
            self._sync_buttons()
            self.job_finished.emit(job_id, kind)

    # -- job actions ----------------------------------------------------------------------------------
    def selected_row(self) -> JobRow | None:
        idx = self.table.selectionModel().selectedRows()
        return self.jobs.at(idx[0].row()) if idx else None

    def select_job(self, job_id: str) -> None:
        i = self.jobs.row_of(job_id)
        if i >= 0:
            self.table.selectRow(i)

    def _sync_buttons(self) -> None:
        row = self.selected_row()
        self.cancel_button.setEnabled(row is not None and not row.final)
        has_file = row is not None and bool(row.path)
        self.reveal_button.setEnabled(has_file)
        self.copy_button.setEnabled(has_file)

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
        row = self.selected_row()
        if row is None or not row.path:
            return False
        return reveal(row.path)

    # -- closing --------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the watchers and the backend thread, then close the client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._timer.stop()
        watchers = list(self._watchers.values())
        for w in watchers:
            w.stop()
        for w in watchers:
            wait_thread(w, JobWatcher.SLICE + 5)
        self._thread.quit()
        wait_thread(self._thread, 65)
        self.backend.close()

    def closeEvent(self, event: Any) -> None:
        self.shutdown()
        super().closeEvent(event)


def reveal(path: str) -> bool:
    """Show a file in the platform's file manager (its folder, selected where the platform allows)."""
    p = Path(path)
    if sys_platform() == "darwin":
        import subprocess

        return subprocess.call(["open", "-R", str(p)]) == 0
    if sys_platform() == "win32":
        import subprocess

        subprocess.Popen(["explorer", "/select,", str(p)])
        return True
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(p.parent if p.is_file() else p)))


def sys_platform() -> str:
    import sys

    return sys.platform


def _html(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


__all__ = ["Panel", "MusicForm", "SpeechForm", "ScoreForm", "OutputBox", "reveal", "TINY_WARNING"]
