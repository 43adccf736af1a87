"""FCPXML 1.8 (Final Cut Pro 10.4+, DaVinci Resolve) of a timeline, exact at NTSC rates.

Ours rather than the ``fcpx_xml`` OTIO adapter's writer: measured with otio-fcpx-xml-adapter 1.0.0, it has no
frame duration for 23.976 (``int(23.976)`` is not in its table: the write fails) and computes every rate as an
integer (23.976 -> 23), so clips read back a frame short. Here every time is an exact rational number of
seconds, a whole number of the format's ``frameDuration`` (``1001/24000s`` at 23.976).

Shape: ``resources`` (one ``format`` at the timeline's rate, one ``asset`` per media file with its ``src``),
then ``library/event/project/sequence`` (``tcStart`` the timeline's start timecode, ``tcFormat`` DF/NDF) whose
``spine`` holds the first video track (``asset-clip`` and ``gap`` at their record frames). Every other track is
made of connected clips (``lane`` 1, 2 ... for video above, -1, -2 ... for audio below) attached to the spine
element under their record-in, with the ``offset`` in that element's own time, as Final Cut places them.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

from .layout import Lane, Layout, Placed, first_video_size, media_lengths
from .mlt import write_xml_atomic

VERSION = "1.8"


def _t(frames: int | Fraction, rate: Fraction) -> str:
    """``frames`` at ``rate`` as FCPXML's rational seconds (``"1001/2000s"``, ``"0s"``, ``"3600s"``)."""
    s = Fraction(frames) / rate
    if s == 0:
        return "0s"
    return f"{s.numerator}s" if s.denominator == 1 else f"{s.numerator}/{s.denominator}s"


def fcpxml_document(layout: Layout) -> ET.ElementTree:
    r = layout.rate
    root = ET.Element("fcpxml", version=VERSION)
    res = ET.SubElement(root, "resources")
    w, h = first_video_size(layout)
    ET.SubElement(res, "format", id="r1", frameDuration=_t(1, r), width=str(w), height=str(h))
    lengths = media_lengths(layout)
    audio_only = {p.path for la in layout.audio_lanes() for p in la.items if p.path} - {
        p.path for la in layout.video_lanes() for p in la.items if p.path}
    refs: dict[str, str] = {}
    for n, (path, frames) in enumerate(lengths.items(), 2):
        rid = refs[path] = f"r{n}"
        is_audio = path in audio_only
        ET.SubElement(res, "asset", id=rid, name=Path(path).name, src=Path(path).as_uri(), start="0s",
                      duration=_t(frames, r), hasVideo="0" if is_audio else "1", hasAudio="1",
                      **({} if is_audio else {"format": "r1"}), audioSources="1", audioChannels="2",
                      audioRate="48000")
    lib = ET.SubElement(root, "library")
    event = ET.SubElement(lib, "event", name=layout.title)
    project = ET.SubElement(event, "project", name=layout.title)
    length = layout.length()
    seq = ET.SubElement(project, "sequence", format="r1", duration=_t(length, r), tcStart=_t(layout.start, r),
                        tcFormat="DF" if layout.drop else "NDF", audioLayout="stereo", audioRate="48k")
    spine = ET.SubElement(seq, "spine")
    videos, audios = layout.video_lanes(), layout.audio_lanes()
    main = videos[0] if videos else Lane("V1", "video", [])
    start = layout.start

    # the spine: the first video track, gaps between, a final gap to the end so every connected clip has a parent
    parents: list[tuple[int, int, ET.Element, int]] = []  # (record, end, element, its own start in frames)

    def spine_gap(record: int, frames: int) -> None:
        g = ET.SubElement(spine, "gap", name="Gap", offset=_t(start + record, r), start=_t(start + record, r),
                          duration=_t(frames, r))
        parents.append((record, record + frames, g, start + record))

    pos = 0
    for item in sorted(main.items, key=lambda p: p.record):
        if item.record < pos:
            continue
        if item.record > pos:
            spine_gap(pos, item.record - pos)
        if item.path is None:
            spine_gap(item.record, item.frames)
        else:
            el = ET.SubElement(spine, "asset-clip", ref=refs[item.path], name=item.name or Path(item.path).name,
                               offset=_t(start + item.record, r), start=_t(item.src_in, r), duration=_t(item.frames, r),
                               format="r1", tcFormat="DF" if layout.drop else "NDF")
            parents.append((item.record, item.end, el, item.src_in))
        pos = item.end
    if pos < length or not parents:
        spine_gap(pos, max(1, length - pos))

    def connect(lane_no: int, item: Placed) -> None:
        if item.path is None:
            return
        rec, _end, parent, own_start = next(p for p in parents if p[0] <= item.record < p[1]) if any(
            p[0] <= item.record < p[1] for p in parents) else parents[-1]
        ET.SubElement(parent, "asset-clip", ref=refs[item.path], lane=str(lane_no), name=item.name or Path(item.path).name,
                      offset=_t(own_start + item.record - rec, r), start=_t(item.src_in, r), duration=_t(item.frames, r),
                      **({"format": "r1"} if item.path not in audio_only else {}))

    for n, lane in enumerate(videos[1:], 1):
        for item in lane.items:
            connect(n, item)
    for n, lane in enumerate(audios, 1):
        for item in lane.items:
            connect(-n, item)
    ET.indent(root)
    return ET.ElementTree(root)


def write_fcpxml(layout: Layout, out: Path) -> Path:
    out = write_xml_atomic(fcpxml_document(layout), out)
    # FCPXML files carry a doctype line after the declaration; Final Cut expects it
    text = out.read_text(encoding="utf-8").replace("?>\n", "?>\n<!DOCTYPE fcpxml>\n", 1)
    out.write_text(text, encoding="utf-8")
    return out


# --------------------------------------------------------------------------------------------------
# reading (ours: the fcpx_xml adapter reads NTSC rates as integers, see the module's docstring)
# --------------------------------------------------------------------------------------------------
def _secs(text: str | None) -> Fraction:
    s = (text or "0s").strip().rstrip("s")
    return Fraction(s) if s else Fraction(0)


def read_fcpxml(path: str | os.PathLike[str]) -> Layout:
    """The first project's sequence of an FCPXML file as a layout: the spine (``asset-clip``, ``clip``,
    ``gap``, ``ref-clip``...) as the first video track, connected clips by lane (positive: video tracks above,
    negative: audio tracks below) at their exact frames. Media from the assets' ``src`` (1.8) or
    ``media-rep`` (1.9+)."""
    from urllib.parse import unquote, urlparse
    from urllib.request import url2pathname

    root = ET.parse(path).getroot()
    formats = {f.get("id"): f for f in root.iter("format")}
    assets: dict[str | None, str] = {}
    for a in root.iter("asset"):
        rep = a.find("media-rep")
        src = a.get("src") or (rep.get("src") if rep is not None else None) or ""
        assets[a.get("id")] = str(Path(url2pathname(unquote(urlparse(src).path)))) if src.startswith("file:") else src
    seq = next(root.iter("sequence"), None)
    if seq is None:
        raise ValueError(f"{path}: no <sequence> (no project timeline)")
    fmt = formats.get(seq.get("format"))
    if fmt is None or not fmt.get("frameDuration"):
        raise ValueError(f"{path}: the sequence's format has no frameDuration")
    rate = 1 / _secs(fmt.get("frameDuration"))
    start = _secs(seq.get("tcStart"))

    def frames(t: Fraction) -> int:
        return round(t * rate)

    def media_of(el: ET.Element) -> str | None:
        ref = el.get("ref")
        if ref is None:  # a <clip> wraps its media in <video>/<audio> children
            inner = el.find("video") if el.find("video") is not None else el.find("audio")
            ref = inner.get("ref") if inner is not None else None
        return assets.get(ref) if ref else None

    lanes: dict[int, Lane] = {}

    def lane(no: int) -> Lane:
        if no not in lanes:
            kind = "audio" if no < 0 else "video"
            lanes[no] = Lane(name=f"A{-no}" if no < 0 else f"V{no + 1}", kind=kind, items=[])
        return lanes[no]

    spine = seq.find("spine")
    lane(0)
    for el in (spine if spine is not None else []):
        offset, dur, own = _secs(el.get("offset")), _secs(el.get("duration")), _secs(el.get("start"))
        if el.tag != "gap":
            lane(0).items.append(Placed(record=frames(offset - start), frames=frames(dur), path=media_of(el),
                                        src_in=frames(own), name=el.get("name", "")))
        for child in el:
            if child.get("lane") is None or child.tag not in ("asset-clip", "clip", "ref-clip", "video", "audio"):
                continue
            rec = offset - start + _secs(child.get("offset")) - own  # the child's offset is in its parent's time
            lane(int(child.get("lane", "0"))).items.append(
                Placed(record=frames(rec), frames=frames(_secs(child.get("duration"))), path=media_of(child),
                       src_in=frames(_secs(child.get("start"))), name=child.get("name", "")))
    ordered = [lanes[k] for k in sorted(lanes, key=lambda n: (n < 0, abs(n)))]
    for la in ordered:
        la.items.sort(key=lambda p: p.record)
    name = next((p.get("name") for p in root.iter("project")), None) or Path(path).stem
    return Layout(title=name, rate=rate, start=frames(start), drop=seq.get("tcFormat") == "DF", lanes=ordered)
