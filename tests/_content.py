"""Content checks for what the tests get back: a file that exists is not yet a file that is right.

``check_audio`` reads a WAV with soundfile and checks its format, its length and that it holds a real
signal (finite, not silent); ``check_sidecar`` reads a take's JSON sidecar and checks that it describes that
very WAV (its path, format and sample count) and, when given, the job it came from; ``check_peaks`` checks
the panel's waveform of a take.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

SILENCE = 1e-4  # peak below this (about -80 dBFS) is silence: the tiny model's noise is far above it


def check_audio(path: str | Path, *, seconds: float | None = None, sample_rate: int | None = None,
                channels: int | None = None, subtype: str | None = None, tol_s: float = 1e-3,
                audible: bool = True) -> np.ndarray:
    """The file's samples ([frames, channels], float32) after checking what was given: the sample rate,
    channel count, soundfile subtype (``PCM_24``...), the length in seconds (within ``tol_s``), and that
    every sample is finite and, with ``audible``, that the peak is above silence."""
    path = Path(path)
    assert path.is_file(), f"{path} is missing"
    info = sf.info(str(path))
    got = {"sample_rate": info.samplerate, "channels": info.channels, "subtype": info.subtype}
    want = {"sample_rate": sample_rate, "channels": channels, "subtype": subtype}
    for k, v in want.items():
        assert v is None or got[k] == v, f"{path.name}: {k} {got[k]}, wanted {v}"
    if seconds is not None:
        assert abs(info.frames / info.samplerate - seconds) <= tol_s, \
            f"{path.name}: {info.frames / info.samplerate:.4f} s, wanted {seconds} s"
    data, _ = sf.read(str(path), dtype="float32", always_2d=True)
    assert len(data) > 0, f"{path.name} has no samples"
    assert np.isfinite(data).all(), f"{path.name} has non-finite samples"
    if audible:
        assert float(np.abs(data).max()) > SILENCE, f"{path.name} is silent"
    return data


def check_sidecar(wav: str | Path, *, job_id: str | None = None, task: str | None = None) -> dict[str, Any]:
    """The sidecar JSON beside ``wav`` after checking it describes that file: ``output.path``, its sample
    rate, channels and sample count as read from the WAV, and (when given) the job id and task."""
    wav = Path(wav)
    side_path = wav.with_suffix(".json")
    assert side_path.is_file(), f"no sidecar beside {wav}"
    side = json.loads(side_path.read_text())
    out = side["output"]
    info = sf.info(str(wav))
    assert Path(out["path"]) == wav, (out["path"], wav)
    assert (out["sample_rate"], out["channels"], out["samples"]) == (info.samplerate, info.channels, info.frames), out
    if job_id is not None:
        assert side["job_id"] == job_id, side["job_id"]
    if task is not None:
        assert side["task"] == task, side["task"]
    return side


def check_peaks(peaks: Any, path: str | Path, seconds: float) -> None:
    """The panel's waveform (``gui.audio.Peaks``) of ``path``: read from that file, as long as it, each
    bucket's min at most its max, and not flat."""
    assert peaks is not None, f"no waveform for {path}"
    assert Path(peaks.path) == Path(path), (peaks.path, path)
    assert abs(peaks.seconds - seconds) <= 1e-3, (peaks.seconds, seconds)
    assert len(peaks) > 0 and bool((peaks.mins <= peaks.maxs).all())
    assert max(float(peaks.maxs.max()), -float(peaks.mins.min())) > SILENCE, "the waveform is flat"
