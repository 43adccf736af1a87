"""The panel's job list: one row per take, updated from the client's JobUpdate values (UI thread only).

Takes of one request (same task and fields, any seed) form a group: a new take is listed right under its
group's takes and numbered, so variations sit together for A/B listening.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QAbstractTableModel, QMimeData, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from unimoe_audio.client import tasks

from .audio import Peaks
from .widgets import file_mime

FINAL_STATES = ("done", "failed", "cancelled")

# Model columns keep their indices (scripts and tests read File at 6); the view shows Take and Wave earlier.
COLUMNS = ("Task", "Description", "State", "Progress", "Stage", "ETA", "File", "Take", "Wave")
COL_TASK, COL_DESC, COL_STATE, COL_PROGRESS, COL_STAGE, COL_ETA, COL_FILE, COL_TAKE, COL_WAVE = range(len(COLUMNS))


def group_key(kind: str, fields: dict[str, Any]) -> str:
    """Takes of the same request share this key: the task and its fields without the seed."""
    rest = {k: v for k, v in fields.items() if k != "seed"}
    return kind + ":" + json.dumps(rest, sort_keys=True, default=str)


def flat_fields(request: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(kind, flat fields for ``Client.submit``) from a SubmitRequest as the daemon stored it, so a take of
    an earlier session can be regenerated and grouped like one submitted here."""
    if not request:
        return "", {}
    spec = dict(request.get("spec") or {})
    task = spec.pop("task", "")
    known = tasks.find(task)
    kind = known.kind if known is not None else task
    fields: dict[str, Any] = {}
    length = spec.pop("length", None) or {}
    sampling = spec.pop("sampling", None) or {}
    defaults = {name: f.default for name, f in known.spec.model_fields.items()} if known is not None else {}
    for k, v in spec.items():
        # a field left at its default (continue's loop/new_only: false) is one the form would not send either
        if v not in (None, "", [], {}) and not (k in defaults and v is defaults[k] and isinstance(v, bool)):
            fields[k] = v
    if task == "music" and "bars" in fields and fields.get("tempo_bpm"):
        pass  # the client turns bars at a tempo into the length again
    else:
        fields.update({k: v for k, v in length.items() if v is not None})  # seconds, or frames + fps ...
    if sampling.get("seed") is not None:
        fields["seed"] = sampling["seed"]
    out = request.get("output") or {}
    if out.get("folder"):
        fields["folder"] = out["folder"]
    for k in ("sample_rate", "channels"):
        if out.get(k):
            fields[k] = out[k]
    return kind, fields



def task_label(task: str) -> str:
    """The task's label from its module (client/tasks/), e.g. ``Score`` for video_score."""
    known = tasks.find(task)
    return known.label if known is not None and known.label else task
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
    kind: str = ""  # music | speech | score (the client's names)
    fields: dict[str, Any] = field(default_factory=dict)  # what was submitted (flat client fields)
    group: str = ""
    take: int = 1
    seed: int | None = None
    partial_path: str = ""  # the latest preview of a running job
    peaks: Peaks | None = None  # of path, or of partial_path while running
    kept: bool = False
    running_since: float | None = None  # monotonic time the row was first seen running (for the ETA)

    @property
    def eta(self) -> float | None:
        """Seconds left: the daemon's estimate, else one from this row's own pace once it has any progress
        (the daemon gives none until its first steps are timed)."""
        if self.final:
            return None
        if self.eta_s is not None:
            return self.eta_s
        if self.running_since is not None and 0.0 < self.fraction < 1.0:
            elapsed = time.monotonic() - self.running_since
            return elapsed / self.fraction * (1.0 - self.fraction)
        return None

    @property
    def audio_path(self) -> str:
        """What can be played now: the result, or the growing preview."""
        return self.path or ("" if self.final else self.partial_path)

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
                return task_label(row.task)
            if col == COL_DESC:
                return row.description
            if col == COL_STATE:
                return row.state
            if col == COL_PROGRESS:
                return f"{int(round(row.fraction * 100))} %"
            if col == COL_STAGE:
                return row.error if row.state == "failed" and row.error else row.stage
            if col == COL_ETA:
                return format_eta(row.eta)
            if col == COL_FILE:
                return row.path.rsplit("/", 1)[-1] if row.path else ""
            if col == COL_TAKE:
                return ("★ " if row.kept else "") + f"#{row.take}"
        if role == Qt.ItemDataRole.UserRole:
            if col == COL_WAVE:
                return (row.peaks, not row.path) if row.peaks is not None else None
            return row.fraction if col == COL_PROGRESS else row.job_id
        if role == Qt.ItemDataRole.ToolTipRole:
            if col == COL_FILE and row.path:
                return row.path
            if col == COL_TAKE:
                seed = f", seed {row.seed}" if row.seed is not None else ""
                return f"take {row.take} of this request{seed}" + (" (kept)" if row.kept else "")
            if row.error:
                return row.error
            return f"job {row.job_id}"
        if role == Qt.ItemDataRole.ForegroundRole and col == COL_STATE:
            color = _STATE_COLOR.get(row.state)
            return QBrush(QColor(color)) if color else None
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        f = super().flags(index)
        row = self.at(index.row()) if index.isValid() else None
        if row is not None and row.path:
            f |= Qt.ItemFlag.ItemIsDragEnabled
        return f

    def mimeTypes(self) -> list[str]:
        return ["text/uri-list", "text/plain"]

    def mimeData(self, indexes: list[QModelIndex]) -> QMimeData:
        """A dragged take is its WAV as a file URL (what DAWs, editors and file managers accept)."""
        paths = []
        for i in indexes:
            row = self.at(i.row())
            if row is not None and row.path and row.path not in paths:
                paths.append(row.path)
        mime = file_mime(paths[0]) if paths else QMimeData()
        if len(paths) > 1:
            from PySide6.QtCore import QUrl

            mime.setUrls([QUrl.fromLocalFile(p) for p in paths])
        return mime

    def supportedDragActions(self) -> Qt.DropAction:
        return Qt.DropAction.CopyAction

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

    def add(self, row: JobRow) -> int:
        """Insert a take: under the takes of its group (numbered after them), else first. Returns its row."""
        if self.row_of(row.job_id) >= 0:
            return self.row_of(row.job_id)
        same = [i for i, r in enumerate(self._rows) if row.group and r.group == row.group]
        if same:
            row.take = max(self._rows[i].take for i in same) + 1
            at = same[-1] + 1
        else:
            at = 0
        self.beginInsertRows(QModelIndex(), at, at)
        self._rows.insert(at, row)
        self.endInsertRows()
        return at

    def takes(self, group: str) -> list[JobRow]:
        return [r for r in self._rows if group and r.group == group]

    def changed(self, job_id: str) -> None:
        i = self.row_of(job_id)
        if i >= 0:
            self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))

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
        if row.state == "running" and row.running_since is None:
            row.running_since = time.monotonic()
        if row.final:
            row.stage = row.state  # "done" stays "done", whatever step a late or resynced update names
        self.dataChanged.emit(self.index(i, 0), self.index(i, len(COLUMNS) - 1))
        return row

    def remove_finished(self) -> None:
        keep = [r for r in self._rows if not r.final or r.kept]
        if len(keep) != len(self._rows):
            self.beginResetModel()
            self._rows = keep
            self.endResetModel()
