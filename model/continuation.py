"""Music that continues the editor's own audio, and loops: what the model sees and how much it makes.

A continued clip becomes the start of the music segment. The clip is read with ffmpeg at 16 kHz mono
(stereo averaged, the torchaudio sinc recipe: how the model's audio was prepared in training), cut at
the join, and encoded with the DAC. Its codes are then the first frames of the generation, fed through
the same delay pattern as the frames the model makes itself (``GenItem.prefix`` -> ``apply_delay``), so
the model continues the music exactly as it continues its own earlier windows.

* Only whole frames go in: the DAC pads a partial last frame with zeros, which the model would hear as
  silence and continue. The prefix therefore ends up to 19 ms before the join; the new audio is taken
  from the join on, the frames before it only carry the music into the model.
* A clip longer than the model's window contributes its last window: the latest frames that fit one
  window beside ``FIRST_NEW_FRAMES`` new frames (the rest of the window). Encoding covers exactly those
  frames' audio.
* With a tempo the join falls on a bar line (4/4, bars counted from the clip's start): the last bar line
  at or before the clip's end (or ``continue_from``).

The model returns the codec audio of prefix + new frames at 16 kHz; the splice (the original's own
samples up to the join, the new part matched to its loudness, the loop wrap) happens at the output's
rate in :mod:`model.splice`, driven by :class:`SplicePlan` (carried in ``AudioResult.info["splice"]``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InvalidInput, MediaError, UniMoEError
from .length import MAX_SECONDS, target_samples_of

SAMPLE_RATE = 16000
HOP = 320
FRAMES_PER_SECOND = SAMPLE_RATE // HOP
MIN_CLIP_SECONDS = 1.0
FIRST_NEW_FRAMES = 250  # new frames the first window keeps free beside a long clip (5 s)
TAIL_MARGIN_SECONDS = 0.1  # generated past the output's end: the resampler's and decoder's edge stay outside
LOOP_WRAP_SECONDS = 0.1  # the loop's end crossfades into its start over this long
DEFAULT_TEMPO = 120.0  # a bar without a tempo (as music_target_samples)
BEATS_PER_BAR = 4


@dataclass
class SplicePlan:
    """How the writer builds the output from the original clip and the model's audio (times in seconds
    from the clip's start; the model audio ``c`` starts at ``c_start``)."""

    kind: str  # "continue" or "loop"
    clip: str | None  # the original file (None: a loop made from nothing)
    join: float  # where the new music starts (0 for a plain loop)
    join_fraction: str  # the same, exact (a Fraction as text): sample positions are rounded from it
    end: str  # the output's end as an exact Fraction (continue: total length; loop: the loop's length)
    c_start: float  # clip time of the model audio's first sample
    beat_seconds: float  # for the loop's level match (first vs last beat)
    wrap_seconds: float = LOOP_WRAP_SECONDS
    prefix_frames: int = 0
    clip_frames: int = 0  # whole frames of the clip up to the join (the prefix is the last of them)
    new_frames: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SplicePlan":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class ClipPrefix:
    codes: np.ndarray  # [P, 12] the prefix: the DAC codes of the clip's last window before the join
    audio: np.ndarray  # the 16 kHz mono audio those codes encode (P * 320 samples)
    join: Fraction  # seconds
    c_start: Fraction  # seconds: where ``audio`` starts in the clip
    clip_frames: int


def bar_seconds(tempo_bpm: float | None) -> Fraction:
    tempo = Fraction(DEFAULT_TEMPO if tempo_bpm is None else float(tempo_bpm)).limit_denominator(10**6)
    return Fraction(BEATS_PER_BAR * 60) / tempo


def clip_duration(path: str, field: str) -> tuple[float, int]:
    """(seconds, native rate) of the clip's first audio stream; MediaError naming ``field`` if it has none.
    (The daemon probes the same at submit, daemon/probe.py; this is the model's own check for scripts.)"""
    from . import media

    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise MediaError(f"no such file: {path}", field=field, wanted="an existing audio file")
    try:
        info = media.probe(str(p), field=field)
    except UniMoEError as exc:
        raise MediaError(f"{p.name} is not audio ({exc.detail})", field=field, wanted="an audio file") from exc
    if not info.has_audio:
        raise MediaError(f"{p.name} is not audio: it has no audio stream", field=field, wanted="an audio file")
    return float(info.duration), int(info.sample_rate or SAMPLE_RATE)


def resolve_join(duration: float, continue_from: float | None, tempo_bpm: float | None, *, field: str,
                 limit: Fraction | None = None) -> Fraction:
    """The join in seconds: the clip's end or ``continue_from``, snapped down to a bar line with a tempo;
    at most ``limit`` (a loop's length). Errors name the field at fault."""
    if duration < MIN_CLIP_SECONDS - 1e-6:
        raise InvalidInput(f"the clip is {duration:.2f} s long, shorter than {MIN_CLIP_SECONDS:g} s", field=field,
                           wanted=f"a clip of at least {MIN_CLIP_SECONDS:g} s")
    if continue_from is not None:
        s = float(continue_from)
        if not math.isfinite(s) or s <= 0:
            raise InvalidInput(f"{continue_from!r} is not a time in the clip", field="continue_from",
                               wanted="seconds > 0")
        if s > duration + 1e-6:
            raise InvalidInput(f"{s:g} s is past the end of the clip ({duration:.3f} s)", field="continue_from",
                               wanted=f"continue_from <= {duration:.3f}")
        if s < MIN_CLIP_SECONDS:
            raise InvalidInput(f"{s:g} s leaves less than {MIN_CLIP_SECONDS:g} s of the clip to continue",
                               field="continue_from", wanted=f"continue_from >= {MIN_CLIP_SECONDS:g}")
        join = Fraction(str(round(s, 6)))
    else:
        join = Fraction(str(round(duration, 6)))
    if limit is not None and join > limit:
        if continue_from is not None:
            raise InvalidInput(f"the join ({float(join):g} s) is past the loop's end ({float(limit):g} s)",
                               field="continue_from", wanted=f"continue_from <= {float(limit):g}")
        join = limit
    if tempo_bpm is not None:
        bar = bar_seconds(tempo_bpm)
        bars = math.floor(join / bar + Fraction(1, 10**6))
        if bars < 1:
            where = "continue_from" if continue_from is not None else field
            raise InvalidInput(f"{float(join):.2f} s is shorter than one bar at {float(tempo_bpm):g} BPM "
                               f"({float(bar):.2f} s): the join must fall on a bar line", field=where,
                               wanted=f"at least one bar ({float(bar):.2f} s)")
        join = bars * bar
    return join


def load_prefix(eng: Any, path: str, join: Fraction, window_frames: int, *, field: str) -> ClipPrefix:
    """Decode the clip at 16 kHz mono up to the join, keep its whole frames, and encode the last window."""
    from . import media

    j16 = int(round(join * SAMPLE_RATE))
    # Decode a little past the join, so the resampler's edge lies after what we keep.
    x = media.load_audio(path, sr=SAMPLE_RATE, mono=True, duration=float(join) + 0.25, field=field)
    if x.size < j16 - HOP:  # the container claimed more than it holds
        raise MediaError(f"the clip decodes to {x.size / SAMPLE_RATE:.2f} s, less than the join "
                         f"({float(join):.2f} s)", field=field)
    x = np.pad(x, (0, max(0, j16 - x.size)))[:j16]
    if float(np.abs(x).max(initial=0.0)) < 1e-5:
        raise InvalidInput("the clip is silent up to the join", field=field, wanted="a clip with music in it")
    n_frames = j16 // HOP
    p = prefix_frames(n_frames, window_frames)
    audio = np.ascontiguousarray(x[(n_frames - p) * HOP: n_frames * HOP], dtype=np.float32)
    codes = np.asarray(eng.encode_audio(audio), dtype=np.int64)[:p]
    if codes.shape[0] != p:
        raise MediaError(f"the codec gave {codes.shape[0]} frames for {p}", field=field)
    return ClipPrefix(codes=codes, audio=audio, join=join, c_start=Fraction((n_frames - p) * HOP, SAMPLE_RATE),
                      clip_frames=n_frames)


def prefix_frames(clip_frames: int, window_frames: int) -> int:
    """Frames of the clip that go into the first window: all of it, or its last window's worth."""
    room = max(1, min(FIRST_NEW_FRAMES, window_frames // 2))
    return max(1, min(clip_frames, window_frames - room))


def frames_to_cover(c_start: Fraction, end: Fraction) -> int:
    """Frames the model audio needs (from ``c_start``) to reach ``end`` plus the tail margin."""
    return int(math.ceil((end - c_start + Fraction(str(TAIL_MARGIN_SECONDS))) * FRAMES_PER_SECOND))


def check_length_field(value: Any, field: str) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) or not math.isfinite(float(value)):
        raise InvalidInput(f"wanted a number of seconds, got {value!r}", field=field, wanted="seconds")
    return Fraction(str(float(value))) if isinstance(value, float) else Fraction(value)


# --- planning a request --------------------------------------------------------------------------------

@dataclass
class SpliceSetup:
    prefix: np.ndarray | None  # [P, 12] clip codes that start the music segment (None: a plain loop)
    frames: int  # frames of model audio in all (prefix included)
    plan: SplicePlan


def _exact_seconds(length: Any, field: str = "length") -> Fraction | None:
    """The request's length as exact seconds (seconds, or frames at a rational fps), validated."""
    if length is None or target_samples_of(length, field) is None:
        return None
    if length.frames is not None:
        return Fraction(int(length.frames)) / Fraction(length.fps)
    return check_length_field(length.seconds, f"{field}.seconds")


@dataclass
class SpliceTimes:
    join: Fraction  # 0 for a plain loop
    end: Fraction  # the output's end (continue) or the loop's length
    need_to: Fraction  # how far the model audio must reach (a loop: past its end, for the wrap)
    beat: Fraction


def plan_times(req: Any, duration: float | None) -> SpliceTimes:
    """Validate a continue / loop request's lengths against the clip's ``duration`` (None: no clip) and
    say where the join and the end fall. Pure (no audio read): the daemon runs it at submit
    (daemon/probe.py) and the engine again when it plans the job, so both refuse the same requests."""
    field = "continue_audio"
    length = _exact_seconds(req.length)
    bars = None if req.bars is None else Fraction(int(req.bars)) * bar_seconds(req.tempo_bpm)
    if length is not None and bars is not None and abs(length - bars) < Fraction(1, 1000):
        length = None  # the client spells bars at a tempo as seconds too: the bars are the exact length
    to_seconds = None if req.to_seconds is None else check_length_field(req.to_seconds, "to_seconds")
    given = [n for n, v in (("length.seconds", length), ("bars", bars), ("to_seconds", to_seconds)) if v is not None]
    if len(given) > 1:
        raise InvalidInput(f"give one of {', '.join(given)}", field=given[1], wanted="one length")
    beat = bar_seconds(req.tempo_bpm) / BEATS_PER_BAR
    end = need_to = Fraction(0)
    if req.loop:
        if to_seconds is not None:
            raise InvalidInput("a loop's length is --seconds or --bars", field="to_seconds",
                               wanted="length.seconds or bars")
        loop_len = length if length is not None else bars
        if loop_len is None:
            raise InvalidInput("a loop needs a length", field="bars", wanted="bars (with tempo_bpm) or length.seconds")
        bar = bar_seconds(req.tempo_bpm)
        if loop_len < bar - Fraction(1, 10**6):
            raise InvalidInput(f"a loop of {float(loop_len):.2f} s is shorter than one bar ({float(bar):.2f} s at "
                               f"{float(req.tempo_bpm or DEFAULT_TEMPO):g} BPM)",
                               field="length.seconds" if length is not None else "bars",
                               wanted=f"at least one bar ({float(bar):.2f} s)")
        if loop_len > MAX_SECONDS:
            raise InvalidInput(f"{float(loop_len):.1f} s is too long", field="length.seconds",
                               wanted=f"at most {MAX_SECONDS:g} s")
        end = loop_len
        need_to = loop_len + Fraction(str(LOOP_WRAP_SECONDS))
    if duration is None:
        return SpliceTimes(join=Fraction(0), end=end, need_to=need_to, beat=beat)
    join = resolve_join(duration, req.continue_from, req.tempo_bpm, field=field, limit=end if req.loop else None)
    if not req.loop:
        if to_seconds is not None:
            if to_seconds <= join:
                raise InvalidInput(f"{float(to_seconds):g} s is not after the join ({float(join):.3f} s)",
                                   field="to_seconds", wanted=f"to_seconds > {float(join):.3f}")
            end = to_seconds
        elif length is not None or bars is not None:
            end = join + (length if length is not None else bars)
        else:
            raise InvalidInput("say how much to add", field="length.seconds",
                               wanted="length.seconds (new music), to_seconds (whole output) or bars")
        if end > MAX_SECONDS:
            raise InvalidInput(f"{float(end):.1f} s is too long", field="to_seconds" if to_seconds else "length.seconds",
                               wanted=f"at most {MAX_SECONDS:g} s in all")
        need_to = end
    return SpliceTimes(join=join, end=end, need_to=need_to, beat=beat)


def plan_splice(eng: Any, req: Any, window_frames: int, rep: Any = None) -> SpliceSetup:
    """Validate a continue / loop music request and plan what the model makes (see the module doc)."""
    field = "continue_audio"
    if req.continue_audio is None:  # a plain loop: from nothing
        t = plan_times(req, None)
        frames = frames_to_cover(Fraction(0), t.need_to)
        plan = SplicePlan(kind="loop", clip=None, join=0.0, join_fraction="0", end=str(t.end), c_start=0.0,
                          beat_seconds=float(t.beat), new_frames=frames)
        return SpliceSetup(prefix=None, frames=frames, plan=plan)
    duration, _ = clip_duration(req.continue_audio, field)
    t = plan_times(req, duration)
    if rep is not None:
        rep("encode", 0.0)
    pre = load_prefix(eng, req.continue_audio, t.join, window_frames, field=field)
    frames = max(pre.codes.shape[0] + 1, frames_to_cover(pre.c_start, t.need_to))
    plan = SplicePlan(kind="loop" if req.loop else "continue", clip=str(req.continue_audio), join=float(t.join),
                      join_fraction=str(t.join), end=str(t.end), c_start=float(pre.c_start), beat_seconds=float(t.beat),
                      prefix_frames=int(pre.codes.shape[0]), clip_frames=pre.clip_frames,
                      new_frames=frames - int(pre.codes.shape[0]))
    return SpliceSetup(prefix=pre.codes, frames=frames, plan=plan)
