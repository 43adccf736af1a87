"""A stand-in for DaVinci Resolve's scripting API, to run a Resolve script exactly as Resolve would.

Resolve does not run here (no Linux build for a GPU-less server), so this follows Resolve's scripting README
(Developer/Scripting/README.txt, 18.5+): only the documented objects and methods exist, with their documented
arguments; anything else raises ``UndocumentedCall`` (an attribute no README lists, an unknown clipInfo key or
import option, a missing subtype for AAF/EDL exports, an audio track without its sub-type), and calls Resolve
answers with a failure value (None/False/[]) answer so here too. Every call is logged.

    python tests/_resolve_host.py SCRIPT PROJECT.json STATE_OUT.json

builds a project from PROJECT.json (one timeline: name, fps, start frame, video clips), runs SCRIPT as
``__main__`` with the ``resolve`` global (how Workspace > Scripts runs a Python script), then writes the
project's timelines, tracks and items to STATE_OUT.json, with the call log.
"""
from __future__ import annotations

import json
import runpy
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

CALLS: list[str] = []


class UndocumentedCall(AttributeError):
    pass


class _Api:
    """Attribute access to anything not defined on the class is an undocumented call."""

    def __getattr__(self, name: str) -> Any:
        raise UndocumentedCall(f"{type(self).__name__}.{name} is not in Resolve's scripting API")

    def _log(self, call: str) -> None:
        CALLS.append(f"{type(self).__name__}.{call}")


def _media_frames(path: str, fps: Fraction) -> int:
    from unimoe_audio.integrations.layout import media_frames

    n = media_frames(path, fps)
    if n is None:
        raise RuntimeError(f"stand-in cannot measure {path}")
    return n


class MediaPoolItem(_Api):
    def __init__(self, path: str, fps: Fraction):
        self.path, self.fps = str(Path(path).resolve()), fps
        self.frames = _media_frames(self.path, fps)

    def GetName(self) -> str:
        self._log("GetName()")
        return Path(self.path).name

    def GetClipProperty(self, propertyName: str | None = None) -> Any:
        self._log(f"GetClipProperty({propertyName!r})")
        props = {"File Path": self.path, "Clip Name": Path(self.path).name, "Frames": str(self.frames),
                 "FPS": str(float(self.fps))}
        return props if propertyName is None else props.get(propertyName, "")


class Folder(_Api):
    def __init__(self, name: str):
        self.name, self.clips = name, []

    def GetName(self) -> str:
        return self.name

    def GetClipList(self) -> list[MediaPoolItem]:
        self._log("GetClipList()")
        return list(self.clips)

    def GetSubFolderList(self) -> list["Folder"]:
        return []


class TimelineItem(_Api):
    def __init__(self, item: MediaPoolItem, start: int, duration: int, left: int, markers: list[str] | None = None):
        self.item, self.start, self.duration, self.left, self.markers = item, start, duration, left, markers or []

    def GetName(self) -> str:
        return Path(self.item.path).name

    def GetStart(self) -> int:
        return self.start

    def GetEnd(self) -> int:
        return self.start + self.duration

    def GetDuration(self) -> int:
        return self.duration

    def GetLeftOffset(self) -> int:
        return self.left

    def GetMediaPoolItem(self) -> MediaPoolItem:
        return self.item


AUDIO_SUBTYPES = {"mono", "stereo", "5.1", "5.1film", "7.1", "7.1film"} | {f"adaptive{n}" for n in range(1, 25)}


class Timeline(_Api):
    def __init__(self, name: str, fps: Fraction, start: int):
        self.name, self.fps, self.start = name, fps, start
        self.tracks: dict[str, list[list[TimelineItem]]] = {"video": [[]], "audio": [[]], "subtitle": []}
        self.names: dict[str, list[str]] = {"video": ["Video 1"], "audio": ["Audio 1"], "subtitle": []}

    def GetName(self) -> str:
        self._log("GetName()")
        return self.name

    def GetStartFrame(self) -> int:
        self._log("GetStartFrame()")
        return self.start

    def GetEndFrame(self) -> int:
        return max([self.start] + [i.GetEnd() for t in self.tracks.values() for tr in t for i in tr])

    def _check_type(self, trackType: str) -> None:
        if trackType not in ("video", "audio", "subtitle"):
            raise UndocumentedCall(f"track type {trackType!r} (documented: 'video', 'audio', 'subtitle')")

    def GetTrackCount(self, trackType: str) -> int:
        self._log(f"GetTrackCount({trackType!r})")
        self._check_type(trackType)
        return len(self.tracks[trackType])

    def GetItemListInTrack(self, trackType: str, index: int) -> list[TimelineItem]:
        self._check_type(trackType)
        return sorted(self.tracks[trackType][index - 1], key=lambda i: i.start)

    def GetTrackName(self, trackType: str, trackIndex: int) -> str:
        self._check_type(trackType)
        return self.names[trackType][trackIndex - 1]

    def SetTrackName(self, trackType: str, trackIndex: int, name: str) -> bool:
        self._log(f"SetTrackName({trackType!r}, {trackIndex}, {name!r})")
        self._check_type(trackType)
        if not 1 <= trackIndex <= len(self.names[trackType]):
            return False
        self.names[trackType][trackIndex - 1] = name
        return True

    def AddTrack(self, trackType: str, optionalSubTrackType: str | None = None) -> bool:
        self._log(f"AddTrack({trackType!r}, {optionalSubTrackType!r})")
        self._check_type(trackType)
        if trackType == "audio" and optionalSubTrackType not in AUDIO_SUBTYPES:
            raise UndocumentedCall(f"AddTrack('audio', {optionalSubTrackType!r}): an audio track needs its sub-type "
                                   f"({', '.join(sorted(AUDIO_SUBTYPES)[:6])} ...)")
        self.tracks[trackType].append([])
        self.names[trackType].append(f"{trackType.title()} {len(self.names[trackType]) + 1}")
        return True

    def GetSetting(self, settingName: str = "") -> Any:
        self._log(f"GetSetting({settingName!r})")
        return {"timelineFrameRate": str(float(self.fps))}.get(settingName, "")

    def Export(self, fileName: str, exportType: int, exportSubtype: int | None = None) -> bool:
        self._log(f"Export({Path(fileName).name!r}, {exportType}, {exportSubtype})")
        if exportType not in Resolve.EXPORT_TYPES.values():
            raise UndocumentedCall(f"export type {exportType!r}")
        if exportType in (Resolve.EXPORT_AAF, Resolve.EXPORT_EDL) and exportSubtype is None:
            raise UndocumentedCall("exportSubtype is required for EXPORT_AAF and EXPORT_EDL")
        if exportType != Resolve.EXPORT_OTIO:
            return False  # the stand-in writes OTIO only (what the script uses)
        import opentimelineio as otio

        ot, r = otio.opentime, float(self.fps)
        tl = otio.schema.Timeline(name=self.name, global_start_time=ot.RationalTime(self.start, r))
        for kind, otio_kind in (("video", otio.schema.TrackKind.Video), ("audio", otio.schema.TrackKind.Audio)):
            for n, items in enumerate(self.tracks[kind]):
                tr = otio.schema.Track(name=self.names[kind][n], kind=otio_kind)
                pos = self.start
                for it in sorted(items, key=lambda i: i.start):
                    if it.start > pos:
                        tr.append(otio.schema.Gap(source_range=ot.TimeRange(duration=ot.RationalTime(it.start - pos, r))))
                    ref = otio.schema.ExternalReference(target_url=it.item.path, available_range=ot.TimeRange(
                        ot.RationalTime(0, r), ot.RationalTime(it.item.frames, r)))
                    tr.append(otio.schema.Clip(name=it.GetName(), media_reference=ref,
                                               source_range=ot.TimeRange(ot.RationalTime(it.left, r),
                                                                         ot.RationalTime(it.duration, r)),
                                               markers=[otio.schema.Marker(name=m) for m in it.markers]))
                    pos = it.GetEnd()
                tl.tracks.append(tr)
        otio.adapters.write_to_file(tl, fileName)
        return True


CLIP_INFO_KEYS = {"mediaPoolItem", "startFrame", "endFrame", "mediaType", "trackIndex", "recordFrame"}
IMPORT_OPTIONS = {"timelineName", "importSourceClips", "sourceClipsPath", "sourceClipsFolders", "interlaceProcessing"}


class MediaPool(_Api):
    def __init__(self, project: "Project"):
        self.project, self.root = project, Folder("Master")

    def GetRootFolder(self) -> Folder:
        return self.root

    def GetCurrentFolder(self) -> Folder:
        return self.root

    def ImportMedia(self, items: list[str]) -> list[MediaPoolItem]:
        self._log(f"ImportMedia([{len(items)} paths])")
        if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
            raise UndocumentedCall("ImportMedia takes a list of file paths")
        got = [MediaPoolItem(p, self.project.fps) for p in items if Path(p).is_file()]
        self.root.clips.extend(got)
        return got

    def AppendToTimeline(self, clipInfos: list[dict[str, Any]]) -> list[TimelineItem]:
        self._log(f"AppendToTimeline({[{k: v for k, v in c.items() if k != 'mediaPoolItem'} for c in clipInfos]})")
        tl = self.project.current
        out = []
        for info in clipInfos:
            if not isinstance(info, dict) or set(info) - CLIP_INFO_KEYS:
                raise UndocumentedCall(f"clipInfo keys {sorted(set(info) - CLIP_INFO_KEYS)} (documented: {sorted(CLIP_INFO_KEYS)})")
            item = info["mediaPoolItem"]
            if not isinstance(item, MediaPoolItem):
                raise UndocumentedCall("clipInfo's mediaPoolItem must be a MediaPoolItem")
            kind = {1: "video", 2: "audio"}.get(info.get("mediaType", 1))
            if kind is None:
                raise UndocumentedCall(f"mediaType {info.get('mediaType')!r} (1: video only, 2: audio only)")
            first, last = int(info["startFrame"]), int(info["endFrame"])  # endFrame inclusive
            index = int(info.get("trackIndex", 1))
            record = int(info.get("recordFrame", tl.GetEndFrame()))
            if not 1 <= index <= len(tl.tracks[kind]) or not 0 <= first <= last < item.frames or record < tl.start:
                return []  # Resolve answers a failed append with an empty list
            new = TimelineItem(item, record, last - first + 1, first)
            if any(i.start < new.GetEnd() and new.start < i.GetEnd() for i in tl.tracks[kind][index - 1]):
                return []
            tl.tracks[kind][index - 1].append(new)
            out.append(new)
        return out

    def ImportTimelineFromFile(self, filePath: str, importOptions: dict[str, Any] | None = None) -> Timeline | None:
        self._log(f"ImportTimelineFromFile({Path(filePath).name!r}, {importOptions})")
        opts = importOptions or {}
        if set(opts) - IMPORT_OPTIONS:
            raise UndocumentedCall(f"import options {sorted(set(opts) - IMPORT_OPTIONS)}")
        import opentimelineio as otio

        try:
            src = otio.adapters.read_from_file(filePath)
        except Exception:  # noqa: BLE001
            return None
        from unimoe_audio.integrations.layout import layout_from_otio

        lay = layout_from_otio(src, self.project.fps)
        tl = Timeline(opts.get("timelineName") or src.name, self.project.fps, lay.start)
        tl.tracks = {"video": [], "audio": [], "subtitle": []}
        tl.names = {"video": [], "audio": [], "subtitle": []}
        for lane in lay.lanes:
            tl.tracks[lane.kind].append([TimelineItem(MediaPoolItem(p.path, self.project.fps), lay.start + p.record,
                                                      p.frames, p.src_in) for p in lane.items if p.path])
            tl.names[lane.kind].append(lane.name)
        self.project.timelines.append(tl)
        return tl


class Project(_Api):
    def __init__(self, name: str, fps: Fraction):
        self.name, self.fps = name, fps
        self.pool = MediaPool(self)
        self.timelines: list[Timeline] = []
        self.current: Timeline | None = None

    def GetName(self) -> str:
        return self.name

    def GetMediaPool(self) -> MediaPool:
        self._log("GetMediaPool()")
        return self.pool

    def GetCurrentTimeline(self) -> Timeline | None:
        self._log("GetCurrentTimeline()")
        return self.current

    def SetCurrentTimeline(self, timeline: Timeline) -> bool:
        self.current = timeline
        return True

    def GetTimelineCount(self) -> int:
        return len(self.timelines)

    def GetTimelineByIndex(self, idx: int) -> Timeline | None:
        return self.timelines[idx - 1] if 1 <= idx <= len(self.timelines) else None


class ProjectManager(_Api):
    def __init__(self, project: Project):
        self.project = project

    def GetCurrentProject(self) -> Project:
        self._log("GetCurrentProject()")
        return self.project


class Resolve(_Api):
    EXPORT_TYPES = {name: n for n, name in enumerate((
        "EXPORT_AAF", "EXPORT_DRT", "EXPORT_EDL", "EXPORT_FCP_7_XML", "EXPORT_FCPXML_1_8", "EXPORT_FCPXML_1_9",
        "EXPORT_FCPXML_1_10", "EXPORT_HDR_10_PROFILE_A", "EXPORT_HDR_10_PROFILE_B", "EXPORT_TEXT_CSV",
        "EXPORT_TEXT_TAB", "EXPORT_DOLBY_VISION_VER_2_9", "EXPORT_DOLBY_VISION_VER_4_0",
        "EXPORT_DOLBY_VISION_VER_5_1", "EXPORT_OTIO", "EXPORT_ALE", "EXPORT_ALE_CDL"))}
    EXPORT_SUBTYPES = {name: 100 + n for n, name in enumerate((
        "EXPORT_AAF_NEW", "EXPORT_AAF_EXISTING", "EXPORT_NONE", "EXPORT_CDL", "EXPORT_SDL", "EXPORT_MISSING_CLIPS"))}
    locals().update(EXPORT_TYPES)
    locals().update(EXPORT_SUBTYPES)

    def __init__(self, project: Project):
        self.pm = ProjectManager(project)

    def GetProjectManager(self) -> ProjectManager:
        self._log("GetProjectManager()")
        return self.pm

    def GetVersionString(self) -> str:
        return "19.0.0 (stand-in)"


def build(spec: dict[str, Any]) -> Resolve:
    fps = Fraction(spec["fps"])
    project = Project(spec.get("project", "unimoe test"), fps)
    tl = Timeline(spec["timeline"], fps, int(spec["start"]))
    for c in spec["clips"]:
        item = MediaPoolItem(c["path"], fps)
        project.pool.root.clips.append(item)
        tl.tracks["video"][0].append(TimelineItem(item, tl.start + c["record"], c["frames"], c["src_in"], c.get("markers")))
    project.timelines.append(tl)
    project.current = tl
    return Resolve(project)


def state(resolve: Resolve) -> dict[str, Any]:
    p = resolve.pm.project
    return {"timelines": [{"name": t.name, "start": t.start, "tracks": {
        kind: [{"name": t.names[kind][n], "items": [{"path": i.item.path, "start": i.start, "duration": i.duration,
                                                      "left": i.left} for i in sorted(items, key=lambda i: i.start)]}
               for n, items in enumerate(t.tracks[kind])] for kind in ("video", "audio")}} for t in p.timelines],
        "pool": [i.path for i in p.pool.root.clips], "calls": CALLS}


if __name__ == "__main__":
    script, spec_path, out_path = sys.argv[1:4]
    resolve = build(json.loads(Path(spec_path).read_text()))
    error = None
    try:
        # Workspace > Scripts: the file run as __main__ with Resolve's globals
        runpy.run_path(script, init_globals={"resolve": resolve, "bmd": None}, run_name="__main__")
    except UndocumentedCall as exc:
        error = f"undocumented: {exc}"
    Path(out_path).write_text(json.dumps({**state(resolve), "error": error}, indent=2))
    sys.exit(3 if error else 0)
