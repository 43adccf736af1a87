"""The panel's job list: one row per job, updated from the client's JobUpdate values (UI thread only)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

FINAL_STATES = ("done", "failed", "cancelled")

COLUMNS = ("Task", "Description", "State", "Progress", "Stage", "ETA", "File")
COL_TASK, COL_DESC, COL_STATE, COL_PROGRESS, COL_STAGE, COL_ETA, COL_FILE = range(len(COLUMNS))

_TASK_LABEL = {"music": "Music", "speech": "Speech", "video_score": "Score", "score": "Score"}
_STATE_COLOR = {"done": "#2e7d32", "failed": "#c62828", "cancelled": "#757575", "running": "#1565c0",
                "queued": "#6d4c41"}


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}:{s:02d}"
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


@dataclass
class JobRow:
    job_id: str
    task: str
    description: str = ""
    state: str = "queued"
    fraction: float = 0.0
    stage: str = ""
    eta_s: float | None = None
    path: str = ""
    seconds: float | None = None
    error: str = ""
    error_field: str | None = None
    created: float = field(default_factory=time.time)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


class JobsModel(QAbstractTableModel):
    """Rows in submission order (newest first). ``apply(job_id, **values)`` updates a row."""

    def __init__(self, parent: Any = None):
        super().__init__(parent)
        self._rows: list[JobRow] = []

    # -- Qt model ------------------------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: QModelIndex | QPersistentModelIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or index.row() >= len(self._rows):
            return None
        row = self._rows[index.row()]
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            if col == COL_TASK:
                return _TASK_LABEL.get(row.task, row.task)
            if col == COL_DESC:
                return row.description
            if col == COL_STATE:
                return row.state
            if col == COL_PROGRESS:
                return f"{int(round(row.fraction * 100))} %"
            if col == COL_STAGE:
                return row.error if row.state == "failed" and row.error else row.stage
            if col == COL_ETA:
                return "" if row.final else format_eta(row.eta_s)
            if col == COL_FILE:
                return row.path.rsplit("/", 1)[-1] if row.path else ""
        if role == Qt.ItemDataRole.UserRole:
            return row.fraction if col == COL_PROGRESS else row.job_id
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_FILE and row.path:
                return row.path
            if row.error:
                return row.error
            return f"job {row.job_id}"
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATE:
            color = _STATE_COLOR.get(row.state)
            return QBrush(QColor(color)) if color else None
        return None

    # -- rows ------------------------------------------------------------------------------------------
    def rows(self) -> list[JobRow]:
        return list(self._rows)

    def row_of(self, job_id: str) -> int:
        for i, r in enumerate(self._rows):
            if r.job_id == job_id:
                return i
        return -1

    def get(self, job_id: str) -> JobRow | None:
        i = self.row_of(job_id)
        return self._rows[i] if i >= 0 else None

    def at(self, row: int) -> JobRow | None:
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def add(self, row: JobRow) -> None:
        if self.row_of(row.job_id) >= 0:
            return
        self.beginInsertRows(QModelIndex(), 0, 0)
        self._rows.insert(0, row)
        self.endInsertRows()

    def apply(self, job_id: str, **values: Any) -> JobRow | None:
        """Update a row's fields. A finished row keeps its final state (late events cannot revive it)."""
        i = self.row_of(job_id)
        if i < 0:
            return None
        row = self._rows[i]
        if row.final and values.get("state") not in (None, row.state) and values.get("state") not in FINAL_STATES:
            return row
        for k, v in values.items():
            if hasattr(row, k):
                setattr(row, k, v)
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
        return row

    def remove_finished(self) -> None:
        keep = [r for r in self._rows if not r.final]
        if len(keep) != len(self._rows):
            self.beginResetModel()
            self._rows = keep
            self.endResetModel()
