"""Painted widgets of the panel: the waveform with its playhead, and the job list's cell painters."""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import QMimeData, QModelIndex, QPoint, QPointF, QRectF, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDrag, QPainter, QPainterPath, QPalette, QPen
from PySide6.QtWidgets import QApplication, QSizePolicy, QStyle, QStyledItemDelegate, QStyleOptionViewItem, QWidget

from .audio import Peaks

WAVE_COLOR = QColor("#1e88e5")
PARTIAL_COLOR = QColor("#fb8c00")
PLAYHEAD_COLOR = QColor("#d81b60")


def file_mime(path: str) -> QMimeData:
    """What a drag of a take carries: the WAV as a file URL (DAWs, editors, file managers) and its path."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(path)])
    mime.setText(path)
    return mime


def paint_peaks(painter: QPainter, rect: QRectF, peaks: Peaks | None, color: QColor) -> None:
    """Min/max columns of ``peaks`` across ``rect`` (a filled outline, symmetric around the middle)."""
    if peaks is None or len(peaks) == 0 or rect.width() < 2:
        return
    mid, half = rect.center().y(), rect.height() / 2 * 0.95
    n = len(peaks)
    cols = max(1, int(rect.width()))
    idx = (peaks.mins.size * (i / cols) for i in range(cols))
    top, bottom = [], []
    for i, f in enumerate(idx):
        b = min(n - 1, int(f))
        x = rect.left() + i
        top.append(QPointF(x, mid - float(peaks.maxs[b]) * half))
        bottom.append(QPointF(x, mid - float(peaks.mins[b]) * half))
    path = QPainterPath(top[0])
    for p in top[1:]:
        path.lineTo(p)
    for p in reversed(bottom):
        path.lineTo(p)
    path.closeSubpath()
    painter.setPen(QPen(color, 1))
    painter.setBrush(color)
    painter.drawPath(path)


class WaveformView(QWidget):
    """The selected take: its waveform, a playhead, click to seek, drag out the file.

    ``seek_requested(fraction)`` on a click; a drag that starts here carries the file URL.
    """

    seek_requested = Signal(float)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.peaks: Peaks | None = None
        self.path = ""
        self.partial = False
        self.playhead: float | None = None
        self.placeholder = "Select a finished take to see and hear it"
        self._press: QPoint | None = None
        self.setMinimumHeight(72)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # so Space reaches the panel's play toggle after a click
        self.setToolTip("Click to seek; drag to drop the WAV into a DAW, editor or file manager; Space plays")

    def sizeHint(self) -> QSize:
        return QSize(400, 72)

    def set_peaks(self, peaks: Peaks | None, *, partial: bool = False) -> None:
        self.peaks = peaks
        self.path = peaks.path if peaks is not None else ""
        self.partial = partial
        if peaks is None:
            self.playhead = None
        self.update()

    def set_playhead(self, fraction: float | None) -> None:
        self.playhead = fraction
        self.update()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        r = QRectF(self.rect()).adjusted(0.5, 0.5, -0.5, -0.5)
        pal = self.palette()
        p.fillRect(r, pal.color(QPalette.ColorRole.Base))
        p.setPen(QPen(pal.color(QPalette.ColorRole.Mid), 1))
        p.drawRect(r)
        inner = r.adjusted(4, 4, -4, -4)
        if self.peaks is None:
            p.setPen(pal.color(QPalette.ColorRole.PlaceholderText))
            p.drawText(inner, Qt.AlignmentFlag.AlignCenter, self.placeholder)
            return
        p.setPen(QPen(pal.color(QPalette.ColorRole.Midlight), 1))
        p.drawLine(QPointF(inner.left(), inner.center().y()), QPointF(inner.right(), inner.center().y()))
        paint_peaks(p, inner, self.peaks, PARTIAL_COLOR if self.partial else WAVE_COLOR)
        p.setPen(pal.color(QPalette.ColorRole.Text))
        label = f"{self.peaks.seconds:.2f} s" + ("  · preview, still generating" if self.partial else "")
        p.drawText(inner.adjusted(2, 0, -2, 0), Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignRight, label)
        if self.playhead is not None:
            x = inner.left() + max(0.0, min(1.0, self.playhead)) * inner.width()
            p.setPen(QPen(PLAYHEAD_COLOR, 2))
            p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))

    def fraction_at(self, x: float) -> float:
        inner = QRectF(self.rect()).adjusted(4.5, 4.5, -4.5, -4.5)
        return max(0.0, min(1.0, (x - inner.left()) / max(1.0, inner.width())))

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton and self.peaks is not None:
            self._press = event.position().toPoint()
            self.seek_requested.emit(self.fraction_at(event.position().x()))
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event: Any) -> None:  # noqa: N802
        if self._press is None or not self.path or self.partial:
            return
        if (event.position().toPoint() - self._press).manhattanLength() < QApplication.startDragDistance():
            return
        self._press = None
        drag = QDrag(self)
        drag.setMimeData(self.mime_data())
        drag.exec(Qt.DropAction.CopyAction)

    def mouseReleaseEvent(self, event: Any) -> None:  # noqa: N802
        self._press = None
        super().mouseReleaseEvent(event)

    def mime_data(self) -> QMimeData:
        return file_mime(self.path)


class ProgressDelegate(QStyledItemDelegate):
    """The Progress column as a flat bar with dark text on a light fill: readable on selected rows too
    (the platform style's bar draws highlighted text on the highlight colour there)."""

    FILL = QColor("#90caf9")
    TRACK = QColor("#eceff1")
    BORDER = QColor("#90a4ae")
    TEXT = QColor("#102027")

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        fraction = index.data(Qt.ItemDataRole.UserRole)
        if not isinstance(fraction, (int, float)):
            return super().paint(painter, option, index)
        if option.state & QStyle.StateFlag.State_Selected:
            painter.fillRect(option.rect, option.palette.highlight())
        f = max(0.0, min(1.0, float(fraction)))
        r = QRectF(option.rect).adjusted(3, 4, -3, -4)
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        painter.setPen(QPen(self.BORDER, 1))
        painter.setBrush(self.TRACK)
        painter.drawRoundedRect(r, 3, 3)
        if f > 0:
            fill = QRectF(r.left(), r.top(), r.width() * f, r.height())
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(self.FILL)
            painter.drawRoundedRect(fill, 3, 3)
        painter.setPen(self.TEXT)
        painter.drawText(r, Qt.AlignmentFlag.AlignCenter, f"{int(round(f * 100))} %")
        painter.restore()


class WaveDelegate(QStyledItemDelegate):
    """A small waveform in the job list (the row's peaks: final file, or the growing preview)."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        super().paint(painter, option, index)
        peaks = index.data(Qt.ItemDataRole.UserRole)
        if isinstance(peaks, tuple):
            peaks, partial = peaks
            color = PARTIAL_COLOR if partial else WAVE_COLOR
            if option.state & QStyle.StateFlag.State_Selected:  # blue on the highlight would vanish
                color = option.palette.color(QPalette.ColorRole.HighlightedText)
            painter.save()
            paint_peaks(painter, QRectF(option.rect).adjusted(2, 2, -2, -2), peaks, color)
            painter.restore()
