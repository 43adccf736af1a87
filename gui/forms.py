"""The request forms of the panel (Music, Speech, Score) and the output options.

Each form turns its widgets into the flat field dict of ``Client.submit`` (``fields()``), takes one back
(``set_fields()``, for presets and history), and names the widget of a protocol field (``widget_for()``)
so a daemon error can outline it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QButtonGroup, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QPlainTextEdit, QPushButton, QRadioButton, QSizePolicy, QSpinBox, QToolButton, QWidget,
)

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".aiff", ".aif", ".opus")
KEYS = ["", "C major", "G major", "D major", "A major", "E major", "F major", "Bb major", "Eb major",
        "A minor", "E minor", "B minor", "D minor", "G minor", "C minor", "F# minor"]
RATES = [("default", None), ("44100 Hz", 44100), ("48000 Hz", 48000), ("96000 Hz", 96000)]
CHANNELS = [("default", None), ("stereo", 2), ("mono", 1)]


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

    def prompt(self) -> str:
        return self.caption.toPlainText().strip()

    def set_prompt(self, text: str) -> None:
        self.caption.setPlainText(text)

    def set_fields(self, f: dict[str, Any]) -> None:
        self.caption.setPlainText(str(f.get("caption", "")))
        if f.get("bars"):
            self.by_bars.setChecked(True)
            self.bars.setValue(int(f["bars"]))
        else:
            self.by_seconds.setChecked(True)
            if f.get("seconds"):
                self.seconds.setValue(float(f["seconds"]))
        self.tempo.setValue(float(f.get("tempo_bpm") or 0.0))
        self.key.setCurrentText(str(f.get("key") or ""))
        self.seed.setValue(int(f["seed"]) if f.get("seed") is not None else -1)

    def widget_for(self, name: str) -> QWidget | None:
        return {"caption": self.caption, "seconds": self.seconds, "frames": self.seconds, "bars": self.bars,
                "tempo_bpm": self.tempo, "key": self.key, "seed": self.seed, "length": self.seconds}.get(name)


class SpeechForm(QWidget):
    """Text, then a saved voice or a reference recording (browse, or drop a file anywhere on the form),
    which "Save as voice…" stores in the daemon for later requests."""

    refresh_voices = Signal()
    save_voice = Signal(str, str)  # reference path, transcript (the panel asks for the name)

    def __init__(self) -> None:
        super().__init__()
        self.setAcceptDrops(True)
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
        self.reference.setPlaceholderText("or a reference recording: browse, or drop a WAV/FLAC/MP3 here")
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Pick a reference recording")
        browse.clicked.connect(self._browse)
        form.addRow("Reference", _file_row(self.reference, browse))
        self.transcript = QLineEdit()
        self.transcript.setPlaceholderText("what the reference recording says")
        self.save_voice_button = QPushButton("Save as voice…")
        self.save_voice_button.setToolTip("Keep this recording and transcript in the daemon as a named voice")
        self.save_voice_button.clicked.connect(
            lambda: self.save_voice.emit(self.reference.text().strip(), self.transcript.text().strip()))
        self.reference.textChanged.connect(self._sync)
        self.transcript.textChanged.connect(self._sync)
        form.addRow("Transcript", _file_row(self.transcript, self.save_voice_button))
        self._sync()

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

    def _sync(self) -> None:
        ok = bool(self.reference.text().strip()) and bool(self.transcript.text().strip())
        self.save_voice_button.setEnabled(ok)
        self.save_voice_button.setToolTip("Keep this recording and transcript in the daemon as a named voice"
                                          if ok else "Needs a reference recording and its transcript")

    @staticmethod
    def dropped_audio(mime: Any) -> str:
        for url in mime.urls() if mime.hasUrls() else []:
            if url.isLocalFile() and url.toLocalFile().lower().endswith(AUDIO_SUFFIXES):
                return url.toLocalFile()
        return ""

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        if self.dropped_audio(event.mimeData()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802
        if self.dropped_audio(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:  # noqa: N802
        path = self.dropped_audio(event.mimeData())
        if path:
            self.use_reference(path)
            event.acceptProposedAction()

    def use_reference(self, path: str) -> None:
        """A reference recording replaces the saved voice choice (one or the other is sent)."""
        self.reference.setText(path)
        self.voice.setCurrentIndex(0)
        self.transcript.setFocus()

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

    def prompt(self) -> str:
        return self.text.toPlainText().strip()

    def set_prompt(self, text: str) -> None:
        self.text.setPlainText(text)

    def set_fields(self, f: dict[str, Any]) -> None:
        self.text.setPlainText(str(f.get("text", "")))
        i = self.voice.findData(f.get("voice")) if f.get("voice") else 0
        self.voice.setCurrentIndex(max(0, i))
        self.reference.setText(str(f.get("reference_audio") or ""))
        self.transcript.setText(str(f.get("reference_text") or ""))
        self.seconds.setValue(float(f.get("seconds") or 0.0))
        self.seed.setValue(int(f["seed"]) if f.get("seed") is not None else -1)

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

    def prompt(self) -> str:
        return self.caption.text().strip()

    def set_prompt(self, text: str) -> None:
        self.caption.setText(text)

    def set_fields(self, f: dict[str, Any]) -> None:
        self.video.setText(str(f.get("video", "")))
        self.in_s.setValue(float(f.get("in_seconds") or 0.0))
        self.out_s.setValue(float(f.get("out_seconds") or 0.0))
        self.caption.setText(str(f.get("caption") or ""))
        self.mode.setCurrentIndex(max(0, self.mode.findData(f.get("mode") or "vision")))
        self.seed.setValue(int(f["seed"]) if f.get("seed") is not None else -1)

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

    def set_fields(self, f: dict[str, Any]) -> None:
        self.folder.setText(str(f.get("folder") or ""))
        self.rate.setCurrentIndex(max(0, self.rate.findData(f.get("sample_rate"))))
        self.channels.setCurrentIndex(max(0, self.channels.findData(f.get("channels"))))

    def widget_for(self, name: str) -> QWidget | None:
        return {"folder": self.folder, "name": self.folder, "sample_rate": self.rate,
                "channels": self.channels}.get(name)




OUTPUT_FIELDS = ("folder", "sample_rate", "channels")
