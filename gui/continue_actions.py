"""The panel's "Continue this take", "Extend to..." and "Make loop": music that carries on the selected
take, or an audio file dropped on the panel (model/continuation.py does the work in the daemon).

The source is the last file dropped on the panel (until another take is selected), else the selected
take's file. The caption is the take's own (a music take), else the Music tab's. Each action submits an
ordinary music request with ``continue_audio``: the result is a new take in the list.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QHBoxLayout, QInputDialog, QMenu, QPushButton

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".mp3", ".ogg", ".m4a", ".opus", ".wv")
DEFAULT_CAPTION = "continue the music"


class ContinueMixin:
    """Mixed into the Panel (it provides jobs, table, music, submit, show_error, _on_notice, online)."""

    dropped_file: str | None = None

    # -- what to continue -------------------------------------------------------------------------------
    def continue_source(self) -> str | None:
        if self.dropped_file:
            return self.dropped_file
        row = self.selected_row()
        return row.path if row is not None and row.path else None

    def continue_caption(self) -> str:
        row = self.selected_row()
        if not self.dropped_file and row is not None and row.kind == "music" and row.fields.get("caption"):
            return str(row.fields["caption"])
        text = self.music.caption.toPlainText().strip()
        return text or DEFAULT_CAPTION

    def _continue(self, label: str, extra: dict[str, Any]) -> bool:
        src = self.continue_source()
        if src is None:
            self.show_error("music", "select a finished take or drop an audio file on the panel first", None)
            return False
        if not self.online:
            self.show_error("music", "Not sent: no daemon is connected.", None)
            return False
        fields: dict[str, Any] = {"caption": self.continue_caption(), "continue_audio": src, **extra}
        fields.update(self.output.fields())
        self.submit("music", fields, f"{label}: {Path(src).name}")
        return True

    # -- the three actions (the buttons ask, these do) ----------------------------------------------------
    def continue_take(self, seconds: float = 10.0) -> bool:
        """The source followed by ``seconds`` of new music."""
        return self._continue(f"continue +{seconds:g} s", {"seconds": float(seconds)})

    def extend_to(self, total_seconds: float) -> bool:
        """The source extended so the whole take lasts ``total_seconds``."""
        return self._continue(f"extend to {total_seconds:g} s", {"to_seconds": float(total_seconds)})

    def make_loop(self, bars: int = 4, tempo_bpm: float | None = None) -> bool:
        """A seamless loop of ``bars`` at the Music tab's tempo (120 BPM when none is set), starting with the source."""
        tempo = tempo_bpm or (float(self.music.tempo.value()) or 120.0)
        return self._continue(f"loop {bars} bars", {"loop": True, "bars": int(bars), "tempo_bpm": tempo})

    # -- UI ----------------------------------------------------------------------------------------------
    def ask_continue(self) -> None:
        secs, ok = QInputDialog.getDouble(self, "Continue this take", "Seconds of new music:", 10.0, 0.5, 600.0, 2)
        if ok:
            self.continue_take(secs)

    def ask_extend(self) -> None:
        secs, ok = QInputDialog.getDouble(self, "Extend to…", "Length of the whole take (seconds):", 30.0, 1.0,
                                          600.0, 2)
        if ok:
            self.extend_to(secs)

    def ask_loop(self) -> None:
        bars, ok = QInputDialog.getInt(self, "Make loop", "Bars:", 4, 1, 256)
        if ok:
            self.make_loop(bars)

    def continue_menu(self) -> QMenu:
        menu = QMenu(self)
        for text, slot in (("Continue this take…", self.ask_continue), ("Extend to…", self.ask_extend),
                           ("Make loop…", self.ask_loop)):
            menu.addAction(text, slot)
        return menu

    def _sync_continue_buttons(self) -> None:
        ok = self.continue_source() is not None
        for b in (self.continue_button, self.extend_button, self.loop_make_button):
            b.setEnabled(ok)

    # -- dropped files -------------------------------------------------------------------------------------
    def accept_drop(self, paths: list[str]) -> bool:
        audio = [p for p in paths if p.lower().endswith(AUDIO_SUFFIXES) and Path(p).is_file()]
        if not audio:
            return False
        self.dropped_file = audio[0]
        self._on_notice(f"dropped {Path(audio[0]).name}: Continue, Extend to… and Make loop use it")
        self._sync_continue_buttons()
        return True

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        paths = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if self.accept_drop(paths):
            event.acceptProposedAction()


def build_row(panel: Any, root: Any) -> None:
    """The three buttons under the transport, and the same actions on the takes' context menu."""
    row = QHBoxLayout()
    panel.continue_button = QPushButton("Continue this take…")
    panel.continue_button.setToolTip("New music after the selected take (or a dropped file), as its continuation")
    panel.continue_button.clicked.connect(panel.ask_continue)
    panel.extend_button = QPushButton("Extend to…")
    panel.extend_button.setToolTip("The take (or dropped file) continued to a total length")
    panel.extend_button.clicked.connect(panel.ask_extend)
    panel.loop_make_button = QPushButton("Make loop…")
    panel.loop_make_button.setToolTip("A seamless loop of N bars starting with the take (or dropped file)")
    panel.loop_make_button.clicked.connect(panel.ask_loop)
    for b in (panel.continue_button, panel.extend_button, panel.loop_make_button):
        b.setEnabled(False)
        row.addWidget(b)
    row.addStretch(1)
    root.addLayout(row)
    panel.setAcceptDrops(True)
    from PySide6.QtCore import Qt

    panel.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    panel.table.customContextMenuRequested.connect(
        lambda pos: panel.continue_menu().exec(panel.table.viewport().mapToGlobal(pos)))
