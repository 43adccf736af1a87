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
    """The panel's transport. ``fraction_changed`` drives the playhead; ``state_changed`` says playing (True)
    or not.

    With an audio output it is QtMultimedia's QMediaPlayer. Where the system has no audio output
    (a headless box, a container) it is a playback model: the same transport and position, driven by the
    clock, silent. Qt 6.12's player with its null sink can hang in ``stop()``, and there is nothing to
    hear there anyway; ``audible`` says which one runs.
    """

    fraction_changed = Signal(float)
    state_changed = Signal(bool)
    error = Signal(str)

    TICK_MS = 30

    def __init__(self, parent: QObject | None = None, *, audible: bool | None = None):
        super().__init__(parent)
        from PySide6.QtMultimedia import QMediaDevices

        self.audible = bool(QMediaDevices.audioOutputs()) if audible is None else audible
        self.path = ""
        self._loop = False
        self._pending_seek_ms: int | None = None
        self._pending_fraction: float | None = None
        if self.audible:
            from PySide6.QtMultimedia import QAudioOutput, QMediaPlayer

            self._QMediaPlayer = QMediaPlayer
            self.player = QMediaPlayer(self)
            self.output = QAudioOutput(self)
            self.player.setAudioOutput(self.output)
            self.player.positionChanged.connect(self._on_position)
            self.player.playbackStateChanged.connect(lambda s: self.state_changed.emit(self.is_playing()))
            self.player.durationChanged.connect(self._on_duration)
            self.player.errorOccurred.connect(lambda e, msg: self.error.emit(msg or str(e)))
        else:
            from PySide6.QtCore import QElapsedTimer, QTimer

            self._clock = QElapsedTimer()
            self._duration_ms = 0
            self._origin_ms = 0  # position when the clock started
            self._playing = False
            self._tick = QTimer(self)
            self._tick.setInterval(self.TICK_MS)
            self._tick.timeout.connect(self._on_tick)

    # -- source ---------------------------------------------------------------------------------------
    def load(self, path: str, *, keep_position: bool = False) -> None:
        """Play ``path`` next. ``keep_position``: continue at the same time (A/B, a growing preview)."""
        if path == self.path:
            return
        pos = self.position_ms() if keep_position else 0
        playing = self.is_playing()
        self.path = path
        if self.audible:
            self.player.setSource(QUrl.fromLocalFile(path) if path else QUrl())
            self._pending_seek_ms = pos if pos > 0 else None
            if playing and path:
                self.player.play()
            return
        self._duration_ms = _duration_ms(path) if path else 0
        self._origin_ms = min(pos, self._duration_ms)
        if self._playing:
            self._clock.restart()
        if not path:
            self._set_playing(False)
        self.fraction_changed.emit(self.fraction())

    # -- transport ------------------------------------------------------------------------------------
    def is_playing(self) -> bool:
        if self.audible:
            return self.player.playbackState() == self._QMediaPlayer.PlaybackState.PlayingState
        return self._playing

    def play(self) -> None:
        if not self.path:
            return
        if self.audible:
            self.player.play()
            return
        if not self._playing:
            if self._origin_ms >= self._duration_ms:
                self._origin_ms = 0
            self._clock.restart()
            self._set_playing(True)

    def stop(self) -> None:
        if self.audible:
            self.player.stop()
            return
        if self._playing:
            self._origin_ms = 0
            self._set_playing(False)
            self.fraction_changed.emit(0.0)

    def toggle(self) -> bool:
        """Play or stop; returns whether it now plays."""
        if self.is_playing():
            self.stop()
            return False
        self.play()
        return bool(self.path)

    def set_loop(self, on: bool) -> None:
        self._loop = on
        if self.audible:
            self.player.setLoops(self._QMediaPlayer.Loops.Infinite if on else 1)

    def loop(self) -> bool:
        return self._loop

    def duration_ms(self) -> int:
        return self.player.duration() if self.audible else self._duration_ms

    def position_ms(self) -> int:
        if self.audible:
            return self.player.position()
        if not self._playing:
            return self._origin_ms
        pos = self._origin_ms + self._clock.elapsed()
        if self._loop and self._duration_ms > 0:
            return pos % self._duration_ms
        return min(pos, self._duration_ms)

    def fraction(self) -> float:
        d = self.duration_ms()
        return self.position_ms() / d if d > 0 else 0.0

    def seek(self, fraction: float) -> None:
        f = max(0.0, min(1.0, fraction))
        d = self.duration_ms()
        if self.audible:
            if d <= 0:
                self._pending_seek_ms = None
                self._pending_fraction = f
                return
            self.player.setPosition(int(f * d))
            return
        self._origin_ms = int(f * d)
        if self._playing:
            self._clock.restart()
        self.fraction_changed.emit(self.fraction())

    # -- internals --------------------------------------------------------------------------------------
    def _set_playing(self, on: bool) -> None:
        self._playing = on
        if on:
            self._tick.start()
        else:
            self._tick.stop()
        self.state_changed.emit(on)

    def _on_tick(self) -> None:
        pos = self._origin_ms + self._clock.elapsed()
        if pos >= self._duration_ms and not self._loop:
            self._origin_ms = self._duration_ms
            self._set_playing(False)
            self.fraction_changed.emit(1.0 if self._duration_ms else 0.0)
            return
        self.fraction_changed.emit(self.fraction())

    def _on_duration(self, duration: int) -> None:
        if duration <= 0:
            return
        f = self._pending_fraction
        if f is not None:
            self._pending_fraction = None
            self.player.setPosition(int(f * duration))
        elif self._pending_seek_ms is not None:
            ms, self._pending_seek_ms = self._pending_seek_ms, None
            self.player.setPosition(min(ms, duration))

    def _on_position(self, pos: int) -> None:
        d = self.player.duration()
        self.fraction_changed.emit(pos / d if d > 0 else 0.0)


def _duration_ms(path: str) -> int:
    import soundfile as sf

    try:
        return int(round(sf.info(path).duration * 1000))
    except Exception:  # noqa: BLE001 - unreadable or vanished (a replaced preview): nothing to play
        return 0
