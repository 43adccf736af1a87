"""A Kdenlive project (``.kdenlive``) of a timeline: Kdenlive 22.12 opens it with every clip in place.

Kdenlive refuses plain MLT timelines (a clip "without bin reference" is removed, and a playlist added to a
project's bin must match the project's frame rate), so this writes Kdenlive's own document (version 1.04, the
one 22.12 saves): the profile at the timeline's exact rate and the first video's size; one producer per media
file with a ``kdenlive:id``, every one listed in the bin (``main_bin``); each track a tractor of two playlists
(Kdenlive's two sub-tracks, the second empty) named ``kdenlive:track_name``, audio tracks flagged
``kdenlive:audio_track``; the main tractor playing Kdenlive's ``black_track``, the audio tracks (A1 next to the
picture) and the video tracks, with the ``mix`` (sound) and ``qtblend`` (picture) transitions Kdenlive adds to
every track. Times are frame counts at the profile's rate.

Standard library only; :func:`unimoe_audio.integrations.mlt.read_mlt` reads it back (and what Kdenlive saves).
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .layout import Layout, first_video_size
from .layout import media_lengths
from .mlt import START_PROPERTY, _prop, profile_element, write_xml_atomic

DOC_VERSION = "1.04"  # Kdenlive 22.12's document version: no upgrade on open
_AUDIO_SUFFIXES = {".wav", ".wave", ".bwf", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff"}


def kdenlive_document(layout: Layout) -> ET.ElementTree:
    r = layout.rate
    root = ET.Element("mlt", LC_NUMERIC="C", producer="main_bin", version="7.12.0", title=layout.title)
    profile_element(root, layout, first_video_size(layout), f"unimoe-audio {r.numerator}/{r.denominator}")
    lengths = media_lengths(layout)
    ids: dict[str, tuple[str, int]] = {}
    for n, (path, frames) in enumerate(lengths.items()):
        pid, kid = f"producer{n}", n + 2  # Kdenlive's bin ids start at 2 (1 is its root folder)
        ids[path] = (pid, kid)
        p = ET.SubElement(root, "producer", id=pid, **{"in": "0", "out": str(frames - 1)})
        for k, v in (("length", frames), ("eof", "pause"), ("resource", path), ("mlt_service", "avformat-novalidate"),
                     ("kdenlive:clipname", Path(path).name), ("kdenlive:id", kid), ("kdenlive:folderid", -1),
                     ("kdenlive:clip_type", 1 if Path(path).suffix.lower() in _AUDIO_SUFFIXES else 0)):
            _prop(p, k, v)
    main_bin = ET.SubElement(root, "playlist", id="main_bin")
    for k, v in (("kdenlive:docproperties.version", DOC_VERSION), ("kdenlive:docproperties.decimalPoint", "."),
                 ("kdenlive:docproperties.documentid", int(time.time() * 1000)),
                 ("kdenlive:docproperties.guides", "[]"), ("kdenlive:docproperties.groups", "[]"),
                 ("kdenlive:docproperties.zonein", 0), ("kdenlive:docproperties.zoneout", max(0, layout.length() - 1)),
                 ("kdenlive:docproperties.audioTarget", -1), ("kdenlive:docproperties.videoTarget", -1),
                 ("kdenlive:docproperties.compositing", 1), ("xml_retain", 1)):
        _prop(main_bin, k, v)
    for path, (pid, _kid) in ids.items():
        ET.SubElement(main_bin, "entry", producer=pid, **{"in": "0", "out": str(lengths[path] - 1)})
    black = ET.SubElement(root, "producer", id="black_track", **{"in": "0", "out": str(max(0, layout.length() - 1))})
    for k, v in (("length", 2147483647), ("eof", "continue"), ("resource", "black"), ("aspect_ratio", 1),
                 ("mlt_service", "color"), ("mlt_image_format", "rgba"), ("set.test_audio", 0)):
        _prop(black, k, v)

    # the main tractor's order: Kdenlive shows track 1 at the bottom, so the audio tracks (last first, A1 next to
    # the picture) come before the video tracks (V1 lowest)
    order = list(reversed(layout.audio_lanes())) + layout.video_lanes()
    tracks: list[tuple[str, str]] = []
    for n, lane in enumerate(order):
        audio = lane.kind == "audio"
        hide = "video" if audio else "audio"
        pl_a = ET.SubElement(root, "playlist", id=f"playlist{2 * n}")
        pl_b = ET.SubElement(root, "playlist", id=f"playlist{2 * n + 1}")
        if audio:
            _prop(pl_a, "kdenlive:audio_track", 1)
            _prop(pl_b, "kdenlive:audio_track", 1)
        pos = 0
        for item in sorted(lane.items, key=lambda p: p.record):
            if item.record < pos:
                continue
            if item.record > pos:
                ET.SubElement(pl_a, "blank", length=str(item.record - pos))
            if item.path is None:
                ET.SubElement(pl_a, "blank", length=str(item.frames))
            else:
                pid, kid = ids[item.path]
                e = ET.SubElement(pl_a, "entry", producer=pid,
                                  **{"in": str(item.src_in), "out": str(item.src_in + item.frames - 1)})
                _prop(e, "kdenlive:id", kid)
            pos = item.end
        tr = ET.SubElement(root, "tractor", id=f"tractor{n}", **{"in": "0", "out": str(max(0, pos - 1))})
        if audio:
            _prop(tr, "kdenlive:audio_track", 1)
        _prop(tr, "kdenlive:track_name", lane.name)
        _prop(tr, "kdenlive:trackheight", 100)
        _prop(tr, "kdenlive:collapsed", 0)
        ET.SubElement(tr, "track", hide=hide, producer=pl_a.get("id", ""))
        ET.SubElement(tr, "track", hide=hide, producer=pl_b.get("id", ""))
        tracks.append((tr.get("id", ""), lane.kind))
    main = ET.SubElement(root, "tractor", id=f"tractor{len(order)}", title=layout.title,
                         **{"in": "0", "out": str(max(0, layout.length() - 1))})
    _prop(main, "kdenlive:projectTractor", 1)
    _prop(main, START_PROPERTY, layout.start)
    ET.SubElement(main, "track", producer="black_track")
    for tid, _ in tracks:
        ET.SubElement(main, "track", producer=tid)
    for n, (_, kind) in enumerate(tracks, 1):
        t = ET.SubElement(main, "transition", id=f"transition{2 * n}")
        for k, v in (("a_track", 0), ("b_track", n), ("mlt_service", "mix"), ("kdenlive_id", "mix"),
                     ("internal_added", 237), ("always_active", 1), ("accepts_blanks", 1), ("sum", 1)):
            _prop(t, k, v)
        if kind == "video":
            t = ET.SubElement(main, "transition", id=f"transition{2 * n + 1}")
            for k, v in (("a_track", 0), ("b_track", n), ("compositing", 0), ("distort", 0), ("rotate_center", 0),
                         ("mlt_service", "qtblend"), ("kdenlive_id", "qtblend"), ("internal_added", 237),
                         ("always_active", 1)):
                _prop(t, k, v)
    ET.indent(root)
    return ET.ElementTree(root)


def write_kdenlive(layout: Layout, out: Path) -> Path:
    return write_xml_atomic(kdenlive_document(layout), out)
