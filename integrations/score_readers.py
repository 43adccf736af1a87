"""Reading an edit: CMX3600 EDLs (through :mod:`.timeline`) and whatever OpenTimelineIO reads, to an
:class:`~.score_cues.Edit`; the sources' start timecode from ffprobe."""
from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from .score_cues import Edit, Shot, require_otio
from .timeline import is_drop_frame_rate, parse_rate, parse_timecode, read_edl, to_frames


def probe_timecode(video: Path) -> str | None:
    if not shutil.which("ffprobe"):
        return None
    try:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags=timecode:stream_tags=timecode",
                              "-of", "json", str(video)], capture_output=True, text=True, timeout=30).stdout
        data = json.loads(out or "{}")
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None
    tags = [data.get("format", {}).get("tags", {})] + [s.get("tags", {}) for s in data.get("streams", [])]
    for t in tags:
        if t.get("timecode"):
            return str(t["timecode"])
    return None


def source_start_frames(video: Path, rate: Fraction, spec: str = "auto") -> int:
    """The clip's start timecode in frames: ``spec`` a timecode, or ``auto`` (ffprobe's ``timecode`` tag of
    the file or its first stream; 0 when there is none or ffprobe is missing)."""
    if spec != "auto":
        return to_frames(spec, rate)
    tc = probe_timecode(video)
    if not tc:
        return 0
    try:
        return parse_timecode(tc, rate)
    except ValueError:
        return 0


def edit_from_edl(path: Path, rate: Any, media: list[Path] | None = None, source_start: str = "auto") -> Edit:
    """A CMX3600 EDL: its picture events in order; black, audio and missing sources are kept as skipped
    shots (so they still occupy the picture track). ``* LOC:`` comments are markers."""
    edl = read_edl(path, rate)
    search = [path.parent, *(media or [])]
    events = edl.events
    start = min((e.rec_in for e in events), default=0)
    starts: dict[Path, int] = {}
    shots: list[Shot] = []
    for ev in events:
        shot = Shot(number=ev.number, name=ev.clip_name or ev.reel, source=ev.source_name(), video=None, src_in=0,
                    record=ev.rec_in - start, frames=ev.frames,
                    markers=[c.split(":", 1)[1].strip() for c in ev.comments if c.upper().startswith("* LOC:")])
        if not ev.is_video or ev.is_black:
            shot.skip = "black" if ev.is_black else f"track {ev.track} is not picture"
        else:
            video = ev.resolve_source(search)
            if video is None:
                shot.skip = f"source not found: {ev.source_name()}"
            else:
                if video not in starts:
                    starts[video] = source_start_frames(video, edl.rate, source_start)
                shot.video = video
                shot.src_in = ev.src_in - starts[video]
                if shot.src_in < 0:
                    shot.skip = (f"event {ev.number}: source in {ev.tc(ev.src_in)} is before the clip's start "
                                 f"timecode {ev.tc(starts[video])}")
        shots.append(shot)
    return Edit(title=edl.title or path.stem, rate=edl.rate, start=start, drop=edl.drop, shots=shots,
                warnings=list(edl.warnings))


def _frames(rt: Any, rate: Fraction) -> int:
    """An OTIO RationalTime (float rate) in whole frames at the exact ``rate``."""
    return round(Fraction(rt.value) * rate / parse_rate(float(rt.rate)))


def _url_path(url: str) -> Path:
    if url.startswith("file:"):
        u = urlparse(url)
        return Path(url2pathname(unquote(u.path)))
    return Path(url)


def edit_from_otio(tl: Any, rate: Any = None, track: str | None = None, search: list[Path] | None = None,
                   source_start: str = "media") -> Edit:
    """The clips of a picture track of an OTIO timeline. ``track``: a name or 1-based number among the
    video tracks (default the first). Source offsets: the clip's source range minus its media's
    available range start (the media's start timecode); ``source_start`` ``auto`` asks ffprobe instead."""
    otio = require_otio()
    videos = list(tl.video_tracks())
    if not videos:
        raise ValueError("the timeline has no video track")
    if track is None:
        tr = videos[0]
    elif track.isdigit():
        if not 1 <= int(track) <= len(videos):
            raise ValueError(f"no video track {track} (the timeline has {len(videos)})")
        tr = videos[int(track) - 1]
    else:
        named = [t for t in videos if t.name == track]
        if not named:
            raise ValueError(f"no video track named {track!r} (there are: {', '.join(t.name for t in videos)})")
        tr = named[0]
    clips = [c for c in tr if isinstance(c, otio.schema.Clip)]
    if rate is None:
        first = next((c.source_range or c.available_range() for c in clips), None)
        if first is None:
            raise ValueError("the track has no clips to take a rate from; give --rate")
        rate = float(first.duration.rate)
    r = parse_rate(rate)
    gst = tl.global_start_time
    start = _frames(gst, r) if gst is not None else 0
    shots: list[Shot] = []
    for i, clip in enumerate(clips, 1):
        rr = tr.range_of_child(clip)
        ref = clip.media_reference
        url = getattr(ref, "target_url", None) or ""
        shot = Shot(number=i, name=clip.name or f"clip {i}", source=url, video=None, src_in=0,
                    record=_frames(rr.start_time, r), frames=_frames(rr.duration, r),
                    markers=[m.name or m.comment or "marker" for m in clip.markers])
        if not url:
            shot.skip = "no media file"
        else:
            p = _url_path(url)
            if not p.is_absolute():
                p = next((d / p for d in (search or []) if (d / p).exists()), p)
            if not p.exists():
                shot.skip = f"source not found: {url}"
            else:
                shot.video = p.resolve()
                if not url.startswith("file:") and not Path(url).is_absolute():
                    ref.target_url = shot.video.as_uri()  # the written timeline must not depend on a bundle folder
                sr = clip.source_range or clip.available_range()
                avail = getattr(ref, "available_range", None)
                if source_start == "media":
                    offset = _frames(avail.start_time, r) if avail is not None else 0
                else:
                    offset = source_start_frames(shot.video, r, source_start)
                shot.src_in = _frames(sr.start_time, r) - offset
                if shot.src_in < 0:
                    shot.skip = f"clip {i}: source in is before the media's start"
        shots.append(shot)
    if not any(s.frames for s in shots):
        raise ValueError(f"track {tr.name!r} has no clips")
    # OTIO's own timecode convention: drop-frame at 29.97 and 59.94
    return Edit(title=tl.name or "timeline", rate=r, start=start, drop=is_drop_frame_rate(r), shots=shots, otio=tl)


def read_edit(path: Path, rate: Any = None, track: str | None = None, media: list[Path] | None = None,
              source_start: str | None = None) -> Edit:
    """An EDL (``.edl``, needs ``rate``) or anything OpenTimelineIO reads."""
    if path.suffix.lower() == ".edl":
        if rate is None:
            raise ValueError("an EDL does not say its frame rate: give --rate (e.g. 24000/1001)")
        return edit_from_edl(path, rate, media, source_start or "auto")
    otio = require_otio()
    path = path.resolve()
    search = [path.parent, *(media or [])]
    kwargs: dict[str, Any] = {}
    if path.is_dir():  # .otiod: a folder whose content.otio names media relative to it
        search.insert(0, path)
    elif path.suffix.lower() == ".otioz":  # a zip bundle: its media must be on disk for the daemon
        unpacked = path.with_name(path.stem + ".media")
        unpacked.mkdir(exist_ok=True)
        if not (unpacked / "content.otio").exists():
            kwargs["extract_to_directory"] = str(unpacked)
            search.insert(0, unpacked)
        else:
            path = unpacked / "content.otio"
            search.insert(0, unpacked)
    try:
        tl = otio.adapters.read_from_file(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001  (OTIO and its adapters raise their own exception types)
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not isinstance(tl, otio.schema.Timeline):
        raise ValueError(f"{path} holds a {type(tl).__name__}, not a timeline")
    return edit_from_otio(tl, rate, track, search, source_start or "media")
