"""The panel's layout: which widgets it has, where they sit, and which of the panel's methods they call.

:func:`build` fills a :class:`~.panel.Panel` top to bottom; the behaviour lives in the panel
(:mod:`.panel`), its takes (:mod:`.takes`) and its presets and history (:mod:`.presets`).
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView, QFrame, QHBoxLayout, QHeaderView, QLabel, QMenu, QPushButton, QTableView, QTabWidget,
    QToolButton, QVBoxLayout, QWidget,
)

from unimoe_audio.client import tasks

from .forms import MusicForm, OutputBox, ScoreForm, SpeechForm
from .jobs_model import COL_DESC, COL_PROGRESS, COL_STAGE, COL_TAKE, COL_TASK, COL_WAVE, COLUMNS, JobsModel
from .widgets import ProgressDelegate, WaveDelegate, WaveformView

__all__ = ["build", "TABS", "TINY_WARNING", "OFFLINE_HINT", "ERROR_STYLE"]

TABS = ("music", "speech", "score")

TINY_WARNING = ("The built-in tiny test model is serving: every result is noise. Install the real weights "
                "with 'unimoe-audio models pull' and restart the daemon.")
OFFLINE_HINT = "start one with 'unimoe-audio serve' or press Connect"
ERROR_STYLE = "border: 1px solid #c62828;"


def build(panel: Any) -> None:  # the Panel (which imports this module)
    root = QVBoxLayout(panel)
    root.setContentsMargins(10, 10, 10, 10)
    root.setSpacing(8)
    from .continue_actions import build_row as _continue_row

    for part in (_status_row, _forms, _generate_row, _takes_list, _transport, _continue_row, _job_buttons):
        part(panel, root)
    panel._sync_buttons()


def _status_row(panel: Any, root: QVBoxLayout) -> None:
    """The daemon's status line, Connect, and the tiny-model warning."""
    top = QHBoxLayout()
    panel.status_label = QLabel("Connecting to the daemon…")
    panel.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    panel.status_label.setWordWrap(True)
    top.addWidget(panel.status_label, 1)
    panel.connect_button = QPushButton("Connect")
    panel.connect_button.setToolTip("Connect again with a fresh client (starts a daemon when allowed)")
    panel.connect_button.setVisible(False)
    panel.connect_button.clicked.connect(panel.connect_daemon)
    top.addWidget(panel.connect_button)
    root.addLayout(top)

    panel.tiny_warning = QLabel("⚠ " + TINY_WARNING)
    panel.tiny_warning.setWordWrap(True)
    panel.tiny_warning.setStyleSheet("QLabel { background: #fff3cd; color: #664d03; border: 1px solid #ffda6a;"
                                     " border-radius: 4px; padding: 6px; }")
    panel.tiny_warning.setVisible(False)
    root.addWidget(panel.tiny_warning)


def _forms(panel: Any, root: QVBoxLayout) -> None:
    """The task forms as tabs, with the History and Presets menus in the tab bar's corner."""
    panel.tabs = QTabWidget()
    panel.music = MusicForm()
    panel.speech = SpeechForm()
    panel.score = ScoreForm()
    for kind in TABS:  # labels and field hints from the tasks' modules (client/tasks/)
        form, task = getattr(panel, kind), tasks.get(kind)
        panel.tabs.addTab(form, task.label)
        for name, hint in task.form.items():
            w = form.widget_for(name)
            if w is not None and not w.toolTip():
                w.setToolTip(hint)
    panel.speech.refresh_voices.connect(lambda: panel._do_voices.emit())
    panel.speech.save_voice.connect(panel.ask_save_voice)
    corner = QWidget()
    lay = QHBoxLayout(corner)
    lay.setContentsMargins(0, 0, 0, 2)
    lay.setSpacing(2)
    panel.history_button = _menu_button("History", "Prompts you generated with on this tab (kept between sessions)",
                                        panel._fill_history_menu)
    panel.presets_button = _menu_button("Presets", "Saved settings of this tab; 'Save as preset…' keeps the "
                                        "current ones", panel._fill_presets_menu)
    lay.addWidget(panel.history_button)
    lay.addWidget(panel.presets_button)
    panel.tabs.setCornerWidget(corner, Qt.Corner.TopRightCorner)
    root.addWidget(panel.tabs)


def _menu_button(text: str, tip: str, fill: Any) -> QToolButton:
    """A tool button that opens a menu, filled by ``fill`` each time it is about to show."""
    b = QToolButton()
    b.setText(text)
    b.setToolTip(tip)
    b.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
    b.setMenu(QMenu(b))
    b.menu().aboutToShow.connect(fill)
    return b


def _generate_row(panel: Any, root: QVBoxLayout) -> None:
    """Output settings, the error and offline lines, and Generate (Ctrl+Return)."""
    panel.output = OutputBox()
    root.addWidget(panel.output)

    panel.error_label = QLabel()
    panel.error_label.setWordWrap(True)
    panel.error_label.setStyleSheet("QLabel { color: #c62828; }")
    panel.error_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    panel.error_label.setVisible(False)
    root.addWidget(panel.error_label)

    panel.offline_label = QLabel()
    panel.offline_label.setStyleSheet("QLabel { color: #6d4c00; background: #fff8e1; border: 1px solid #ffe082;"
                                      " border-radius: 4px; padding: 4px; }")
    panel.offline_label.setWordWrap(True)
    panel.offline_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    panel.offline_label.setVisible(False)
    root.addWidget(panel.offline_label)

    gen = QHBoxLayout()
    panel.notice_label = QLabel()
    panel.notice_label.setStyleSheet("QLabel { color: palette(mid); }")
    panel.notice_label.setWordWrap(True)
    panel.notice_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    gen.addWidget(panel.notice_label, 1)
    panel.generate_button = QPushButton("Generate")
    panel.generate_button.setDefault(True)
    panel.generate_button.setMinimumWidth(120)
    panel.generate_button.setEnabled(False)
    panel.generate_button.clicked.connect(panel.generate)
    gen.addWidget(panel.generate_button)
    root.addLayout(gen)
    QShortcut(QKeySequence("Ctrl+Return"), panel, activated=panel.generate)


def _takes_list(panel: Any, root: QVBoxLayout) -> None:
    """The takes: one row per job, grouped by request, with progress and a waveform column."""
    line = QFrame()
    line.setFrameShape(QFrame.Shape.HLine)
    line.setFrameShadow(QFrame.Shadow.Sunken)
    root.addWidget(line)

    panel.jobs = JobsModel(panel)
    panel.table = QTableView()
    panel.table.setModel(panel.jobs)
    panel.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    panel.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    panel.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    panel.table.setDragEnabled(True)
    panel.table.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
    panel.table.setDefaultDropAction(Qt.DropAction.CopyAction)
    panel.table.verticalHeader().setVisible(False)
    panel.table.verticalHeader().setDefaultSectionSize(26)
    panel.table.setAlternatingRowColors(True)
    panel.table.setItemDelegateForColumn(COL_PROGRESS, ProgressDelegate(panel.table))
    panel.table.setItemDelegateForColumn(COL_WAVE, WaveDelegate(panel.table))
    header = panel.table.horizontalHeader()
    for col in range(len(COLUMNS)):
        header.setSectionResizeMode(col, QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(COL_DESC, QHeaderView.ResizeMode.Stretch)
    for col, width in ((COL_PROGRESS, 80), (COL_STAGE, 80), (COL_WAVE, 90)):
        header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        header.resizeSection(col, width)
    header.resizeSection(COL_TASK, 60)
    header.moveSection(header.visualIndex(COL_TAKE), 1)  # Task, Take, Description, Wave, State, ...
    header.moveSection(header.visualIndex(COL_WAVE), 3)
    panel.table.setMinimumHeight(140)
    panel.table.selectionModel().selectionChanged.connect(lambda *_: panel._on_selection())
    panel.table.doubleClicked.connect(lambda *_: panel.toggle_play())
    panel.table.installEventFilter(panel)
    root.addWidget(panel.table, 1)


def _transport(panel: Any, root: QVBoxLayout) -> None:
    """The selected take's waveform and transport: play, loop, A/B, keep, regenerate."""
    panel.waveform = WaveformView()
    panel.waveform.seek_requested.connect(panel.seek)
    panel.waveform.installEventFilter(panel)
    root.addWidget(panel.waveform)

    transport = QHBoxLayout()
    panel.play_button = QPushButton("▶ Play")
    panel.play_button.setToolTip("Play or stop the selected take (Space)")
    panel.play_button.clicked.connect(panel.toggle_play)
    panel.loop_button = QPushButton("Loop")
    panel.loop_button.setCheckable(True)
    panel.loop_button.setToolTip("Play the take over and over")
    panel.loop_button.toggled.connect(panel.player.set_loop)
    panel.ab_button = QPushButton("A/B")
    panel.ab_button.setToolTip("Switch to the other take of this request at the same position")
    panel.ab_button.clicked.connect(panel.ab_switch)
    panel.keep_button = QPushButton("Keep")
    panel.keep_button.setCheckable(True)
    panel.keep_button.setToolTip("Mark the take as a keeper (★; kept takes survive Clear finished)")
    panel.keep_button.clicked.connect(lambda on: panel.set_kept(on))
    panel.same_seed_button = QPushButton("Again, same seed")
    panel.same_seed_button.setToolTip("Generate this request again with the seed of this take")
    panel.same_seed_button.clicked.connect(lambda: panel.regenerate(same_seed=True))
    panel.new_seed_button = QPushButton("New take")
    panel.new_seed_button.setToolTip("Generate this request again with a new seed (a new take in its group)")
    panel.new_seed_button.clicked.connect(lambda: panel.regenerate(same_seed=False))
    for b in (panel.play_button, panel.loop_button, panel.ab_button, panel.keep_button):
        transport.addWidget(b)
    transport.addStretch(1)
    transport.addWidget(panel.same_seed_button)
    transport.addWidget(panel.new_seed_button)
    root.addLayout(transport)


def _job_buttons(panel: Any, root: QVBoxLayout) -> None:
    """Cancel, reveal, copy path, clear finished."""
    buttons = QHBoxLayout()
    panel.cancel_button = QPushButton("Cancel")
    panel.cancel_button.clicked.connect(panel.cancel_selected)
    panel.reveal_button = QPushButton("Reveal file")
    panel.reveal_button.clicked.connect(panel.reveal_selected)
    panel.copy_button = QPushButton("Copy path")
    panel.copy_button.clicked.connect(panel.copy_selected_path)
    panel.clear_button = QPushButton("Clear finished")
    panel.clear_button.setToolTip("Remove finished takes from the list (kept takes stay)")
    panel.clear_button.clicked.connect(panel.jobs.remove_finished)
    for b in (panel.cancel_button, panel.reveal_button, panel.copy_button):
        buttons.addWidget(b)
    buttons.addStretch(1)
    buttons.addWidget(panel.clear_button)
    root.addLayout(buttons)
