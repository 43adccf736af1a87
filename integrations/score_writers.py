"""Writing a scored edit: the OTIO timeline with the score on new audio track(s), and the JSON report.
(The MLT file is :mod:`.mlt`.)"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .score_cues import SCORE_TRACK, Cue, Edit, done_cues, lanes, require_otio


def report(cues: list[Cue], skipped: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    events = [asdict(c) for c in cues]
    ok = bool(cues) and all(c.result.get("status") == "done" and c.result.get("exact") for c in cues)
    return {**meta, "ok": ok, "cues": events, "skipped": skipped, "written": time.time()}


def write_report(rep: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(rep, indent=2)
    if path is None:
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


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
    else:  # built from an EDL: its picture track first
        tl = otio.schema.Timeline(name=edit.title, global_start_time=rt(edit.start))
        video = otio.schema.Track(name="V", kind=otio.schema.TrackKind.Video)
        pos = 0
        for shot in sorted((s for s in edit.shots if s.frames), key=lambda s: s.record):
            if shot.record < pos:
                continue  # an overlapping event (dissolve source): the cut edit keeps the first
            if shot.record > pos:
                video.append(otio.schema.Gap(source_range=ot.TimeRange(rt(0), rt(shot.record - pos))))
            if shot.video is not None:
                ref = otio.schema.ExternalReference(target_url=shot.video.as_uri())
            else:
                ref = otio.schema.MissingReference()
            video.append(otio.schema.Clip(name=shot.name, media_reference=ref,
                                          source_range=ot.TimeRange(rt(max(0, shot.src_in)), rt(shot.frames)),
                                          markers=[otio.schema.Marker(name=m) for m in shot.markers]))
            pos = shot.record + shot.frames
        tl.tracks.append(video)
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


def write_otio(edit: Edit, cues: list[Cue], out: Path) -> Path:
    otio = require_otio()
    tl = otio_timeline(edit, cues)
    out = Path(out).resolve()  # the bundle adapters (.otiod, .otioz) want absolute paths
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".otiod":  # a folder: written in place (the adapter refuses an existing one)
        otio.adapters.write_to_file(tl, str(out))
        return out
    tmp = out.with_name(f".{out.name}.tmp{out.suffix}")
    otio.adapters.write_to_file(tl, str(tmp))
    tmp.replace(out)
    return out
