"""An MLT XML timeline of a scored edit: the picture track and the score, for Shotcut, Kdenlive and melt.

MLT is the engine under Shotcut and Kdenlive; ``melt file.mlt`` plays or renders it headless. The file
holds one ``tractor`` (multitrack) whose first track is the picture (the edit's clips at their record
positions, blanks between) and whose next tracks are the score (the generated WAVs at the same record
positions); ``mix`` transitions sum the score with the picture's own sound, as Shotcut's timelines do.
Positions are frames at the edit's exact rate (the profile's ``frame_rate_num/den``), counted from
the edit's first frame.

Standard library only (``xml.etree``): the file is plain MLT XML, no MLT bindings needed.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from .score_cues import Cue, Edit, done_cues, lanes


def _video_size(path: Path) -> tuple[int, int] | None:
    if not shutil.which("ffprobe"):
        return None
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                              "stream=width,height", "-of", "json", str(path)], capture_output=True, text=True,
                             timeout=30).stdout
        s = json.loads(out or "{}").get("streams", [{}])[0]
        return int(s["width"]), int(s["height"])
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def _prop(el: ET.Element, name: str, value: object) -> None:
    ET.SubElement(el, "property", name=name).text = str(value)


def mlt_document(edit: Edit, cues: list[Cue]) -> ET.ElementTree:
    r = edit.rate
    pictures = sorted((s for s in edit.shots if s.frames and s.video is not None and not s.skip), key=lambda s: s.record)
    size = next((sz for sz in (_video_size(s.video) for s in pictures[:1] if s.video) if sz), None) or (1920, 1080)
    scored = done_cues(cues)
    length = max([edit.length()] + [c.record_frame + c.frames for c in scored])
    root = ET.Element("mlt", LC_NUMERIC="C", title=edit.title, producer="tractor0")
    ET.SubElement(root, "profile", description=f"unimoe-audio {r.numerator}/{r.denominator}", width=str(size[0]),
                  height=str(size[1]), progressive="1", sample_aspect_num="1", sample_aspect_den="1",
                  display_aspect_num=str(size[0]), display_aspect_den=str(size[1]),
                  frame_rate_num=str(r.numerator), frame_rate_den=str(r.denominator), colorspace="709")
    # one producer per media file; playlist entries cut it
    producers: dict[str, str] = {}

    def producer(path: str, prefix: str) -> str:
        if path not in producers:
            pid = f"{prefix}{len(producers)}"
            p = ET.SubElement(root, "producer", id=pid)
            _prop(p, "resource", path)
            _prop(p, "mlt_service", "avformat")
            producers[path] = pid
        return producers[path]

    picture = ET.Element("playlist", id="picture")
    _prop(picture, "shotcut:video", 1)
    _prop(picture, "shotcut:name", "V1")
    pos = 0
    for s in pictures:
        if s.record < pos:
            continue  # overlapping event: keep the cut
        if s.record > pos:
            ET.SubElement(picture, "blank", length=str(s.record - pos))
        pid = producer(str(s.video), "media")
        ET.SubElement(picture, "entry", producer=pid, **{"in": str(s.src_in), "out": str(s.src_in + s.frames - 1)})
        pos = s.record + s.frames
    lanes_el: list[ET.Element] = []
    for n, lane in enumerate(lanes(scored), 1):
        pl = ET.Element("playlist", id=f"score{n}")
        _prop(pl, "shotcut:audio", 1)
        _prop(pl, "shotcut:name", f"A{n}")
        pos = 0
        for c in lane:
            if c.record_frame > pos:
                ET.SubElement(pl, "blank", length=str(c.record_frame - pos))
            pid = producer(str(c.result["path"]), "wav")
            ET.SubElement(pl, "entry", producer=pid, **{"in": "0", "out": str(c.frames - 1)})
            pos = c.record_frame + c.frames
        lanes_el.append(pl)
    root.append(picture)
    for pl in lanes_el:
        root.append(pl)
    tractor = ET.SubElement(root, "tractor", id="tractor0", **{"in": "0", "out": str(max(0, length - 1))})
    _prop(tractor, "shotcut", 1)
    ET.SubElement(tractor, "track", producer="picture")
    for pl in lanes_el:
        ET.SubElement(tractor, "track", producer=pl.get("id", ""), hide="video")
    for n in range(1, len(lanes_el) + 1):
        t = ET.SubElement(tractor, "transition", id=f"mix{n}")
        _prop(t, "a_track", 0)
        _prop(t, "b_track", n)
        _prop(t, "mlt_service", "mix")
        _prop(t, "always_active", 1)
        _prop(t, "sum", 1)
    ET.indent(root)
    return ET.ElementTree(root)


def write_mlt(edit: Edit, cues: list[Cue], out: Path) -> Path:
    """Write the MLT XML atomically; returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    mlt_document(edit, cues).write(tmp, encoding="utf-8", xml_declaration=True)
    tmp.replace(out)
    return out
