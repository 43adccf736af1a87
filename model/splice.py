"""Splicing the editor's clip with new music, and seamless loops, at the output's rate.

Everything here happens once, at the rate, channel count and length of the file written, so the
original's samples are copied, not re-rendered:

* **Continue.** The output is the original up to the join (its own samples; resampled once, from its
  rate straight to the output's, only when the two differ; no gain) followed by the new part. The new
  part is the model's audio from the join on, resampled from 16 kHz and brought to the original's
  loudness by a gain that ramps in over ``LEVEL_RAMP_SECONDS`` after the join. At the join itself the
  step between the codec's audio and the original is hidden *after* the join: where the original goes on
  past the join (``continue_from``) it is crossfaded into the new part; at the clip's end the difference
  between the original and the codec's rendering of it (the last ``JOIN_SECONDS`` before the join) is
  carried on, mirrored in time, fading out. ``new_only`` writes ``full[join:]``, so the new part butted
  after the original plays exactly like the full output.
* **Loop.** Exactly the loop's length; the audio generated past the end (``wrap_seconds``) is crossfaded
  (equal power) under the loop's first samples, so the last sample flows into the first as into its
  natural successor. The level of the generated part drifts (a ramp in dB) so that the last beat is as
  loud as the first. A loop made from a clip starts with the clip: its first ``wrap_seconds`` carry the
  wrap crossfade, after that the clip is its own samples up to the join.
"""
from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from . import audio_out
from .continuation import SplicePlan
from .errors import MediaError

MODEL_RATE = 16000
JOIN_SECONDS = 0.05
LEVEL_RAMP_SECONDS = 0.5
LEVEL_REFERENCE_SECONDS = 10.0  # the original's last seconds set the level of what follows
LEVEL_ITERATIONS = 4
MIN_BEAT_SECONDS = 0.4  # BS.1770 measures 400 ms blocks: a shorter beat is measured over 400 ms


def read_original(path: str, field: str = "continue_audio") -> tuple[np.ndarray, int]:
    """The clip's samples as float32 [channels, n] at its own rate. PCM up to 24 bits is exact in
    float32, so writing it back at the same rate and depth gives the same integers."""
    import soundfile as sf

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(rate)
    except (RuntimeError, sf.LibsndfileError):  # not a format libsndfile reads: decode with ffmpeg
        pass
    from . import media

    info = media.probe(path, field=field)
    if not info.has_audio or not info.sample_rate:
        raise MediaError("the file has no audio stream", field=field, wanted="an audio file")
    x = media.load_audio(path, sr=int(info.sample_rate), mono=False, field=field)
    return np.ascontiguousarray(np.atleast_2d(x), dtype=np.float32), int(info.sample_rate)


def _samples(t: Fraction | str | float, rate: int) -> int:
    return int(round(Fraction(t) * rate)) if not isinstance(t, float) else int(round(Fraction(str(t)) * rate))


def _loudness(x: np.ndarray, rate: int) -> float:
    if x.shape[-1] == 0 or not np.any(x):
        return float("-inf")
    return audio_out.integrated_loudness(x, rate)


def _ramp_db(n: int, start: int, stop: int, db: float) -> np.ndarray:
    """Gain per sample over ``n``: 1 before ``start``, ``db`` from ``stop`` on, linear in dB between."""
    idx = np.arange(n, dtype=np.float64)
    frac = np.clip((idx - start) / max(1, stop - start), 0.0, 1.0)
    return (10.0 ** (db * frac / 20.0)).astype(np.float32)


def _hide_join(out: np.ndarray, orig: np.ndarray, model: np.ndarray, j: int, n_join: int) -> None:
    """Make ``out`` (original up to ``j``, new audio after) continuous at ``j`` by changing only
    samples at or after ``j``. ``model`` is the codec audio on the same timeline as ``out``."""
    n_join = min(n_join, out.shape[-1] - j, j)
    if n_join <= 0:
        return
    u = (np.arange(n_join, dtype=np.float32) + 0.5) / n_join
    fade_out = (1.0 - u)[None, :]
    if orig.shape[-1] >= j + n_join:  # the original goes on: crossfade from it into the new part
        out[:, j:j + n_join] = orig[:, j:j + n_join] * fade_out + out[:, j:j + n_join] * (1.0 - fade_out)
        return
    # The clip ends here: carry on the original's difference from the codec's rendering of it, mirrored
    # (so it is continuous at the join and has the clip's own texture), fading out.
    resid = orig[:, j - n_join:j] - model[:, j - n_join:j]
    out[:, j:j + n_join] += resid[:, ::-1] * fade_out


def _level(x: np.ndarray, rate: int, start: int, stop: int, measure: Any, target: float,
           floor: int) -> tuple[np.ndarray, dict]:
    """Find the dB ramp (0 at ``start``, full from ``stop``) that brings ``measure(x * ramp)`` to
    ``target``; a few fixed-point steps (the measure is nearly linear in the gain)."""
    if not math.isfinite(target) or stop <= start:
        return np.ones(x.shape[-1], np.float32), {"gain_db": 0.0, "skipped": "nothing to level"}
    db = 0.0
    env = np.ones(x.shape[-1], np.float32)
    for _ in range(LEVEL_ITERATIONS):
        env = _ramp_db(x.shape[-1], start, stop, db)
        got = measure(env)
        if not math.isfinite(got):
            return np.ones(x.shape[-1], np.float32), {"gain_db": 0.0, "skipped": "silent"}
        if abs(got - target) < 0.05:
            break
        db = float(np.clip(db + target - got, -40.0, 40.0))
        env = _ramp_db(x.shape[-1], start, stop, db)
    # Never push the new part past full scale (the writer would have to clip it).
    peak = float(np.abs(x[:, floor:] * env[floor:]).max(initial=0.0))
    limited = False
    if peak > 0.999:
        db -= 20 * math.log10(peak / 0.999)
        env = _ramp_db(x.shape[-1], start, stop, db)
        limited = True
    return env, {"gain_db": round(db, 2), "limited_by_peak": limited}


def render_continue(model_audio: np.ndarray, plan: SplicePlan, *, out_rate: int, channels: int,
                    new_only: bool = False) -> tuple[np.ndarray, dict]:
    orig, rate_in = read_original(plan.clip or "")
    orig = audio_out.to_channels(audio_out.to_rate(orig, rate_in, out_rate), channels)
    j = _samples(plan.join_fraction, out_rate)
    total = _samples(plan.end, out_rate)
    model = _model_timeline(model_audio, plan, out_rate, channels, total)
    out = np.concatenate([orig[:, :j], model[:, j:total]], axis=1)
    ref = orig[:, max(0, j - int(LEVEL_REFERENCE_SECONDS * out_rate)):j]
    target = _loudness(ref, out_rate)
    ramp = min(int(LEVEL_RAMP_SECONDS * out_rate), (total - j) // 4)
    env, level = _level(out, out_rate, j, j + ramp,
                        lambda e: _loudness(out[:, j:] * e[j:], out_rate), target, j)
    out[:, j:] *= env[None, j:]
    _hide_join(out, orig, model, j, int(JOIN_SECONDS * out_rate))
    info = {"kind": "continue", "join_samples": j, "samples": total, "original_rate": rate_in,
            "original_resampled": rate_in != out_rate, "original_lufs": _round(target),
            "new_lufs": _round(_loudness(out[:, j:], out_rate)), "level": level, "new_only": new_only}
    if new_only:
        out = out[:, j:]
    return np.ascontiguousarray(out, dtype=np.float32), info


def render_loop(model_audio: np.ndarray, plan: SplicePlan, *, out_rate: int, channels: int) -> tuple[np.ndarray, dict]:
    length = _samples(plan.end, out_rate)
    wrap = min(int(round(plan.wrap_seconds * out_rate)), length // 4)
    total = length + wrap
    model = _model_timeline(model_audio, plan, out_rate, channels, total)
    j = 0
    orig = None
    rate_in = None
    if plan.clip is not None:
        orig, rate_in = read_original(plan.clip)
        orig = audio_out.to_channels(audio_out.to_rate(orig, rate_in, out_rate), channels)
        j = min(_samples(plan.join_fraction, out_rate), length)
        a = np.concatenate([orig[:, :j], model[:, j:total]], axis=1)
        _hide_join(a, orig, model, j, int(JOIN_SECONDS * out_rate))
    else:
        a = model[:, :total].copy()
    beat = min(max(1, int(round(max(plan.beat_seconds, MIN_BEAT_SECONDS) * out_rate))), length // 2)
    start = max(j, beat)  # the first beat (or the clip) sets the level; the generated rest follows it

    def wrapped(x: np.ndarray) -> np.ndarray:
        u = (np.arange(wrap, dtype=np.float64) + 0.5) / max(1, wrap)
        y = x[:, :length].copy()
        if wrap:
            y[:, :wrap] = (x[:, :wrap] * np.sin(0.5 * np.pi * u) + x[:, length:total] * np.cos(0.5 * np.pi * u)
                           ).astype(np.float32)
        return y

    def last_vs_first(env: np.ndarray) -> float:
        y = wrapped(a * env[None, :])
        return _loudness(y[:, length - beat:], out_rate) - _loudness(y[:, :beat], out_rate)

    env, level = _level(a, out_rate, start, length - beat, last_vs_first, 0.0, j)
    out = wrapped(a * env[None, :])
    info = {"kind": "loop", "samples": length, "wrap_samples": wrap, "join_samples": j, "beat_samples": beat,
            "first_beat_lufs": _round(_loudness(out[:, :beat], out_rate)),
            "last_beat_lufs": _round(_loudness(out[:, length - beat:], out_rate)), "level": level}
    if rate_in is not None:
        info.update(original_rate=rate_in, original_resampled=rate_in != out_rate)
    return np.ascontiguousarray(out, dtype=np.float32), info


def _model_timeline(model_audio: np.ndarray, plan: SplicePlan, out_rate: int, channels: int, total: int) -> np.ndarray:
    """The model's 16 kHz audio at the output rate, placed on the clip's timeline (index 0 = clip start),
    ``total`` samples long (zeros before the model audio starts)."""
    c = audio_out.to_channels(audio_out.to_rate(np.asarray(model_audio, np.float32).reshape(1, -1), MODEL_RATE,
                                                out_rate), channels)
    off = _samples(Fraction(str(plan.c_start)).limit_denominator(MODEL_RATE), out_rate)
    out = np.zeros((channels, total), np.float32)
    n = max(0, min(c.shape[-1], total - off))
    out[:, off:off + n] = c[:, :n]
    return out


def render(model_audio: np.ndarray, plan: SplicePlan | dict, *, out_rate: int, channels: int,
           new_only: bool = False) -> tuple[np.ndarray, dict]:
    plan = plan if isinstance(plan, SplicePlan) else SplicePlan.from_dict(plan)
    if plan.kind == "loop":
        return render_loop(model_audio, plan, out_rate=out_rate, channels=channels)
    return render_continue(model_audio, plan, out_rate=out_rate, channels=channels, new_only=new_only)


def _round(v: float) -> float | None:
    return round(v, 2) if math.isfinite(v) else None


# --- measures (tests and the bench) --------------------------------------------------------------------

def wrap_jump(loop: np.ndarray) -> tuple[float, float]:
    """(the wrap's sample step, the 99th percentile of the loop's own sample-to-sample steps), worst channel."""
    x = np.atleast_2d(np.asarray(loop, np.float64))
    jump = float(np.abs(x[:, 0] - x[:, -1]).max())
    p99 = float(np.percentile(np.abs(np.diff(x, axis=1)), 99))
    return jump, p99


def beat_loudness(loop: np.ndarray, rate: int, beat_seconds: float) -> tuple[float, float]:
    """(first beat, last beat) loudness in LUFS, beats measured over at least 400 ms."""
    x = np.atleast_2d(np.asarray(loop, np.float32))
    b = int(round(max(beat_seconds, MIN_BEAT_SECONDS) * rate))
    return _loudness(x[:, :b], rate), _loudness(x[:, -b:], rate)


def plan_of(info: dict[str, Any]) -> SplicePlan | None:
    d = (info or {}).get("splice")
    return SplicePlan.from_dict(d) if d else None

