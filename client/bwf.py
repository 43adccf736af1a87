"""Broadcast WAV metadata: the ``bext`` chunk (EBU Tech 3285 v2) and iXML, built and read back.

These chunks are what lets an NLE or DAW spot a file to its record-in: ``bext``'s TimeReference is the
file's first sample counted in samples since midnight at the file's own sample rate; iXML carries the
production fields (project, scene, take, note) and the timecode rate.

Pure standard library, so the daemon (which writes them) and the integrations and tests (which read
them) share one definition. Why not a library: soundfile exposes libsndfile's ``SF_BROADCAST_INFO`` only
through the C API (its Python binding cannot write it, and libsndfile writes no iXML at all), and the
Python readers of these chunks (``wavinfo``, used by the tests as an independent check) do not write
them. The layout is one fixed 602-byte struct plus text, so it is written here.
"""
from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["BEXT_FIXED", "Bext", "bext_chunk", "ixml_chunk", "read_chunks", "read_bext", "read_ixml",
           "parse_bext", "parse_ixml"]

# Description, Originator, OriginatorReference, OriginationDate, OriginationTime, TimeReferenceLow/High,
# Version, UMID, LoudnessValue, LoudnessRange, MaxTruePeakLevel, MaxMomentaryLoudness,
# MaxShortTermLoudness, Reserved; CodingHistory follows (variable length).
_BEXT = struct.Struct("<256s32s32s10s8sIIH64shhhhh180s")
BEXT_FIXED = _BEXT.size  # 602
_UNSET = 0x7FFF  # EBU Tech 3285 v2: a loudness field that was not measured


@dataclass
class Bext:
    description: str = ""
    originator: str = ""
    originator_reference: str = ""
    origination_date: str = ""
    origination_time: str = ""
    time_reference: int = 0
    version: int = 2
    umid: bytes = b""
    loudness_value: float | None = None
    loudness_range: float | None = None
    max_true_peak_level: float | None = None
    max_momentary_loudness: float | None = None
    max_short_term_loudness: float | None = None
    coding_history: str = ""


def _ascii(text: str, size: int) -> bytes:
    # bext strings are ASCII, NUL padded (a full-length field has no terminator).
    return (text or "").encode("ascii", "replace")[:size]


def _centi(value: float | None) -> int:
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return _UNSET
    return max(-32768, min(32766, round(value * 100)))


def bext_chunk(info: Bext) -> bytes:
    """The body of a ``bext`` chunk (without the 8-byte chunk header)."""
    if not 0 <= info.time_reference < 2**64:
        raise ValueError(f"time reference {info.time_reference} out of range")
    body = _BEXT.pack(
        _ascii(info.description, 256), _ascii(info.originator, 32), _ascii(info.originator_reference, 32),
        _ascii(info.origination_date, 10), _ascii(info.origination_time, 8),
        info.time_reference & 0xFFFFFFFF, info.time_reference >> 32, info.version, info.umid[:64],
        _centi(info.loudness_value), _centi(info.loudness_range), _centi(info.max_true_peak_level),
        _centi(info.max_momentary_loudness), _centi(info.max_short_term_loudness), b"",
    )
    history = (info.coding_history or "").encode("ascii", "replace")
    if history and not history.endswith(b"\r\n"):
        history += b"\r\n"
    return body + history


def origination(when: datetime) -> tuple[str, str]:
    """(OriginationDate ``yyyy-mm-dd``, OriginationTime ``hh:mm:ss``) as bext writes them."""
    return when.strftime("%Y-%m-%d"), when.strftime("%H:%M:%S")


def ixml_chunk(*, project: str | None = None, scene: str | None = None, take: str | None = None,
               note: str | None = None, file_uid: str | None = None, time_reference: int | None = None,
               sample_rate: int, bit_depth: int, channels: int, timecode_rate: Fraction | None = None,
               drop: bool = False) -> bytes:
    """The body of an ``iXML`` chunk (iXML 2.10): production fields, the timestamp and the speed."""
    root = ET.Element("BWFXML")
    ET.SubElement(root, "IXML_VERSION").text = "2.10"
    for tag, value in (("PROJECT", project), ("SCENE", scene), ("TAKE", take), ("NOTE", note),
                       ("FILE_UID", file_uid)):
        if value:
            ET.SubElement(root, tag).text = value
    speed = ET.SubElement(root, "SPEED")
    if timecode_rate is not None:
        rate = f"{timecode_rate.numerator}/{timecode_rate.denominator}"
        ET.SubElement(speed, "MASTER_SPEED").text = rate
        ET.SubElement(speed, "CURRENT_SPEED").text = rate
        ET.SubElement(speed, "TIMECODE_RATE").text = rate
        ET.SubElement(speed, "TIMECODE_FLAG").text = "DF" if drop else "NDF"
    ET.SubElement(speed, "FILE_SAMPLE_RATE").text = str(sample_rate)
    ET.SubElement(speed, "AUDIO_BIT_DEPTH").text = str(bit_depth)
    ET.SubElement(speed, "DIGITIZER_SAMPLE_RATE").text = str(sample_rate)
    if time_reference is not None:
        ET.SubElement(speed, "TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_HI").text = str(time_reference >> 32)
        ET.SubElement(speed, "TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO").text = str(time_reference & 0xFFFFFFFF)
        ET.SubElement(speed, "TIMESTAMP_SAMPLE_RATE").text = str(sample_rate)
    tracks = ET.SubElement(root, "TRACK_LIST")
    ET.SubElement(tracks, "TRACK_COUNT").text = str(channels)
    names = ["L", "R"] if channels == 2 else [f"Ch{i + 1}" for i in range(channels)]
    if channels == 1:
        names = ["Mono"]
    for i, name in enumerate(names, 1):
        t = ET.SubElement(tracks, "TRACK")
        ET.SubElement(t, "CHANNEL_INDEX").text = str(i)
        ET.SubElement(t, "INTERLEAVE_INDEX").text = str(i)
        ET.SubElement(t, "NAME").text = name
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def _chunks(fh: BinaryIO) -> list[tuple[bytes, int, int]]:
    head = fh.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
        raise ValueError("not a WAV file")
    out: list[tuple[bytes, int, int]] = []
    while True:
        ch = fh.read(8)
        if len(ch) < 8:
            break
        cid, size = ch[:4], struct.unpack("<I", ch[4:])[0]
        out.append((cid, fh.tell(), size))
        fh.seek(size + (size & 1), 1)
    return out


def read_chunks(path: str | Path) -> dict[bytes, bytes]:
    """The bodies of a WAV file's chunks except ``data`` (id -> body; the first of each id)."""
    found: dict[bytes, bytes] = {}
    with open(path, "rb") as fh:
        for cid, offset, size in _chunks(fh):
            if cid == b"data" or cid in found:
                continue
            fh.seek(offset)
            found[cid] = fh.read(size)
    return found


def parse_bext(body: bytes) -> Bext:
    if len(body) < BEXT_FIXED:
        raise ValueError(f"bext chunk of {len(body)} bytes is shorter than {BEXT_FIXED}")
    f = _BEXT.unpack(body[:BEXT_FIXED])

    def text(b: bytes) -> str:
        return b.split(b"\x00", 1)[0].decode("ascii", "replace")

    def loud(v: int) -> float | None:
        return None if v == _UNSET else v / 100

    return Bext(description=text(f[0]), originator=text(f[1]), originator_reference=text(f[2]),
                origination_date=text(f[3]), origination_time=text(f[4]), time_reference=f[5] | (f[6] << 32),
                version=f[7], umid=f[8], loudness_value=loud(f[9]), loudness_range=loud(f[10]),
                max_true_peak_level=loud(f[11]), max_momentary_loudness=loud(f[12]),
                max_short_term_loudness=loud(f[13]),
                coding_history=body[BEXT_FIXED:].split(b"\x00", 1)[0].decode("ascii", "replace"))


def parse_ixml(body: bytes) -> dict[str, Any]:
    """The iXML fields this project writes, as a flat dict (``SPEED`` and ``TRACK_LIST`` nested)."""
    root = ET.fromstring(body.rstrip(b"\x00"))
    out: dict[str, Any] = {}
    for child in root:
        if child.tag == "SPEED":
            out["SPEED"] = {c.tag: (c.text or "") for c in child}
        elif child.tag == "TRACK_LIST":
            out["TRACK_LIST"] = [{c.tag: (c.text or "") for c in t} for t in child if t.tag == "TRACK"]
        else:
            out[child.tag] = child.text or ""
    return out


def read_bext(path: str | Path) -> Bext | None:
    body = read_chunks(path).get(b"bext")
    return None if body is None else parse_bext(body)


def read_ixml(path: str | Path) -> dict[str, Any] | None:
    body = read_chunks(path).get(b"iXML")
    return None if body is None else parse_ixml(body)
