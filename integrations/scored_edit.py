"""A scored edit (the edit read, plus the done cues on the score lanes) as a :class:`~.layout.Layout` or as an
OpenTimelineIO timeline, and any layout as an OTIO timeline: the shapes every timeline writer starts from
(interchange.py picks the writer by extension; mlt.py, score_writers.py write their own)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .layout import Lane, Layout, Placed, layout_from_otio, media_lengths, picture_lane, score_lane_name
from .score_cues import SCORE_TRACK, Cue, Edit, done_cues, lanes, require_otio


def layout_from_edit(edit: Edit, cues: list[Cue]) -> Layout:
    """The scored edit as a layout: its original tracks (every track of an OTIO input, through
    :func:`layout_from_otio`; the picture track of an EDL) plus the score lanes at the cues' record frames."""
    if edit.otio is not None:
        return layout_from_otio(otio_timeline(edit, cues), edit.rate, title=edit.title, start=edit.start,
                                drop=edit.drop)
    tracks = [picture_lane(edit)]
    for n, lane in enumerate(lanes(done_cues(cues)), 1):
        tracks.append(Lane(name=score_lane_name(n), kind="audio",
                          items=[Placed(record=c.record_frame, frames=c.frames, path=str(c.result["path"]), name=c.name)
                                 for c in lane]))
    return Layout(title=edit.title, rate=edit.rate, start=edit.start, drop=edit.drop, lanes=tracks)


def otio_timeline(edit: Edit, cues: list[Cue]) -> Any:
    """The edit as an OTIO timeline (a copy of the one read, or one built from the EDL) with the done
    cues on new audio track(s) named ``unimoe score``, each clip at its shot's exact record range."""
    otio = require_otio()
    ot = otio.opentime
    rate = float(edit.rate)

    def rt(frames: int) -> Any:
        return ot.RationalTime(frames, rate)

    if edit.otio is not None:
        tl = edit.otio.deepcopy()
    else:  # built from an EDL: its picture track first (the same cut edit as every other writer's)
        tl = otio_from_layout(Layout(edit.title, edit.rate, edit.start, edit.drop, [picture_lane(edit)]))
    for n, lane in enumerate(lanes(done_cues(cues)), 1):
        track = otio.schema.Track(name=SCORE_TRACK if n == 1 else f"{SCORE_TRACK} {n}", kind=otio.schema.TrackKind.Audio)
        pos = 0
        for c in lane:
            if c.record_frame > pos:
                track.append(otio.schema.Gap(source_range=ot.TimeRange(rt(0), rt(c.record_frame - pos))))
            res = c.result
            ref = otio.schema.ExternalReference(target_url=Path(res["path"]).as_uri(),
                                                available_range=ot.TimeRange(rt(0), rt(c.frames)))
            meta = {"unimoe_audio": {"job_id": res.get("job_id"), "samples": res.get("samples"),
                                     "sample_rate": res.get("sample_rate"), "seed": res.get("seed"),
                                     "record_in": c.record_in, "fps": c.fps}}
            track.append(otio.schema.Clip(name=c.name, media_reference=ref, source_range=ot.TimeRange(rt(0), rt(c.frames)),
                                          metadata=meta))
            pos = c.record_frame + c.frames
        tl.tracks.append(track)
    return tl


def otio_from_layout(layout: Layout) -> Any:
    """An OTIO timeline of a layout (every track; gaps between clips)."""
    otio = require_otio()
    ot = otio.opentime
    rate = float(layout.rate)

    def rt(frames: int) -> Any:
        return ot.RationalTime(frames, rate)

    tl = otio.schema.Timeline(name=layout.title, global_start_time=rt(layout.start))
    lengths = media_lengths(layout)  # the adapters (AAF, FCP XML) want each media's available range
    for lane in layout.lanes:
        kind = otio.schema.TrackKind.Audio if lane.kind == "audio" else otio.schema.TrackKind.Video
        track = otio.schema.Track(name=lane.name, kind=kind)
        pos = 0
        for p in sorted(lane.items, key=lambda p: p.record):
            if p.record < pos:
                continue
            if p.record > pos:
                track.append(otio.schema.Gap(source_range=ot.TimeRange(rt(0), rt(p.record - pos))))
            if p.path:
                url = Path(p.path).as_uri() if Path(p.path).is_absolute() else p.path
                ref = otio.schema.ExternalReference(target_url=url,
                                                    available_range=ot.TimeRange(rt(0), rt(lengths[p.path])))
            else:
                ref = otio.schema.MissingReference()
            track.append(otio.schema.Clip(name=p.name or (Path(p.path).name if p.path else "offline"), media_reference=ref,
                                          source_range=ot.TimeRange(rt(p.src_in), rt(p.frames)),
                                          markers=[otio.schema.Marker(name=m) for m in p.markers]))
            pos = p.end
        tl.tracks.append(track)
    return tl
