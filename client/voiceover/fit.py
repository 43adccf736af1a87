"""Fitting speech to its slot: what length to ask the model for, how much to stretch what came back,
and what to do with a cue that still does not fit.

Order of means (docs/cli.md, "voiceover"):

1. **The model's length control.** The cue's natural length is estimated from the reference voice's
   speaking rate (its recording's seconds per character of its transcript, the estimate the model uses
   itself). When that fits the slot times the stretch bound, the request caps the length there
   (``max_seconds``), so whatever the model says can still be brought into the slot by step 2; the
   model stops on its own end-of-speech earlier. When the text is too long even for that, the cap is the
   model's own margin over the estimate (the words are never cut by the model); step 3 handles the rest.
2. **Pitch-preserving speed-up** within ``[1, max_stretch]`` (default 1.15x, at most 1.5x): ffmpeg's
   ``rubberband`` filter (R3 engine, formant-preserving), or ``atempo`` where ffmpeg lacks rubberband.
   Speech is never slowed down to fill a slot: the rest of the slot is silence.
3. **Overflow** (still longer than the slot): ``trim`` cuts it at the cue's end with a 20 ms fade;
   ``report`` leaves it running past its end into the silence after it and cuts it only where the next
   cue starts; ``shift`` keeps it whole and moves the following cues later as far as needed. Each
   overflow is in the report, with by how much.
"""
from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import wav

__all__ = ["DEFAULT_MAX_STRETCH", "STRETCH_LIMIT", "OVERFLOW_MODES", "LengthAsk", "length_request", "speaking_rate",
           "stretch_factor", "render_fitted", "stretch_filter", "FitError", "FADE_S"]

DEFAULT_MAX_STRETCH = 1.15
STRETCH_LIMIT = 1.5  # beyond this even rubberband's speech sounds hurried
OVERFLOW_MODES = ("trim", "shift", "report")
FADE_S = 0.02  # fade-out where a cue is cut
MODEL_MARGIN = 1.5  # the model's own cap over its estimate (model/tasks.py SPEECH_RATE_MARGIN)
MODEL_SLACK_S = 1.0
FALLBACK_SECONDS_PER_CHAR = 0.075  # ~13 characters/s: when the voice's rate is unknown
MAX_SECONDS = 600.0  # protocol.MAX_SECONDS


class FitError(RuntimeError):
    """ffmpeg could not stretch or cut a cue."""


def speaking_rate(transcript: str, seconds: float) -> float:
    """Seconds per character of a reference: its length over its transcript (spaces counted once)."""
    chars = len(" ".join(transcript.split()))
    if chars <= 0 or seconds <= 0:
        return FALLBACK_SECONDS_PER_CHAR
    return seconds / chars


@dataclass(frozen=True)
class LengthAsk:
    """The length fields of a cue's speech request, and the estimate they came from."""

    estimate_s: float
    min_seconds: float
    max_seconds: float
    too_long: bool  # the estimate exceeds slot x max_stretch: expect an overflow

    def fields(self) -> dict[str, float]:
        return {"min_seconds": self.min_seconds, "max_seconds": self.max_seconds}


def length_request(text: str, slot_s: float | None, rate_s_per_char: float,
                   max_stretch: float = DEFAULT_MAX_STRETCH) -> LengthAsk:
    """What to ask the model for (step 1 above). ``slot_s`` None: an open slot (no fitting)."""
    estimate = max(0.1, len(" ".join(text.split())) * rate_s_per_char)
    own_cap = min(MAX_SECONDS, estimate * MODEL_MARGIN + MODEL_SLACK_S)
    if slot_s is None:
        return LengthAsk(estimate, round(min(estimate * 0.5, own_cap), 3), round(own_cap, 3), False)
    cap = slot_s * max_stretch
    too_long = estimate > cap
    hi = max(0.05, own_cap if too_long else min(cap, own_cap))
    lo = min(estimate, slot_s) * 0.5
    return LengthAsk(estimate, round(min(lo, hi), 3), round(hi, 3), too_long)


def stretch_factor(raw_samples: int, slot_samples: int | None, max_stretch: float) -> float:
    """The speed-up that brings ``raw_samples`` into the slot, within ``[1, max_stretch]``."""
    if slot_samples is None or raw_samples <= slot_samples or slot_samples <= 0:
        return 1.0
    return min(max_stretch, raw_samples / slot_samples)


@functools.lru_cache(maxsize=1)
def _filters() -> frozenset[str]:
    exe = shutil.which("ffmpeg")
    if exe is None:
        return frozenset()
    try:
        out = subprocess.run([exe, "-hide_banner", "-filters"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(m.group(1) for m in re.finditer(r"^\s*\S+\s+(\w+)\s+A->A", out, re.M))


def stretch_filter(tempo: float) -> str:
    """The ffmpeg filter that speeds speech up by ``tempo`` keeping its pitch."""
    if "rubberband" in _filters():
        return f"rubberband=tempo={tempo:.6f}:pitchq=quality:transients=smooth:window=standard"
    if "atempo" in _filters():
        return f"atempo={tempo:.6f}"  # 0.5..100: one stage covers 1..1.5
    raise FitError("stretching needs ffmpeg with the rubberband or atempo filter on the PATH")


_CODECS = {(1, 16): "pcm_s16le", (1, 24): "pcm_s24le", (1, 32): "pcm_s32le", (3, 32): "pcm_f32le"}


def render_fitted(src: str | Path, dst: str | Path, *, tempo: float, keep_samples: int,
                  chunks: list[tuple[bytes, bytes]] = ()) -> wav.WavInfo:
    """Write ``src`` sped up by ``tempo`` (1: untouched) and cut to at most ``keep_samples`` (with a fade where
    it is cut) to ``dst`` atomically, with ``chunks`` (BWF) before its data. Returns the written file's info.

    Without a stretch or a cut the PCM is copied byte for byte; otherwise ffmpeg renders it in the source's
    own sample format."""
    info = wav.read_info(src)
    tempo = float(tempo)
    if tempo <= 1.0 + 1e-9 and keep_samples >= info.frames:
        return wav.write_pcm(dst, info, wav.read_pcm(src, info), chunks)
    codec = _CODECS.get((info.format_tag, info.bits))
    if codec is None:
        raise FitError(f"{src}: {info.bits}-bit format {info.format_tag} cannot be stretched")
    stretched = info.frames if tempo <= 1.0 + 1e-9 else max(1, round(info.frames / tempo))
    n = min(keep_samples, stretched)
    filters = []
    if tempo > 1.0 + 1e-9:
        filters.append(stretch_filter(tempo))
    if n < stretched:
        fade = min(FADE_S, n / info.rate / 2)
        filters.append(f"afade=t=out:st={max(0.0, n / info.rate - fade):.6f}:d={fade:.6f}")
    filters += [f"atrim=end_sample={n}", f"apad=whole_len={n}"]  # exactly n samples
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FitError("fitting a cue needs ffmpeg on the PATH")
    cmd = [exe, "-v", "error", "-nostdin", "-i", str(src), "-af", ",".join(filters), "-ar", str(info.rate),
           "-ac", str(info.channels), "-c:a", codec, "-f", codec[4:], "-"]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise FitError(f"ffmpeg failed on {src}: {exc}") from None
    if proc.returncode != 0:
        raise FitError(f"ffmpeg failed on {src}: {proc.stderr.decode(errors='replace').strip()[-500:]}")
    pcm = proc.stdout
    want = n * info.block_align
    pcm = pcm[:want] + b"\x00" * max(0, want - len(pcm))  # ffmpeg's own count, made exact
    return wav.write_pcm(dst, info, pcm, chunks)
