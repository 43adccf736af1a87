"""MLT XML of a timeline, as Shotcut writes it (and melt plays it), and a reader of MLT and Kdenlive projects.

MLT is the engine under Shotcut and Kdenlive; ``melt file.mlt`` plays or renders it headless. The file holds
one ``tractor`` (multitrack) laid out the way Shotcut 22.12 lays out its own projects:

- track 0 is Shotcut's *background*, a playlist of one black ``color`` producer as long as the timeline.
  Shotcut treats the first track of a tractor as that background and stretches its first element to the
  timeline's length; without it, the first picture element (a blank or a clip) was stretched (the issue's
  "242 frames instead of 48");
- then the video tracks (``shotcut:video``), then the audio tracks (``shotcut:audio``, ``hide="video"``),
  each a playlist of blanks and entries at the exact frames of the profile's ``frame_rate_num/den``;
- a ``mix`` transition from the background to every other track (sums the sound), and a
  ``frei0r.cairoblend`` from the background to every video track (Shotcut's compositing);
- one producer per media file with its ``length``, listed in Shotcut's ``main_bin`` (``xml_retain``).

Positions are frames counted from the timeline's first frame. :func:`read_mlt` reads such a file back (and the
files Shotcut and Kdenlive save, whose times may be clock strings) into a :class:`~.layout.Layout`.

Standard library only (``xml.etree``): plain MLT XML, no MLT bindings needed.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from fractions import Fraction
from pathlib import Path

from .layout import Lane, Layout, Placed, first_video_size, media_lengths
from .scored_edit import layout_from_edit
from .score_cues import Cue, Edit


START_PROPERTY = "unimoe:start_frame"  # the timeline's start timecode in frames (the editors ignore it)


def _prop(el: ET.Element, name: str, value: object) -> None:
    ET.SubElement(el, "property", name=name).text = str(value)


def profile_element(root: ET.Element, layout: Layout, size: tuple[int, int], description: str) -> None:
    r = layout.rate
    ET.SubElement(root, "profile", description=description, width=str(size[0]), height=str(size[1]),
                  progressive="1", sample_aspect_num="1", sample_aspect_den="1", display_aspect_num=str(size[0]),
                  display_aspect_den=str(size[1]), frame_rate_num=str(r.numerator), frame_rate_den=str(r.denominator),
                  colorspace="709")


def mlt_layout_document(layout: Layout) -> ET.ElementTree:
    """The Shotcut-shaped MLT document of a layout."""
    length = max(1, layout.length())
    root = ET.Element("mlt", LC_NUMERIC="C", title=layout.title, producer="main_bin")
    r = layout.rate
    profile_element(root, layout, first_video_size(layout), f"unimoe-audio {r.numerator}/{r.denominator}")
    lengths = media_lengths(layout)
    ids: dict[str, str] = {}
    for n, (path, frames) in enumerate(lengths.items()):
        pid = ids[path] = f"producer{n}"
        p = ET.SubElement(root, "producer", id=pid, **{"in": "0", "out": str(frames - 1)})
        _prop(p, "length", frames)
        _prop(p, "eof", "pause")
        _prop(p, "resource", path)
        _prop(p, "mlt_service", "avformat")
    main_bin = ET.SubElement(root, "playlist", id="main_bin")
    _prop(main_bin, "xml_retain", 1)
    black = ET.SubElement(root, "producer", id="black", **{"in": "0", "out": str(length - 1)})
    for k, v in (("length", length), ("eof", "pause"), ("resource", 0), ("aspect_ratio", 1), ("mlt_service", "color"),
                 ("mlt_image_format", "rgba"), ("set.test_audio", 0)):
        _prop(black, k, v)
    background = ET.SubElement(root, "playlist", id="background")
    ET.SubElement(background, "entry", producer="black", **{"in": "0", "out": str(length - 1)})

    ordered = layout.video_lanes() + layout.audio_lanes()
    playlists: list[tuple[str, Lane]] = []
    for n, lane in enumerate(ordered):
        pl = ET.SubElement(root, "playlist", id=f"playlist{n}")
        _prop(pl, f"shotcut:{lane.kind}", 1)
        _prop(pl, "shotcut:name", lane.name)
        pos = 0
        for item in sorted(lane.items, key=lambda p: p.record):
            if item.record < pos:
                continue
            if item.record > pos:
                ET.SubElement(pl, "blank", length=str(item.record - pos))
            if item.path is None:  # offline media: keep its time as a blank so later clips stay in place
                ET.SubElement(pl, "blank", length=str(item.frames))
            else:
                ET.SubElement(pl, "entry", producer=ids[item.path],
                              **{"in": str(item.src_in), "out": str(item.src_in + item.frames - 1)})
            pos = item.end
        playlists.append((pl.get("id", ""), lane))
    tractor = ET.SubElement(root, "tractor", id="tractor0", title=layout.title, **{"in": "0", "out": str(length - 1)})
    _prop(tractor, "shotcut", 1)
    _prop(tractor, START_PROPERTY, layout.start)  # MLT has no start timecode: ours, for reading back
    ET.SubElement(tractor, "track", producer="background")
    for pid, lane in playlists:
        attrs = {"hide": "video"} if lane.kind == "audio" else {}
        ET.SubElement(tractor, "track", producer=pid, **attrs)
    for n, (_, lane) in enumerate(playlists, 1):
        t = ET.SubElement(tractor, "transition", id=f"mix{n}")
        for k, v in (("a_track", 0), ("b_track", n), ("mlt_service", "mix"), ("always_active", 1), ("sum", 1)):
            _prop(t, k, v)
        if lane.kind == "video":
            t = ET.SubElement(tractor, "transition", id=f"blend{n}")
            for k, v in (("a_track", 0), ("b_track", n), ("mlt_service", "frei0r.cairoblend"), ("disable", 0)):
                _prop(t, k, v)
    ET.indent(root)
    return ET.ElementTree(root)


def mlt_document(edit: Edit, cues: list[Cue]) -> ET.ElementTree:
    """The scored edit (its tracks and the score lanes) as Shotcut-shaped MLT."""
    return mlt_layout_document(layout_from_edit(edit, cues))


def write_xml_atomic(tree: ET.ElementTree, out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(out)
    return out


def write_mlt(edit: Edit, cues: list[Cue], out: Path) -> Path:
    """Write the MLT XML atomically; returns its path."""
    return write_xml_atomic(mlt_document(edit, cues), out)


# --------------------------------------------------------------------------------------------------
# reading MLT back (ours, Shotcut's saves, Kdenlive projects)
# --------------------------------------------------------------------------------------------------
_CLOCK = re.compile(r"^(?:(\d+):)?(\d+):(\d+(?:[.,]\d+)?)$")


def mlt_time(text: str | None, rate: Fraction) -> int:
    """An MLT time attribute in frames: a frame count, a clock string ``HH:MM:SS.mmm`` (what Shotcut and
    Kdenlive save; rounded to the nearest frame) or timecode ``HH:MM:SS:FF``."""
    s = (text or "0").strip()
    if re.fullmatch(r"-?\d+", s):
        return int(s)
    m = _CLOCK.match(s)
    if m:
        h, mi, sec = int(m.group(1) or 0), int(m.group(2)), Fraction(m.group(3).replace(",", "."))
        return round((h * 3600 + mi * 60 + sec) * rate)
    from .timeline import parse_timecode

    return parse_timecode(s, rate)


def _props(el: ET.Element) -> dict[str, str]:
    return {p.get("name", ""): (p.text or "") for p in el.findall("property")}


def read_mlt(path: str | os.PathLike[str]) -> Layout:
    """The tracks of an MLT file or Kdenlive project: every playlist the main tractor plays (through Kdenlive's
    per-track tractors), without Shotcut's background and Kdenlive's black track; positions in frames."""
    root = ET.parse(path).getroot()
    prof = root.find("profile")
    if prof is None:
        raise ValueError(f"{path}: no <profile> (not an MLT project)")
    rate = Fraction(int(prof.get("frame_rate_num", "25")), int(prof.get("frame_rate_den", "1")))
    by_id = {el.get("id"): el for el in root if el.get("id")}
    resource = {pid: _props(el).get("resource") for pid, el in by_id.items() if el.tag in ("producer", "chain")}
    base = Path(root.get("root") or Path(path).parent)
    tractors = [el for el in root.findall("tractor")]
    if not tractors:
        raise ValueError(f"{path}: no <tractor> (no timeline)")
    main = next((t for t in tractors if t.get("id") == root.get("producer")), tractors[-1])

    def playlists_of(el: ET.Element, hidden: str | None) -> list[tuple[ET.Element, str | None]]:
        if el.tag == "playlist":
            return [(el, hidden)]
        out: list[tuple[ET.Element, str | None]] = []
        if el.tag == "tractor":
            for tr in el.findall("track"):
                child = by_id.get(tr.get("producer"))
                if child is not None:
                    out.extend(playlists_of(child, tr.get("hide") or hidden))
        return out

    lanes: list[Lane] = []
    for tr in main.findall("track"):
        child = by_id.get(tr.get("producer"))
        if child is None or child.get("id") in ("background", "black_track", "main_bin"):
            continue
        props = _props(child)
        kind = "audio" if (tr.get("hide") == "video" or props.get("shotcut:audio") == "1"
                           or props.get("kdenlive:audio_track") == "1") else "video"
        name = props.get("shotcut:name") or props.get("kdenlive:track_name") or f"{'A' if kind == 'audio' else 'V'}{len(lanes) + 1}"
        items: list[Placed] = []
        for pl, _hidden in playlists_of(child, tr.get("hide")):
            pos = 0
            for el in pl:
                if el.tag == "blank":
                    pos += mlt_time(el.get("length"), rate)
                elif el.tag == "entry":
                    a, b = mlt_time(el.get("in"), rate), mlt_time(el.get("out"), rate)
                    res = resource.get(el.get("producer"))
                    if res and not Path(res).is_absolute():
                        res = str(base / res)
                    items.append(Placed(record=pos, frames=b - a + 1, path=res, src_in=a))
                    pos += b - a + 1
        lanes.append(Lane(name=name, kind=kind, items=sorted(items, key=lambda p: p.record)))
    start = _props(main).get(START_PROPERTY, "0")
    return Layout(title=root.get("title") or main.get("title") or Path(path).stem, rate=rate,
                  start=int(start) if start.isdigit() else 0, drop=False, lanes=lanes)
