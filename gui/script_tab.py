"""The panel's Script tab: open a subtitle file or a timecoded script, pick voices, see the cues, voice them
all into a spotted dialogue stem, audition one, regenerate one.

The run is the same :class:`~unimoe_audio.client.voiceover.Voiceover` the CLI and the Blender add-on
drive; here it runs on its own thread (:class:`ScriptRunner`) with its own client, and the table shows
each cue's state and progress from its signals. The hook into the panel is one call,
:func:`add_to_panel` (a tab, the panel's saved-voice list, and its player for auditions).
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel,
    QLineEdit, QProgressBar, QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from unimoe_audio.client.settings import Settings
from unimoe_audio.client.voiceover import (
    Script, ScriptError, Voiceover, VoiceoverError, VoiceoverOptions, output_paths, parse_voice_map, read_script,
)
from unimoe_audio.client.voiceover.fit import DEFAULT_MAX_STRETCH, OVERFLOW_MODES, STRETCH_LIMIT
from unimoe_audio.client.voiceover.report import load_report

__all__ = ["ScriptTab", "ScriptRunner", "add_to_panel", "COLUMNS"]

COLUMNS = ("#", "Start", "End", "Speaker", "Text", "State", "Stretch")
SUBTITLE_FILTER = "Subtitles and scripts (*.srt *.vtt *.ass *.ssa *.txt);;All files (*)"


class ScriptRunner(QObject):
    """Runs one voiceover at a time on its thread: plan, submit, follow, fit, assemble."""

    cue_update = Signal(int, float, str)  # cue index, fraction, stage
    note = Signal(str)
    progress = Signal(float)
    finished = Signal(object)  # Report
    failed = Signal(str)

    def __init__(self, settings: Settings):
        super().__init__()
        self.settings = settings
        self._cancel = threading.Event()

    def cancel(self) -> None:  # from the UI thread: the loop sees it between polls
        self._cancel.set()

    @Slot(object, object, str, object)
    def run(self, script: Script, options: VoiceoverOptions, out: str, only: Any) -> None:
        from unimoe_audio.client.client import Client, ClientError

        self._cancel.clear()
        try:
            client = Client(self.settings, auto_start=False)
        except ClientError as exc:
            self.failed.emit(str(exc))
            return
        vo: Voiceover | None = None
        try:
            vo = Voiceover(client, script, options, out, only=only, on_note=self.note.emit,
                           on_update=lambda i, f, s: (self.cue_update.emit(i, f, s),
                                                      self.progress.emit(vo.progress() if vo else 0.0)))
            vo.plan()
            vo.submit()
            while vo.poll(0.2):
                if self._cancel.is_set():
                    vo.cancel()
                    break
            self.finished.emit(vo.finish())
        except (VoiceoverError, ClientError, OSError, ValueError) as exc:
            if vo is not None and vo.active:
                vo.cancel()
            self.failed.emit(str(exc))
        finally:
            client.close()


class ScriptTab(QWidget):
    """Open a script, set the voices, Voice all / Regenerate / Audition / Cancel."""

    _do_run = Signal(object, object, str, object)
    run_finished = Signal(object)  # Report (for scripts and tests)

    def __init__(self, settings: Settings, player: Any = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.settings = settings
        self.player = player
        self.script: Script | None = None
        self.report: Any = None
        self.running = False
        self._build()
        self._thread = QThread(self)
        self._thread.setObjectName("unimoe-script")
        self.runner = ScriptRunner(settings)
        self.runner.moveToThread(self._thread)
        self._do_run.connect(self.runner.run)
        self.runner.cue_update.connect(self._on_cue)
        self.runner.note.connect(self._on_note_slot)
        self.runner.progress.connect(self._on_progress)  # a bound slot: queued onto this (the UI) thread
        self.runner.finished.connect(self._on_finished)
        self.runner.failed.connect(self._on_failed)
        self._thread.start()

    # -- layout -------------------------------------------------------------------------------------
    def _build(self) -> None:
        root = QVBoxLayout(self)
        row = QHBoxLayout()
        self.open_button = QPushButton("Open…")
        self.open_button.setToolTip("An SRT, WebVTT or ASS file, or a plain script: START [--> END] [NAME:] text")
        self.open_button.clicked.connect(self._browse)
        self.path_label = QLabel("no script")
        self.path_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        row.addWidget(self.open_button)
        row.addWidget(self.path_label, 1)
        root.addLayout(row)

        form = QFormLayout()
        self.voice = QComboBox()
        self.voice.setEditable(True)
        self.voice.setToolTip("The saved voice of lines without a speaker")
        form.addRow("Voice", self.voice)
        self.voice_map = QLineEdit()
        self.voice_map.setPlaceholderText("ALICE=alice, BOB=narrator (speakers and ASS styles to saved voices)")
        form.addRow("Speakers", self.voice_map)
        self.output = QLineEdit()
        self.output.setPlaceholderText("dialogue stem .wav (or .otio / .mlt); default beside the script")
        form.addRow("Output", self.output)
        fit_row = QHBoxLayout()
        self.max_stretch = QDoubleSpinBox()
        self.max_stretch.setRange(1.0, STRETCH_LIMIT)
        self.max_stretch.setSingleStep(0.05)
        self.max_stretch.setValue(DEFAULT_MAX_STRETCH)
        self.max_stretch.setToolTip("Most pitch-preserving speed-up to fit a cue into its slot")
        self.overflow = QComboBox()
        self.overflow.addItems(list(OVERFLOW_MODES))
        self.overflow.setToolTip("A cue still too long: trim it at its end, shift later cues, or only report it")
        fit_row.addWidget(QLabel("Max stretch"))
        fit_row.addWidget(self.max_stretch)
        fit_row.addWidget(QLabel("Overflow"))
        fit_row.addWidget(self.overflow)
        fit_row.addStretch(1)
        form.addRow("Fit", fit_row)
        root.addLayout(form)

        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(COLUMNS.index("Text"), QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._sync)
        self.table.doubleClicked.connect(lambda _: self.audition())
        root.addWidget(self.table, 1)

        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)
        root.addWidget(self.progress)
        self.notes = QLabel()
        self.notes.setWordWrap(True)
        self.notes.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.notes)

        buttons = QHBoxLayout()
        self.voice_all_button = QPushButton("Voice all")
        self.voice_all_button.clicked.connect(lambda: self.voice_all())
        self.regenerate_button = QPushButton("Regenerate selected")
        self.regenerate_button.setToolTip("New takes (new seeds) of the selected cues; the others stay")
        self.regenerate_button.clicked.connect(lambda: self.regenerate())
        self.audition_button = QPushButton("Audition")
        self.audition_button.setToolTip("Play the selected cue's file (double-click a row)")
        self.audition_button.clicked.connect(lambda: self.audition())
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the remaining cues; the finished ones go into the stem")
        self.cancel_button.clicked.connect(self.runner_cancel)
        for b in (self.voice_all_button, self.regenerate_button, self.audition_button, self.cancel_button):
            buttons.addWidget(b)
        root.addLayout(buttons)
        self._sync()

    # -- state --------------------------------------------------------------------------------------
    def set_voices(self, voices: list[Any]) -> None:
        current = self.voice.currentText()
        self.voice.clear()
        self.voice.addItems([v.name for v in voices])
        if current:
            self.voice.setCurrentText(current)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a subtitle file or script", "", SUBTITLE_FILTER)
        if path:
            self.open_script(path)

    def open_script(self, path: str | Path) -> bool:
        try:
            self.script = read_script(path)
        except ScriptError as exc:
            self._on_note(str(exc), error=True)
            return False
        self.path_label.setText(str(self.script.path))
        if not self.output.text().strip():
            self.output.setText(str(self.script.path.with_name(f"{self.script.path.stem}-voiceover.wav")))
        self.report = load_report(output_paths(self.output_path())["report"])
        self._fill()
        skipped = ", ".join(str(s["index"]) for s in self.script.skipped)
        self._on_note(f"{len(self.script.cues)} cues" + (f"; skipped (empty): {skipped}" if skipped else "")
                      + "".join(f"\n{w}" for w in self.script.warnings))
        return True

    def output_path(self) -> str:
        return self.output.text().strip()

    def _fill(self) -> None:
        assert self.script is not None
        self.table.setRowCount(len(self.script.cues))
        recs = {c.index: c for c in self.report.cues} if self.report is not None else {}
        for row, cue in enumerate(self.script.cues):
            rec = recs.get(cue.index)
            values = (str(cue.index), f"{float(cue.start):.3f}", "" if cue.end is None else f"{float(cue.end):.3f}",
                      cue.speaker or cue.style or "", cue.text, rec.state if rec else "",
                      f"x{rec.stretch:.3f}" if rec and rec.state == "done" else "")
            for col, v in enumerate(values):
                item = QTableWidgetItem(v)
                if col == 0:
                    item.setData(Qt.ItemDataRole.UserRole, cue.index)
                self.table.setItem(row, col, item)
        self._sync()

    def _row_of(self, index: int) -> int:
        for row in range(self.table.rowCount()):
            if self.table.item(row, 0).data(Qt.ItemDataRole.UserRole) == index:
                return row
        return -1

    def selected_cues(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectedIndexes()})
        return [self.table.item(r, 0).data(Qt.ItemDataRole.UserRole) for r in rows]

    def _sync(self) -> None:
        have = self.script is not None
        sel = bool(self.selected_cues()) if have else False
        done = self.report is not None and any(
            c.state == "done" and c.index in self.selected_cues() for c in self.report.cues) if sel else False
        self.voice_all_button.setEnabled(have and not self.running)
        self.regenerate_button.setEnabled(sel and not self.running and self.report is not None)
        self.audition_button.setEnabled(done and self.player is not None)
        self.cancel_button.setEnabled(self.running)
        self.open_button.setEnabled(not self.running)

    def options(self) -> VoiceoverOptions:
        return VoiceoverOptions(voice=self.voice.currentText().strip() or None,
                                voice_map=parse_voice_map([self.voice_map.text()] if self.voice_map.text().strip() else []),
                                max_stretch=round(self.max_stretch.value(), 3), overflow=self.overflow.currentText())

    # -- actions ------------------------------------------------------------------------------------
    def voice_all(self, only: set[int] | None = None) -> bool:
        if self.script is None or self.running:
            return False
        try:
            opts = self.options()
            opts.check()
        except VoiceoverError as exc:
            self._on_note(str(exc), error=True)
            return False
        self.running = True
        self.progress.setValue(0)
        for cue in self.script.cues:
            if only is None or cue.index in only:
                self._set(cue.index, 5, "queued")
        self._sync()
        self._do_run.emit(self.script, opts, self.output_path(), only)
        return True

    def regenerate(self, indices: list[int] | None = None) -> bool:
        chosen = set(indices if indices is not None else self.selected_cues())
        return bool(chosen) and self.voice_all(only=chosen)

    def audition(self, index: int | None = None) -> str | None:
        """Play a cue's file (the selected one by default); returns the path played."""
        if index is None:
            sel = self.selected_cues()
            index = sel[0] if sel else None
        rec = self.report.cue(index) if (self.report is not None and index is not None) else None
        if rec is None or rec.state != "done" or not rec.file or self.player is None:
            return None
        self.player.load(rec.file)
        self.player.play()
        return rec.file

    def runner_cancel(self) -> None:
        self.runner.cancel()

    def _set(self, index: int, col: int, text: str) -> None:
        row = self._row_of(index)
        if row >= 0:
            self.table.item(row, col).setText(text)

    @Slot(float)
    def _on_progress(self, fraction: float) -> None:
        self.progress.setValue(int(fraction * 1000))

    @Slot(int, float, str)
    def _on_cue(self, index: int, fraction: float, stage: str) -> None:
        self._set(index, 5, stage if stage in ("done", "failed", "cancelled", "queued")
                  else f"{stage} {int(fraction * 100)}%")

    @Slot(str)
    def _on_note_slot(self, text: str) -> None:
        self._on_note(text)

    def _on_note(self, text: str, error: bool = False) -> None:
        self.notes.setStyleSheet("QLabel { color: #c62828; }" if error else "")
        self.notes.setText(text)

    @Slot(object)
    def _on_finished(self, report: Any) -> None:
        self.running = False
        self.report = report
        if self.script is not None:
            self._fill()
        self.progress.setValue(1000 if report.state == "done" else self.progress.value())
        over = f", {len(report.overflows)} over their slot" if report.overflows else ""
        self._on_note(f"{report.output} ({report.length_seconds:.2f} s, "
                      f"{sum(c.state == 'done' for c in report.cues)}/{len(report.cues)} cues{over})")
        self._sync()
        self.run_finished.emit(report)

    @Slot(str)
    def _on_failed(self, message: str) -> None:
        self.running = False
        self._on_note(message, error=True)
        self._sync()
        self.run_finished.emit(None)

    def close_tab(self, wait_s: float = 10.0) -> None:
        self.runner.cancel()
        self._thread.quit()
        self._thread.wait(int(wait_s * 1000))


def add_to_panel(panel: Any) -> ScriptTab:
    """The panel's hook: a Script tab after its task tabs, fed with the saved voices and its player. The
    panel's Generate row, output box and History/Presets menus belong to the task tabs: hidden here."""
    tab = ScriptTab(panel.settings, player=getattr(panel, "player", None))
    panel.tabs.addTab(tab, "Script")
    panel.backend.voices_changed.connect(tab.set_voices)
    task_only = [w for w in (getattr(panel, n, None) for n in ("output", "generate_button", "history_button",
                                                                "presets_button")) if w is not None]

    def on_tab(_: int) -> None:
        here = panel.tabs.currentWidget() is tab
        for w in task_only:
            w.setVisible(not here)

    panel.tabs.currentChanged.connect(on_tab)
    return tab
