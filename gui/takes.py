"""The panel's takes: following jobs into the list, previews and waveforms, selection, playback, A/B,
keep, another take, and the per-take actions (cancel, copy path, reveal).

A mixin of :class:`~.panel.Panel`: it uses the panel's widgets (built by :mod:`.panel_layout`), its
job list model and its :class:`~.watcher.JobWatcher`.
"""
from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication

from .audio import read_peaks
from .jobs_model import JobRow
from .panel_layout import OFFLINE_HINT

__all__ = ["TakesMixin", "reveal"]


class TakesMixin:
    """Takes: one row per job of the panel's list."""

    # -- following jobs ------------------------------------------------------------------------------
    def watch(self, job_id: str) -> None:
        """Follow a job into the list (on the watcher's thread; a job already followed is left as is)."""
        client = self.backend.client
        if client is not None:
            self._do_watch.emit(client, job_id)

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
        self.dropped_file = None  # a take chosen after a drop is what Continue / Extend / Make loop use
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
        if hasattr(self, "continue_button"):
            self._sync_continue_buttons()

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

