"""The panel's presets and history (kept by :class:`~.store.PanelStore`), and saving a voice.

A mixin of :class:`~.panel.Panel`: it fills the History and Presets menus of the form tabs.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QInputDialog

from .forms import OUTPUT_FIELDS, FormError

__all__ = ["PresetsMixin"]


class PresetsMixin:
    """History of prompts per tab, saved presets, and Save as voice."""

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
