"""Frame rates and timecode, exact: rational rates, drop-frame timecode (one definition for both ends).

Pure standard library, so the protocol (a submit's ``spot.record_in``), the daemon (the BWF time
reference) and the integrations (EDL/OTIO timelines, Blender, REAPER) share it.
:mod:`unimoe_audio.integrations.timeline` re-exports everything here.

- A frame rate is a :class:`fractions.Fraction` (``24000/1001``, ``30000/1001``, ``25``...). Decimal
  spellings of the NTSC rates (``23.976``, ``29.97``, ``59.94``...) are snapped to their exact ratio.
- A timecode names a frame: ``HH:MM:SS:FF`` (non-drop) or ``HH:MM:SS;FF`` (drop-frame, the separator
  before the frames is ``;`` or ``.``; only at 30000/1001 and 60000/1001).
"""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Union

__all__ = ["RateLike", "parse_rate", "rate_string", "nominal_fps", "is_drop_frame_rate", "parse_timecode",
           "frames_to_timecode", "timecode_seconds", "is_drop_timecode"]

RateLike = Union[Fraction, int, float, str]

# Decimal spellings of the NTSC family -> exact ratios.
_NTSC = {
    Fraction(24000, 1001): ("23.976", "23.98"),
    Fraction(30000, 1001): ("29.97",),
    Fraction(48000, 1001): ("47.952", "47.95"),
    Fraction(60000, 1001): ("59.94",),
    Fraction(120000, 1001): ("119.88",),
}


def parse_rate(rate: RateLike) -> Fraction:
    """A frame rate as an exact Fraction: ``"24000/1001"``, ``"29.97"``, ``25``, ``Fraction(30000, 1001)``,
    or Blender's ``fps / fps_base`` as a float (``23.976023...``). Raises ValueError if it is not > 0."""
    if isinstance(rate, Fraction):
        r = rate
    elif isinstance(rate, bool):
        raise ValueError(f"not a frame rate: {rate!r}")
    elif isinstance(rate, int):
        r = Fraction(rate)
    elif isinstance(rate, float):
        if not math.isfinite(rate):
            raise ValueError(f"not a frame rate: {rate!r}")
        r = _snap_float(rate)
    elif isinstance(rate, str):
        text = rate.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                r = Fraction(int(num.strip()), int(den.strip()))
            else:
                for exact, names in _NTSC.items():
                    if text in names:
                        return exact
                r = Fraction(text)
                if r.denominator != 1:
                    r = _snap_float(float(r), strict_decimal=r)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"not a frame rate: {rate!r} (wanted e.g. 25, 24000/1001 or 29.97)") from None
    else:
        raise ValueError(f"not a frame rate: {rate!r}")
    if r <= 0:
        raise ValueError(f"frame rate must be > 0, got {rate!r}")
    return r


def _snap_float(value: float, strict_decimal: Fraction | None = None) -> Fraction:
    """A float rate to the nearest NTSC ratio or integer when within 0.01 fps (decimal spellings and
    Blender's float fps_base); else the decimal itself (``strict_decimal``) or a close small ratio."""
    for exact in _NTSC:
        if abs(value - float(exact)) < 0.01:
            return exact
    if abs(value - round(value)) < 1e-6:
        return Fraction(round(value))
    if strict_decimal is not None:
        return strict_decimal
    return Fraction(value).limit_denominator(1001)


def rate_string(rate: RateLike) -> str:
    """``"24000/1001"`` or ``"25"``: the form the protocol's ``length.fps`` accepts."""
    r = parse_rate(rate)
    return str(r.numerator) if r.denominator == 1 else f"{r.numerator}/{r.denominator}"


def nominal_fps(rate: RateLike) -> int:
    """The frames-per-second counted by timecode: 30 for 29.97, 24 for 23.976, 25 for 25."""
    return max(1, round(parse_rate(rate)))


def is_drop_frame_rate(rate: RateLike) -> bool:
    r = parse_rate(rate)
    return r in (Fraction(30000, 1001), Fraction(60000, 1001))


# --------------------------------------------------------------------------------------------------
# timecode
# --------------------------------------------------------------------------------------------------
_TC = re.compile(r"^\s*(-)?(\d{1,3})[:.;](\d{1,2})[:.;](\d{1,2})([:.;,])(\d{1,3})\s*$")


def _drop_count(rate: Fraction) -> int:
    return 2 * round(rate / Fraction(30000, 1001)) if is_drop_frame_rate(rate) else 0


def parse_timecode(tc: str, rate: RateLike, drop: bool | None = None) -> int:
    """Timecode -> frame count from 00:00:00:00.

    ``drop``: None takes it from the separator before the frames (``;``, ``.`` or ``,`` mean drop-frame);
    drop-frame is only possible at 30000/1001 and 60000/1001. Raises ValueError naming the problem.
    """
    m = _TC.match(tc or "")
    if not m:
        raise ValueError(f"not a timecode: {tc!r} (wanted HH:MM:SS:FF or HH:MM:SS;FF)")
    neg, hh, mm, ss, sep, ff = m.groups()
    h, mi, s, f = int(hh), int(mm), int(ss), int(ff)
    r = parse_rate(rate)
    nominal = nominal_fps(r)
    if drop is None:
        drop = sep in ";.,"
    if mi > 59 or s > 59:
        raise ValueError(f"{tc!r}: minutes and seconds must be below 60")
    if f >= nominal:
        raise ValueError(f"{tc!r}: frame {f} does not exist at {nominal} fps")
    if drop:
        d = _drop_count(r)
        if not d:
            raise ValueError(f"{tc!r}: drop-frame timecode needs 30000/1001 or 60000/1001 fps, not {rate_string(r)}")
        if s == 0 and mi % 10 != 0 and f < d:
            raise ValueError(f"{tc!r}: frames 00..{d - 1:02d} are dropped at the start of this minute")
        minutes = 60 * h + mi
        total = ((h * 3600 + mi * 60 + s) * nominal + f) - d * (minutes - minutes // 10)
    else:
        total = (h * 3600 + mi * 60 + s) * nominal + f
    return -total if neg else total


def frames_to_timecode(frames: int, rate: RateLike, drop: bool | None = None) -> str:
    """Frame count -> timecode; ``drop`` None means drop-frame at 30000/1001 and 60000/1001."""
    r = parse_rate(rate)
    nominal = nominal_fps(r)
    if drop is None:
        drop = is_drop_frame_rate(r)
    n = int(frames)
    sign = "-" if n < 0 else ""
    n = abs(n)
    if drop:
        d = _drop_count(r)
        if not d:
            raise ValueError(f"drop-frame timecode needs 30000/1001 or 60000/1001 fps, not {rate_string(r)}")
        per10 = nominal * 600 - d * 9  # frames in 10 minutes
        per1 = nominal * 60 - d  # frames in a minute that drops
        tens, rem = divmod(n, per10)
        if rem > d:
            n += d * 9 * tens + d * ((rem - d) // per1)
        else:
            n += d * 9 * tens
    ff = n % nominal
    ss = (n // nominal) % 60
    mm = (n // (nominal * 60)) % 60
    hh = n // (nominal * 3600)
    return f"{sign}{hh:02d}:{mm:02d}:{ss:02d}{';' if drop else ':'}{ff:02d}"


def is_drop_timecode(tc: str) -> bool:
    """Whether a timecode's spelling says drop-frame (``;``, ``.`` or ``,`` before the frames)."""
    m = _TC.match(tc or "")
    return bool(m) and m.group(5) in ";.,"


def timecode_seconds(tc: str, rate: RateLike, drop: bool | None = None) -> Fraction:
    """Seconds from 00:00:00:00 (midnight) to the frame ``tc`` names: ``frames / rate``, exact."""
    return Fraction(parse_timecode(tc, rate, drop)) / parse_rate(rate)
