"""Audio for timelines: rate and channel conversion, loudness, exact length, atomic WAV files."""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import InvalidInput
from .resample import resample

_SUBTYPES = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}


def _2d(audio: np.ndarray) -> np.ndarray:
    x = np.asarray(audio, dtype=np.float32)
    return x[None, :] if x.ndim == 1 else x


def to_rate(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample [channels, n] (or [n]) with the band-limited sinc of resample.py."""
    x = np.asarray(audio, dtype=np.float32)
    return x if sr_in == sr_out else np.asarray(resample(x, sr_in, sr_out), dtype=np.float32)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    x = _2d(audio)
    if x.shape[0] == channels:
        return x
    if channels < 1:
        raise InvalidInput("channels must be at least 1", field="channels")
    mono = x.mean(axis=0, keepdims=True)
    return np.repeat(mono, channels, axis=0).astype(np.float32)


def fade(audio: np.ndarray, sample_rate: int, in_ms: float = 0.0, out_ms: float = 0.0) -> np.ndarray:
    x = _2d(audio).copy()
    n_in = min(x.shape[-1], int(sample_rate * in_ms / 1000))
    n_out = min(x.shape[-1], int(sample_rate * out_ms / 1000))
    if n_in:
        x[:, :n_in] *= np.linspace(0.0, 1.0, n_in, dtype=np.float32)
    if n_out:
        x[:, x.shape[-1] - n_out:] *= np.linspace(1.0, 0.0, n_out, dtype=np.float32)
    return x


def fit_length(audio: np.ndarray, n_samples: int, sample_rate: int = 48000, fade_ms: float = 10.0) -> np.ndarray:
    """Exactly ``n_samples``: trim with a short fade-out, or fade out then pad with silence."""
    if n_samples < 0:
        raise InvalidInput("negative length", field="length")
    x = _2d(audio)
    if x.shape[-1] == n_samples:
        return x
    if x.shape[-1] > n_samples:
        return fade(x[:, :n_samples], sample_rate, out_ms=fade_ms)
    pad = np.zeros((x.shape[0], n_samples - x.shape[-1]), dtype=np.float32)
    return np.concatenate([fade(x, sample_rate, out_ms=fade_ms), pad], axis=1)


def true_peak_db(audio: np.ndarray, sample_rate: int) -> float:
    """True peak (dBTP) by 4x oversampling, as ITU-R BS.1770 suggests."""
    x = _2d(audio)
    if x.size == 0:
        return float("-inf")
    up = resample(x, sample_rate, sample_rate * 4)
    peak = float(np.abs(up).max())
    return float(20 * np.log10(peak)) if peak > 0 else float("-inf")


def integrated_loudness(audio: np.ndarray, sample_rate: int) -> float:
    import pyloudnorm

    x = _2d(audio)
    if x.shape[-1] < int(0.4 * sample_rate):  # BS.1770 gating needs one 400 ms block
        x = np.concatenate([x] * int(np.ceil(0.41 * sample_rate / max(1, x.shape[-1]))), axis=1)
    return float(pyloudnorm.Meter(sample_rate).integrated_loudness(x.T.astype(np.float64)))


def normalize_loudness(audio: np.ndarray, sample_rate: int, target_lufs: float,
                       ceiling_db: float = -1.0) -> tuple[np.ndarray, dict]:
    """Gain to ``target_lufs`` integrated loudness, reduced if needed so the true peak stays under the ceiling."""
    x = _2d(audio)
    measured = integrated_loudness(x, sample_rate) if x.size else float("-inf")
    if not np.isfinite(measured):
        return x, {"input_lufs": None, "gain_db": 0.0, "skipped": "silent"}
    gain_db = target_lufs - measured
    y = x * np.float32(10 ** (gain_db / 20))
    tp = true_peak_db(y, sample_rate)
    limited = False
    if tp > ceiling_db:
        gain_db -= tp - ceiling_db
        y = x * np.float32(10 ** (gain_db / 20))
        tp = true_peak_db(y, sample_rate)
        limited = True
    return y.astype(np.float32), {"input_lufs": round(measured, 2), "gain_db": round(gain_db, 2),
                                  "true_peak_db": round(tp, 2), "limited_by_true_peak": limited}


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, bit_depth: int = 24,
              chunks: Sequence[tuple[bytes, bytes]] = ()) -> Path:
    """Write [channels, n] as WAV atomically: a temp file in the same folder, fsync, then rename.

    ``chunks``: extra RIFF chunks ``(id, body)`` (e.g. BWF ``bext``, ``iXML``), placed before ``data``
    as Broadcast WAV readers expect."""
    import soundfile as sf

    if bit_depth not in _SUBTYPES:
        raise InvalidInput(f"bit depth {bit_depth} is not 16, 24 or 32", field="bit_depth")
    x = _2d(audio)
    if x.ndim != 2 or not 1 <= x.shape[0] <= 64:
        raise InvalidInput(f"audio of shape {tuple(np.shape(audio))} is not [channels, samples]", field="audio")
    if not np.isfinite(x).all():
        raise InvalidInput("audio contains NaN or infinite samples", field="audio")
    if bit_depth != 32:
        # libsndfile wraps out-of-range floats around when converting to PCM (a loud click); clip instead.
        x = np.clip(x, -1.0, 1.0)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp.wav", dir=target.parent)
    try:
        # mkstemp makes the file 0600; give it the permissions a normal open() would (0666 minus umask),
        # or a DAW running as another user could not read the result.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            if chunks:
                buf = io.BytesIO()
                sf.write(buf, x.T, int(sample_rate), subtype=_SUBTYPES[bit_depth], format="WAV")
                fh.write(insert_chunks(buf.getvalue(), chunks))
            else:
                sf.write(fh, x.T, int(sample_rate), subtype=_SUBTYPES[bit_depth], format="WAV")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)  # make the rename itself durable
    return target


def insert_chunks(wav: bytes, chunks: Sequence[tuple[bytes, bytes]]) -> bytes:
    """A RIFF WAV with ``chunks`` inserted before its ``data`` chunk (sizes and pad bytes fixed up)."""
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise InvalidInput("not a RIFF WAV", field="audio")
    pos = 12
    while pos + 8 <= len(wav):
        cid, size = wav[pos:pos + 4], int.from_bytes(wav[pos + 4:pos + 8], "little")
        if cid == b"data":
            break
        pos += 8 + size + (size & 1)
    else:
        raise InvalidInput("WAV without a data chunk", field="audio")
    extra = bytearray()
    for cid, body in chunks:
        if len(cid) != 4:
            raise InvalidInput(f"chunk id {cid!r} is not 4 bytes", field="audio")
        extra += cid + len(body).to_bytes(4, "little") + body + (b"\x00" if len(body) & 1 else b"")
    out = wav[:pos] + bytes(extra) + wav[pos:]
    riff_size = len(out) - 8
    if riff_size >= 2**32:
        raise InvalidInput("WAV over 4 GiB with extra chunks", field="audio")
    return out[:4] + riff_size.to_bytes(4, "little") + out[8:]


def _umask() -> int:
    """The process umask without os.umask(), which briefly changes it for every thread of the daemon."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported here (e.g. Windows); the data itself is already synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
