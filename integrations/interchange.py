"""Every editor's timeline format, picked by the file's extension: which reader and which writer.

    write_timeline(edit, cues, "scored.aaf")    # the edit's tracks + the score lanes, in the format of the suffix
    write_layout(layout, "voice.kdenlive")       # any Layout (tracks of placed media) likewise
    read_layout("cut.fcpxml")                    # a timeline file as a Layout (every track)

========== ============================= ============================================ ==========================
suffix     format                        editors                                      through
========== ============================= ============================================ ==========================
.otio      OpenTimelineIO (.otioz/.otiod) DaVinci Resolve 18.5+, OTIO tools          OTIO (built in)
.edl       CMX 3600 EDL                  Avid, Premiere, Resolve, every editor        ours (read and write)
.xml       Final Cut Pro 7 XML           Premiere Pro, Resolve                        ``fcp_xml`` adapter
.fcpxml    FCPXML 1.8                    Final Cut Pro, Resolve                       ours (read and write)
.aaf       AAF                           Avid Media Composer, Pro Tools, Resolve      ``AAF`` adapter (pyaaf2)
.mlt       MLT XML (Shotcut's projects)  Shotcut, melt                                ours
.kdenlive  Kdenlive project              Kdenlive                                     ours
========== ============================= ============================================ ==========================

Where ours and not OTIO's adapter, a measured case showed the adapter wrong (see each module): the cmx_3600
adapter writes one video track only and no record start (the score would be lost, every event moved to
00:00:00:00) and refuses ``;`` timecode at 23.976 that editors do write; the fcpx_xml adapter cannot write
23.976, reads NTSC rates as integers and truncates times. The EDL reader keeps our 23.976/drop-frame leniency.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from .layout import Lane, Layout, Placed, layout_from_otio
from .score_cues import Cue, Edit, require_otio
from .scored_edit import layout_from_edit, otio_from_layout, otio_timeline
from .timeline import frames_to_timecode, is_drop_frame_rate, parse_rate


@dataclass(frozen=True)
class Format:
    suffix: str
    name: str
    editors: str
    adapter: str | None  # the OTIO adapter that reads and writes it; None: ours (``own_writer``)
    own_writer: bool = False


FORMATS: dict[str, Format] = {f.suffix: f for f in (
    Format(".otio", "OpenTimelineIO", "DaVinci Resolve 18.5+, OTIO tools", "otio_json"),
    Format(".otioz", "OpenTimelineIO zip bundle", "OTIO tools", "otioz"),
    Format(".otiod", "OpenTimelineIO folder bundle", "OTIO tools", "otiod"),
    Format(".edl", "CMX 3600 EDL", "Avid, Premiere Pro, DaVinci Resolve, every editor", None, own_writer=True),
    Format(".xml", "Final Cut Pro 7 XML", "Premiere Pro, DaVinci Resolve", "fcp_xml"),
    Format(".fcpxml", "FCPXML", "Final Cut Pro, DaVinci Resolve", None, own_writer=True),
    Format(".aaf", "AAF", "Avid Media Composer, Pro Tools, DaVinci Resolve", "AAF"),
    Format(".mlt", "MLT XML", "Shotcut, melt", None, own_writer=True),
    Format(".kdenlive", "Kdenlive project", "Kdenlive", None, own_writer=True),
)}


class UnsupportedFormat(ValueError):
    pass


def format_of(path: str | os.PathLike[str]) -> Format:
    """The format of a file by its extension; :class:`UnsupportedFormat` names the ones there are."""
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        known = ", ".join(FORMATS)
        what = f"extension {suffix!r}" if suffix else "no extension"
        raise UnsupportedFormat(f"{path}: unsupported timeline format ({what}); use one of {known}")
    return fmt


def _adapter(fmt: Format) -> Any:
    otio = require_otio()
    try:
        return otio.adapters.from_name(fmt.adapter)
    except Exception:  # noqa: BLE001
        raise RuntimeError(f"{fmt.name} needs OpenTimelineIO's {fmt.adapter!r} adapter: "
                           "pip install 'unimoe-audio[timeline]'") from None


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------
def edl_text(layout: Layout) -> str:
    """CMX 3600 of every track: video events on ``V`` (the first video track), audio on ``A``, ``A2``, ... (one
    per audio track), at record timecode from the layout's start; ``* FROM CLIP NAME`` and ``* SOURCE FILE``
    name the media (our reader and OTIO's cmx_3600 adapter both read them)."""
    r, drop = layout.rate, layout.drop and is_drop_frame_rate(layout.rate)
    lines = [f"TITLE: {layout.title}", f"FCM: {'DROP FRAME' if drop else 'NON-DROP FRAME'}", ""]
    events: list[tuple[int, str, Placed]] = []
    videos = layout.video_lanes()[:1]
    for lane in videos:
        events += [(p.record, "V", p) for p in lane.items if p.path]
    for n, lane in enumerate(layout.audio_lanes(), 1):
        events += [(p.record, "A" if n == 1 else f"A{n}", p) for p in lane.items if p.path]
    for i, (_, track, p) in enumerate(sorted(events, key=lambda e: (e[0], e[1] != "V")), 1):
        assert p.path is not None
        tcs = " ".join(frames_to_timecode(x, r, drop) for x in
                       (p.src_in, p.src_in + p.frames, layout.start + p.record, layout.start + p.end))
        lines.append(f"{i:03d}  AX       {track:<5} C        {tcs}")
        lines.append(f"* FROM CLIP NAME: {Path(p.path).name}")
        lines.append(f"* SOURCE FILE: {p.path}")
        lines.append("")
    return "\n".join(lines)


def _write_otio_adapter(tl: Any, fmt: Format, out: Path) -> Path:
    adapter = _adapter(fmt)
    out = out.resolve()  # the bundle adapters (.otiod, .otioz) want absolute paths
    out.parent.mkdir(parents=True, exist_ok=True)
    # AAF: no Avid mob ids to carry over from files we generated: the adapter makes empty ones
    kwargs: dict[str, Any] = {"use_empty_mob_ids": True} if fmt.adapter == "AAF" else {}
    if fmt.suffix == ".otiod":  # a folder, written in place (the adapter refuses an existing one)
        adapter.write_to_file(tl, str(out), **kwargs)
        return out
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        adapter.write_to_file(tl, str(tmp), **kwargs)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _write_own(layout: Layout, fmt: Format, out: Path) -> Path:
    if fmt.suffix == ".mlt":
        from .mlt import mlt_layout_document, write_xml_atomic

        return write_xml_atomic(mlt_layout_document(layout), out)
    if fmt.suffix == ".kdenlive":
        from .kdenlive import write_kdenlive

        return write_kdenlive(layout, out)
    if fmt.suffix == ".fcpxml":
        from .fcpxml import write_fcpxml

        return write_fcpxml(layout, out)
    if fmt.suffix == ".edl":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(edl_text(layout), encoding="utf-8")
        tmp.replace(out)
        return out
    raise AssertionError(fmt)


def write_layout(layout: Layout, out: str | os.PathLike[str]) -> Path:
    """Write any layout (tracks of placed media) in the format of ``out``'s extension; returns the path.
    The public writer for callers with their own clips (the voiceover verb's lines, a script's cues)."""
    out = Path(out)
    fmt = format_of(out)
    if fmt.own_writer:
        return _write_own(layout, fmt, out)
    return _write_otio_adapter(otio_from_layout(layout), fmt, out)


def write_timeline(edit: Edit, cues: list[Cue], out: str | os.PathLike[str]) -> Path:
    """The scored edit in the format of ``out``'s extension: its original tracks (an OTIO-read edit keeps its
    timeline: effects, markers, metadata) plus the score track(s) with every done cue at its record range."""
    out = Path(out)
    fmt = format_of(out)
    if fmt.own_writer:
        return _write_own(layout_from_edit(edit, cues), fmt, out)
    return _write_otio_adapter(otio_timeline(edit, cues), fmt, out)


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def read_otio(path: str | os.PathLike[str], rate: Any = None, **kwargs: Any) -> Any:
    """A timeline file as an OTIO timeline: OTIO's adapter for its format, or ours (MLT, Kdenlive; EDL with
    ``rate``) converted. Errors name the file and what was wrong."""
    path = Path(path)
    fmt = format_of(path)
    if fmt.suffix in (".mlt", ".kdenlive", ".fcpxml"):
        return otio_from_layout(read_layout(path))
    if fmt.suffix == ".edl":
        if rate is None:
            raise ValueError("an EDL does not say its frame rate: give --rate (e.g. 24000/1001)")
        return otio_from_layout(read_edl_layout(path, rate))
    adapter = _adapter(fmt)
    try:
        tl = adapter.read_from_file(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001  (adapters raise their own exception types)
        raise ValueError(f"cannot read {path} as {fmt.name}: {exc}") from None
    otio = require_otio()
    if isinstance(tl, otio.schema.SerializableCollection):  # FCP XML and FCPXML may hold several sequences
        tls = [t for t in tl.find_children(descended_from_type=otio.schema.Timeline)] or [
            t for t in tl if isinstance(t, otio.schema.Timeline)]
        if not tls:
            raise ValueError(f"{path}: no timeline in it")
        tl = tls[0]
    if not isinstance(tl, otio.schema.Timeline):
        raise ValueError(f"{path} holds a {type(tl).__name__}, not a timeline")
    return tl


def read_edl_layout(path: Path, rate: Any) -> Layout:
    """An EDL (our reader: 23.976/drop-frame leniency) as a layout: the picture track ``V`` and one audio track per
    audio channel label (``A``, ``A2`` ...), media from ``* SOURCE FILE``/``* FROM CLIP NAME``/the reel."""
    from .timeline import read_edl

    edl = read_edl(path, rate)
    start = min((e.rec_in for e in edl.events), default=0)
    lanes: dict[str, Lane] = {}
    for ev in edl.events:
        if ev.is_black:
            continue
        key = "V" if ev.is_video else ev.track.upper()
        lane = lanes.setdefault(key, Lane(name=key, kind="video" if ev.is_video else "audio", items=[]))
        src = ev.resolve_source([path.parent])
        lane.items.append(Placed(record=ev.rec_in - start, frames=ev.frames,
                                 path=str(src) if src else ev.source_name(), src_in=ev.src_in, name=ev.clip_name or ev.reel))
    return Layout(title=edl.title or path.stem, rate=edl.rate, start=start, drop=edl.drop, lanes=list(lanes.values()))


def read_layout(path: str | os.PathLike[str], rate: Any = None) -> Layout:
    """Any timeline file as a layout: every track at exact frames (``rate``: the EDL's; others say theirs)."""
    path = Path(path)
    fmt = format_of(path)
    if fmt.suffix in (".mlt", ".kdenlive"):
        from .mlt import read_mlt

        return read_mlt(path)
    if fmt.suffix == ".edl":
        return read_edl_layout(path, rate)
    if fmt.suffix == ".fcpxml":
        from .fcpxml import read_fcpxml

        return read_fcpxml(path)
    tl = read_otio(path)
    if rate is None:
        rate = _first_rate(tl)
    return layout_from_otio(tl, rate, drop=is_drop_frame_rate(parse_rate(rate)))


def _first_rate(tl: Any) -> Fraction:
    for clip in tl.find_clips():
        rng = clip.source_range or clip.available_range()
        return parse_rate(float(rng.duration.rate))
    raise ValueError(f"timeline {tl.name!r} has no clips to take a rate from")

