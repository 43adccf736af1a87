"""Audio for the panel: waveform peaks read from a WAV (soundfile) and a player (QtMultimedia).

Peaks are min/max pairs per horizontal bucket, read block by block so a long 24-bit stereo take never sits
in memory whole. The player wraps QMediaPlayer with a loop toggle and a position as a fraction, which is
what the waveform's playhead and click-to-seek speak.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, QUrl, Signal

BUCKETS = 600


@dataclass
class Peaks:
    """``mins``/``maxs``: one pair per bucket, in -1..1 (channels mixed to their extremes)."""

    path: str
    mins: np.ndarray
    maxs: np.ndarray
    seconds: float
    sample_rate: int

    def __len__(self) -> int:
        return len(self.mins)


def read_peaks(path: str | Path, buckets: int = BUCKETS) -> Peaks:
    """Min/max per bucket of a sound file. Raises OSError/RuntimeError (soundfile) for unreadable files."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        frames, rate = f.frames, f.samplerate
        n = max(1, min(buckets, frames))
        edges = np.linspace(0, frames, n + 1).astype(np.int64)
        mins = np.zeros(n, dtype=np.float32)
        maxs = np.zeros(n, dtype=np.float32)
        block = max(1 << 16, int(edges[1] - edges[0]) if n > 0 else 1)
        pos = 0
        for data in f.blocks(blocksize=block, dtype="float32", always_2d=True):
            lo_all, hi_all = data.min(axis=1), data.max(axis=1)
            start, stop = pos, pos + len(data)
            first = int(np.searchsorted(edges, start, side="right")) - 1
            last = int(np.searchsorted(edges, stop - 1, side="right")) - 1
            for b in range(max(0, first), min(n, last + 1)):
                a, z = max(edges[b], start) - start, min(edges[b + 1], stop) - start
                if z > a:
                    lo, hi = float(lo_all[a:z].min()), float(hi_all[a:z].max())
                    mins[b] = min(mins[b], lo)
                    maxs[b] = max(maxs[b], hi)
            pos = stop
    return Peaks(str(path), np.clip(mins, -1, 1), np.clip(maxs, -1, 1), frames / float(rate or 1), int(rate))


class Player(QObject):
    """One QMediaPlayer for the panel. ``fraction_changed`` drives the playhead; ``state_changed`` says
    playing (True) or not. Works without an audio device (the position still advances)."""

    fraction_changed = Signal(float)
    state_changed = Signal(bool)
    error = Signal(str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        from PySide6.QtMultimedia import QAudioOutput, QMediaPlayer

        self._QMediaPlayer = QMediaPlayer
        self.player = QMediaPlayer(self)
        self.output = QAudioOutput(self)
        self.player.setAudioOutput(self.output)
        self.path = ""
        self._loop = False
        self._pending_seek: float | None = None
        self.player.positionChanged.connect(self._on_position)
        self.player.playbackStateChanged.connect(lambda s: self.state_changed.emit(self.is_playing()))
        self.player.durationChanged.connect(self._on_duration)
        self.player.errorOccurred.connect(lambda e, msg: self.error.emit(msg or str(e)))

    # -- source ---------------------------------------------------------------------------------------
    def load(self, path: str, *, keep_position: bool = False) -> None:
        """Play ``path`` next. ``keep_position``: continue at the same fraction (A/B, growing previews)."""
        if path == self.path:
            return
        fraction = self.fraction() if keep_position else 0.0
        playing = self.is_playing()
        self.path = path
        self.player.setSource(QUrl.fromLocalFile(path) if path else QUrl())
        self._pending_seek = fraction if fraction > 0 else None
        if playing and path:
            self.player.play()

    # -- transport ------------------------------------------------------------------------------------
    def is_playing(self) -> bool:
        return self.player.playbackState() == self._QMediaPlayer.PlaybackState.PlayingState

    def play(self) -> None:
        if self.path:
            self.player.play()

    def stop(self) -> None:
        self.player.stop()

    def toggle(self) -> bool:
        """Play or stop; returns whether it now plays."""
        if self.is_playing():
            self.stop()
            return False
        self.play()
        return bool(self.path)

    def set_loop(self, on: bool) -> None:
        self._loop = on
        self.player.setLoops(self._QMediaPlayer.Loops.Infinite if on else 1)

    def loop(self) -> bool:
        return self._loop

    def fraction(self) -> float:
        d = self.player.duration()
        return self.player.position() / d if d > 0 else 0.0

    def seek(self, fraction: float) -> None:
        d = self.player.duration()
        if d <= 0:
            self._pending_seek = fraction
            return
        self.player.setPosition(int(max(0.0, min(1.0, fraction)) * d))

    def _on_duration(self, duration: int) -> None:
        if duration > 0 and self._pending_seek is not None:
            f, self._pending_seek = self._pending_seek, None
            self.player.setPosition(int(f * duration))

    def _on_position(self, pos: int) -> None:
        d = self.player.duration()
        self.fraction_changed.emit(pos / d if d > 0 else 0.0)
