"""Score an edit: read a timeline, score its shots through the daemon, write the timeline back with the music.

    unimoe-audio score-timeline cut.otio -o scored.otio --mlt scored.mlt --caption "tense strings"
    unimoe-score-timeline reel1.edl --rate 24000/1001 --media ./media -o reel1.otio --mlt reel1.mlt
    python -m unimoe_audio.integrations.score_timeline cut.otio --marker -o scored.otio

Reads OpenTimelineIO files (``.otio``, ``.otioz``, ``.otiod``, and whatever OTIO adapter plugins are
installed: ``otio-kdenlive-adapter``, FCP XML ...) and CMX3600 EDLs (read by
:mod:`.timeline`, which needs ``--rate``; OTIO 0.18 no longer ships an EDL adapter of its own). Every
clip of the chosen picture track (``--track``: a name or a 1-based number; default the first), or only
the clips carrying a marker (``--marker``, optionally whose name contains a text), becomes one
``video_score`` request of exactly the clip's record duration (``length = {frames, fps}`` with
``fit_length``), spotted to its record-in (BWF ``bext`` + iXML, see :mod:`unimoe_audio.client.bwf`).

Writes (``-o``) the timeline with a new audio track (``unimoe score``) whose clips reference the
generated files at the exact record ranges, through OTIO (any writing adapter by the file's suffix),
and (``--mlt``) an MLT XML file with the picture and the score for Shotcut, Kdenlive or ``melt``.
A JSON report (``--report``) lists every file with its expected and actual sample count.

Times are exact: rates are Fractions (``24000/1001``, ``30000/1001``), timecode may be drop-frame,
and a clip of ``n`` frames gets ``round(n * sample_rate / rate)`` samples.

Exit status: 0 every shot scored sample-exact, 1 some shot failed, 2 bad arguments or no daemon.
Only :mod:`unimoe_audio.client` is used to talk to the daemon; ``opentimelineio`` (the ``timeline``
extra) is needed only for OTIO input or output.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from unimoe_audio.client.client import BadRequest, Client, ClientError, DaemonUnavailable
from unimoe_audio.client.settings import load_settings

from .timeline import (
    frames_to_seconds, frames_to_timecode, is_drop_frame_rate, parse_rate, parse_timecode, rate_string, read_edl,
    samples_for_frames, to_frames, vision_fps, wav_frames,
)

SCORE_TRACK = "unimoe score"
OTIO_HELP = "reading or writing OpenTimelineIO needs the 'opentimelineio' package: pip install 'unimoe-audio[timeline]'"


# --------------------------------------------------------------------------------------------------
# cues: one score request each, in plain values
# --------------------------------------------------------------------------------------------------
@dataclass
class Cue:
    """One score request: seconds into ``video``, ``frames`` at ``fps`` long, spotted at ``record_in``."""

    name: str
    video: str
    in_seconds: float
    out_seconds: float
    frames: int
    fps: str
    record_in: str = ""
    record_out: str = ""
    event: int | None = None
    expected_samples: int = 0
    record_frame: int = 0  # record-in in frames from the timeline's start (where the clip goes)
    project: str | None = None
    scene: str | None = None
    caption: str | None = None  # this shot's own caption (a marker's); else the run's
    spot: bool = True  # write record_in into the file (BWF/iXML); off when record_in is not a timeline's
    result: dict[str, Any] = field(default_factory=dict)

    def fields(self, *, caption: str = "", mode: str = "vision", folder: str | None = None,
               sample_rate: int = 48000, channels: int | None = None, seed: int | None = None,
               tag: str | None = None) -> dict[str, Any]:
        """Flat fields for ``Client.submit("score", ...)``."""
        text = self.caption if self.caption else caption
        f: dict[str, Any] = {"video": self.video, "caption": text, "in_seconds": self.in_seconds,
                             "out_seconds": self.out_seconds, "mode": mode, "frames": self.frames, "fps": self.fps,
                             "fit_length": True, "sample_rate": sample_rate,
                             "frames_per_second": vision_fps(self.out_seconds - self.in_seconds), "name": self.name}
        if self.spot and self.record_in:  # spot the file: BWF time reference + iXML
            f.update(record_in=self.record_in, project=self.project, scene=self.scene, note=text or None)
        if folder:
            f["folder"] = folder
        if channels:
            f["channels"] = channels
        if seed is not None:
            f["seed"] = seed
        f["tag"] = tag or self.name
        return f


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


# --------------------------------------------------------------------------------------------------
# shots: the clips of an edit, whatever it was read from
# --------------------------------------------------------------------------------------------------
@dataclass
class Shot:
    """One picture clip: ``frames`` long at ``record`` (frames from the timeline's start), showing
    ``video`` from ``src_in`` (frames into the file). ``skip`` says why it is not scored."""

    number: int
    name: str
    source: str
    video: Path | None
    src_in: int
    record: int
    frames: int
    markers: list[str] = field(default_factory=list)
    skip: str | None = None


@dataclass
class Edit:
    """A timeline reduced to what scoring needs; ``otio`` keeps the OTIO timeline it was read from."""

    title: str
    rate: Fraction
    start: int  # the timeline's first frame as timecode (record-in of frame 0), in frames
    drop: bool
    shots: list[Shot]
    otio: Any = None
    warnings: list[str] = field(default_factory=list)

    def tc(self, record: int) -> str:
        return frames_to_timecode(self.start + record, self.rate, self.drop)

    def length(self) -> int:
        return max((s.record + s.frames for s in self.shots), default=0)


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


def _otio():
    try:
        import opentimelineio as otio
    except ImportError:
        raise RuntimeError(OTIO_HELP) from None
    return otio


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
    otio = _otio()
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
    otio = _otio()
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


def plan(edit: Edit, *, marker: str | None = None, sample_rate: int = 48000, prefix: str | None = None,
         project: str | None = None, marker_captions: bool = False) -> tuple[list[Cue], list[dict[str, Any]]]:
    """The cues of an edit's shots (only those with a marker containing ``marker``, when given: ``""``
    means any marker), and the shots skipped, with why."""
    r = edit.rate
    prefix = prefix or edit.title.replace(" ", "_") or "cue"
    cues: list[Cue] = []
    skipped: list[dict[str, Any]] = []
    for shot in edit.shots:
        if shot.skip:
            skipped.append({"event": shot.number, "why": shot.skip})
            continue
        if marker is not None:
            hits = [m for m in shot.markers if marker.lower() in m.lower()]
            if not hits:
                skipped.append({"event": shot.number, "why": "no marker" + (f" with {marker!r}" if marker else "")})
                continue
        assert shot.video is not None
        in_s = frames_to_seconds(shot.src_in, r)
        out_s = in_s + frames_to_seconds(shot.frames, r)
        caption = shot.markers[0] if marker_captions and shot.markers else None
        cues.append(Cue(name=f"{prefix}-{shot.number:03d}", video=str(shot.video), in_seconds=float(in_s),
                        out_seconds=float(out_s), frames=shot.frames, fps=rate_string(r),
                        record_in=edit.tc(shot.record), record_out=edit.tc(shot.record + shot.frames),
                        event=shot.number, expected_samples=samples_for_frames(shot.frames, r, sample_rate),
                        record_frame=shot.record, project=project or edit.title, scene=shot.name, caption=caption))
    return cues, skipped


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
def run_cues(client: Client, cues: list[Cue], *, caption: str = "", mode: str = "vision", folder: str | None = None,
             sample_rate: int = 48000, channels: int | None = None, seed: int | None = None,
             timeout: float | None = None, progress: Callable[[str], None] | None = None) -> list[Cue]:
    """Submit every cue (the daemon queues and batches them), then wait for each; fills ``cue.result``."""
    say = progress or (lambda m: None)
    jobs: list[tuple[Cue, Any]] = []
    for cue in cues:
        try:
            job = client.submit("score", **cue.fields(caption=caption, mode=mode, folder=folder,
                                                       sample_rate=sample_rate, channels=channels, seed=seed))
        except BadRequest as exc:
            cue.result = {"status": "rejected", "error": str(exc), "field": exc.field}
            say(f"{cue.name}: rejected: {exc}")
            continue
        cue.result = {"status": "queued", "job_id": job.id}
        jobs.append((cue, job))
        say(f"{cue.name}: queued as {job.id}")
    for cue, job in jobs:
        try:
            res = job.wait(timeout=timeout)
        except ClientError as exc:
            cue.result.update(status="failed", error=str(exc), field=getattr(exc, "field", None))
            say(f"{cue.name}: failed: {exc}")
            continue
        except TimeoutError as exc:
            cue.result.update(status="timeout", error=str(exc))
            continue
        samples, rate, ch = wav_frames(res.path)
        cue.result.update(status="done", path=res.path, sidecar=res.sidecar, seconds=res.seconds,
                          sample_rate=rate, channels=ch, samples=samples, seed=res.seed,
                          exact=(samples == cue.expected_samples))
        say(f"{cue.name}: {res.path} ({samples} samples{'' if samples == cue.expected_samples else ', NOT exact'})")
    return cues


def report(cues: list[Cue], skipped: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    events = [asdict(c) for c in cues]
    ok = bool(cues) and all(c.result.get("status") == "done" and c.result.get("exact") for c in cues)
    return {**meta, "ok": ok, "cues": events, "skipped": skipped, "written": time.time()}


def done_cues(cues: list[Cue]) -> list[Cue]:
    return [c for c in cues if c.result.get("status") == "done"]


# --------------------------------------------------------------------------------------------------
# writing: OTIO
# --------------------------------------------------------------------------------------------------
def _lanes(cues: list[Cue]) -> list[list[Cue]]:
    """Cues in record order, split into lanes (tracks) so none overlaps another in its lane."""
    lanes: list[list[Cue]] = []
    for c in sorted(cues, key=lambda c: c.record_frame):
        for lane in lanes:
            last = lane[-1]
            if last.record_frame + last.frames <= c.record_frame:
                lane.append(c)
                break
        else:
            lanes.append([c])
    return lanes


def otio_timeline(edit: Edit, cues: list[Cue]) -> Any:
    """The edit as an OTIO timeline (a copy of the one read, or one built from the EDL) with the done
    cues on new audio track(s) named ``unimoe score``, each clip at its shot's exact record range."""
    otio = _otio()
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
    for n, lane in enumerate(_lanes(done_cues(cues)), 1):
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
    otio = _otio()
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


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------
def add_run_options(ap: argparse.ArgumentParser) -> None:
    """The options of a scoring run shared with ``unimoe-edl-score``."""
    ap.add_argument("--media", type=Path, action="append", default=[], help="folder to look for sources in")
    ap.add_argument("--caption", default="", help="what the score should be like")
    ap.add_argument("--mode", choices=("vision", "reference"), default="vision")
    ap.add_argument("--folder", help="output folder for the audio (default: the daemon's)")
    ap.add_argument("--sample-rate", type=int, default=48000)
    ap.add_argument("--channels", type=int, choices=(1, 2))
    ap.add_argument("--seed", type=int)
    ap.add_argument("--report", type=Path, help="JSON report path (default: stdout when no other output)")
    ap.add_argument("--timeout", type=float, help="seconds to wait for each cue")
    ap.add_argument("--dry-run", action="store_true", help="print the planned requests and exit")
    ap.add_argument("--no-start", action="store_true", help="do not start a daemon when none is running")
    ap.add_argument("--otio", type=Path, dest="otio_out", help="also write the timeline with the score as OTIO")
    ap.add_argument("--mlt", type=Path, help="also write an MLT XML file (Shotcut, Kdenlive, melt)")


def write_report(rep: dict[str, Any], path: Path | None) -> None:
    text = json.dumps(rep, indent=2)
    if path is None:
        print(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


def execute(prog: str, edit: Edit | None, cues: list[Cue], skipped: list[dict[str, Any]], args: argparse.Namespace,
            meta: dict[str, Any], otio_out: Path | None = None, report_default_stdout: bool = True) -> int:
    """Run the cues through the daemon and write the outputs; the exit status."""
    if args.dry_run:
        print(json.dumps(report(cues, skipped, **meta, dry_run=True), indent=2))
        return 0
    if not cues:
        print(f"{prog}: nothing to score ({len(skipped)} shots skipped)", file=sys.stderr)
        for s in skipped:
            print(f"  event {s['event']}: {s['why']}", file=sys.stderr)
        return 2
    try:
        client = Client(load_settings(), auto_start=not args.no_start)
    except DaemonUnavailable as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    with client:
        run_cues(client, cues, caption=args.caption, mode=args.mode, folder=args.folder,
                 sample_rate=args.sample_rate, channels=args.channels, seed=args.seed, timeout=args.timeout,
                 progress=lambda m: print(m, file=sys.stderr, flush=True))
    rep = report(cues, skipped, **meta)
    outputs: dict[str, str] = {}
    if edit is not None:
        try:
            if otio_out is not None:
                outputs["otio"] = str(write_otio(edit, cues, otio_out))
            if args.mlt is not None:
                from .mlt import write_mlt

                outputs["mlt"] = str(write_mlt(edit, cues, args.mlt))
        except (RuntimeError, ValueError, OSError) as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            rep["ok"] = False
            rep["error"] = str(exc)
    if outputs:
        rep["outputs"] = outputs
        for kind, path in outputs.items():
            print(f"{prog}: wrote {kind}: {path}", file=sys.stderr)
    if args.report is not None or report_default_stdout or not outputs:
        write_report(rep, args.report)
    return 0 if rep["ok"] else 1


def main(argv: list[str] | None = None, prog: str = "unimoe-score-timeline") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("timeline", type=Path, help="OTIO file, CMX3600 EDL, or a format an OTIO adapter reads")
    ap.add_argument("-o", "--output", type=Path, help="write the timeline with the score: OTIO (.otio, .otioz, .otiod "
                    "or an adapter's suffix), or MLT (.mlt)")
    ap.add_argument("--rate", help="timeline frame rate (needed for an EDL; OTIO: from the clips)")
    ap.add_argument("--track", help="picture track to score: its name or 1-based number (default: the first)")
    ap.add_argument("--marker", nargs="?", const="", default=None, metavar="TEXT",
                    help="score only clips carrying a marker (whose name contains TEXT)")
    ap.add_argument("--marker-captions", action="store_true", help="a marked clip's marker name is its caption")
    ap.add_argument("--source-start", help="EDL: clips' start timecode or 'auto' (ffprobe, the default); OTIO: "
                    "'media' (the media's available range, the default), 'auto' or a timecode")
    ap.add_argument("--project", help="project name written into the files' iXML (default: the timeline's name)")
    add_run_options(ap)
    args = ap.parse_args(argv)
    if args.output is not None and args.output.suffix.lower() == ".mlt":  # -o x.mlt: the MLT file is the output
        if args.mlt is not None:
            ap.error("-o OUT.mlt and --mlt: give one")
        args.mlt, args.output = args.output, None
    out = args.output or args.otio_out
    if out is None and args.mlt is None and args.report is None and not args.dry_run:
        ap.error("give -o OUT.otio, --mlt OUT.mlt or --report OUT.json")
    try:
        edit = read_edit(args.timeline.resolve(), args.rate, args.track, [m.resolve() for m in args.media],
                         args.source_start)
        cues, skipped = plan(edit, marker=args.marker, sample_rate=args.sample_rate, project=args.project,
                             prefix=args.timeline.stem, marker_captions=args.marker_captions)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    for w in edit.warnings:
        print(f"{prog}: warning: {w}", file=sys.stderr)
    meta = {"source": str(args.timeline), "rate": rate_string(edit.rate), "start": edit.tc(0),
            "sample_rate": args.sample_rate, "caption": args.caption, "mode": args.mode, "warnings": edit.warnings}
    return execute(prog, edit, cues, skipped, args, meta, otio_out=out, report_default_stdout=False)


if __name__ == "__main__":
    sys.exit(main())
