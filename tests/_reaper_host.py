"""A stand-in for REAPER that runs a ReaScript the way REAPER does.

REAPER is not installable here, so this host implements the ``RPR_*`` functions the script calls with
REAPER's Python conventions (functions with output parameters return a list, return value first; track,
item, take and source handles are opaque strings such as ``(MediaTrack*)0x...``), executes the script file
as ``__main__`` in a namespace holding those functions, and runs the code strings given to ``RPR_defer``
in that namespace from its own loop at REAPER's defer rate (about 30 per second). Unknown handles raise,
as a stale pointer would misbehave in REAPER.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFER_HZ = 30.0


@dataclass
class Track:
    name: str = ""
    items: list[str] = field(default_factory=list)


@dataclass
class Item:
    track: str
    position: float = 0.0
    length: float = 0.0
    takes: list[str] = field(default_factory=list)
    selected: bool = False


@dataclass
class Take:
    item: str
    source: str = ""
    name: str = ""
    offset: float = 0.0  # D_STARTOFFS: seconds into the source where the item starts
    playrate: float = 1.0  # D_PLAYRATE


class FakeReaper:
    def __init__(self, *, selection=(0.0, 0.0), srate=48000.0, use_srate=1.0,
                 tempo_map=((0.0, 120.0),), media_folder: str = "", answers: str | None = None,
                 ext_state: dict | None = None):
        self.selection = selection
        self.srate, self.use_srate = srate, use_srate
        self.tempo_map = sorted(tempo_map)  # (time, bpm) markers, square changes
        self.media_folder = media_folder
        self.answers = answers
        self.tracks: list[str] = []
        self.objects: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.console: list[str] = []
        self.boxes: list[str] = []
        self.undo: list[str] = []
        self.undo_depth = 0
        self.cursor = 7.5
        self.deferred: list[str] = []
        self.defer_calls = 0
        self._addr = itertools.count(0x7F3A1C2B4000, 0x1F0)
        self.ns: dict[str, Any] = {}
        # the project's extended state, {section: {key: value}} (saved with the .rpp; a test passes one
        # host's dict to the next to stand for closing and reopening the project)
        self.ext_state: dict[str, dict[str, str]] = ext_state if ext_state is not None else {}

    # -- handles --------------------------------------------------------------------------------
    def _new(self, kind: str, obj: Any) -> str:
        h = f"({kind}*)0x{next(self._addr):016X}"
        self.objects[h] = obj
        return h

    def _get(self, handle: Any, kind: type) -> Any:
        obj = self.objects.get(handle) if isinstance(handle, str) else None
        if not isinstance(obj, kind):
            raise TypeError(f"not a {kind.__name__} handle: {handle!r}")
        return obj

    # -- project ----------------------------------------------------------------------------------
    def RPR_GetSet_LoopTimeRange(self, isSet, isLoop, start, end, allowautoseek):
        return [isSet, isLoop, float(self.selection[0]), float(self.selection[1]), allowautoseek]

    def RPR_GetSetProjectInfo(self, proj, desc, value, is_set):
        return {"PROJECT_SRATE": self.srate, "PROJECT_SRATE_USE": self.use_srate}[desc]

    def RPR_GetProjectPath(self, buf, buf_sz):
        return [self.media_folder, buf_sz]

    def _bpm_at(self, t: float) -> float:
        bpm = self.tempo_map[0][1]
        for at, b in self.tempo_map:
            if at <= t + 1e-9:
                bpm = b
        return bpm

    def RPR_TimeMap2_GetDividedBpmAtTime(self, proj, time_s):
        return self._bpm_at(float(time_s))

    def RPR_TimeMap_GetTimeSigAtTime(self, proj, time_s, num, denom, tempo):
        return [proj, time_s, 4, 4, self._bpm_at(float(time_s))]

    def RPR_Master_GetTempo(self):
        return self.tempo_map[0][1]

    def RPR_GetCursorPosition(self):
        return self.cursor

    def RPR_SetEditCurPos(self, time_s, moveview, seekplay):
        self.cursor = float(time_s)

    def RPR_time_precise(self):
        return time.perf_counter()

    # -- project extended state (REAPER API: SetProjExtState / GetProjExtState / EnumProjExtState) -----
    def RPR_SetProjExtState(self, proj, extname, key, value):
        # "If key is NULL or "", all extended data for that section will be deleted. If val is NULL or "",
        # the data previously associated with that key will be deleted."
        section = self.ext_state.setdefault(str(extname), {})
        if not key:
            section.clear()
        elif not value:
            section.pop(str(key), None)
        else:
            section[str(key)] = str(value)
        return 1

    def RPR_GetProjExtState(self, proj, extname, key, valOutNeedBig, valOutNeedBig_sz):
        value = self.ext_state.get(str(extname), {}).get(str(key), "")
        return [len(value), proj, extname, key, value, valOutNeedBig_sz]

    def RPR_EnumProjExtState(self, proj, extname, idx, keyOutOptional, keyOutOptional_sz, valOutOptional,
                             valOutOptional_sz):
        items = list(self.ext_state.get(str(extname), {}).items())
        if not 0 <= idx < len(items):
            return [False, proj, extname, idx, "", keyOutOptional_sz, "", valOutOptional_sz]
        key, value = items[idx]
        return [True, proj, extname, idx, key, keyOutOptional_sz, value, valOutOptional_sz]

    # -- dialogs ----------------------------------------------------------------------------------
    def RPR_GetUserInputs(self, title, num_inputs, captions_csv, retvals_csv, retvals_csv_sz):
        if self.answers is None:
            return [0, title, num_inputs, captions_csv, retvals_csv, retvals_csv_sz]
        return [1, title, num_inputs, captions_csv, self.answers, retvals_csv_sz]

    def RPR_ShowConsoleMsg(self, msg):
        self.console.append(msg)

    def RPR_ShowMessageBox(self, msg, title, type_):
        self.boxes.append(msg)
        return 1

    # -- tracks, items, takes ---------------------------------------------------------------------
    def RPR_CountTracks(self, proj):
        return len(self.tracks)

    def RPR_InsertTrackAtIndex(self, idx, wantDefaults):
        self.tracks.insert(int(idx), self._new("MediaTrack", Track()))

    def RPR_GetTrack(self, proj, trackidx):
        return self.tracks[int(trackidx)]

    def RPR_GetSetMediaTrackInfo_String(self, tr, parmname, stringNeedBig, setNewValue):
        t = self._get(tr, Track)
        if parmname != "P_NAME":
            raise ValueError(parmname)
        if setNewValue:
            t.name = stringNeedBig
        return [True, tr, parmname, t.name, setNewValue]

    def RPR_AddMediaItemToTrack(self, tr):
        self._get(tr, Track).items.append(h := self._new("MediaItem", Item(track=tr)))
        return h

    def RPR_AddTakeToMediaItem(self, item):
        self._get(item, Item).takes.append(h := self._new("MediaItem_Take", Take(item=item)))
        return h

    def RPR_PCM_Source_CreateFromFile(self, filename):
        if not Path(filename).is_file():
            return "(PCM_source*)0x0000000000000000"
        h = self._new("PCM_source", str(filename))
        self.sources[h] = str(filename)
        return h

    def RPR_SetMediaItemTake_Source(self, take, source):
        self._get(take, Take).source = self._get(source, str)
        return True

    def RPR_GetSetMediaItemTakeInfo_String(self, take, parmname, stringNeedBig, setNewValue):
        tk = self._get(take, Take)
        if setNewValue:
            tk.name = stringNeedBig
        return [True, take, parmname, tk.name, setNewValue]

    def RPR_SetMediaItemInfo_Value(self, item, parmname, newvalue):
        it = self._get(item, Item)
        setattr(it, {"D_POSITION": "position", "D_LENGTH": "length"}[parmname], float(newvalue))
        return True

    def RPR_GetMediaItemInfo_Value(self, item, parmname):
        it = self._get(item, Item)
        return float({"D_POSITION": it.position, "D_LENGTH": it.length, "B_UISEL": float(it.selected)}[parmname])

    def RPR_GetMediaItemTakeInfo_Value(self, take, parmname):
        tk = self._get(take, Take)
        return float({"D_STARTOFFS": tk.offset, "D_PLAYRATE": tk.playrate}[parmname])

    def RPR_CountSelectedMediaItems(self, proj):
        return len(self._selected())

    def RPR_GetSelectedMediaItem(self, proj, selitem):
        sel = self._selected()
        return sel[int(selitem)] if int(selitem) < len(sel) else "(MediaItem*)0x0000000000000000"

    def _selected(self) -> list[str]:
        # REAPER orders selected items by track, then position
        return [h for tr in self.tracks for h in sorted(self._get(tr, Track).items,
                                                         key=lambda i: self._get(i, Item).position)
                if self._get(h, Item).selected]

    def RPR_GetActiveTake(self, item):
        takes = self._get(item, Item).takes
        return takes[0] if takes else "(MediaItem_Take*)0x0000000000000000"

    def RPR_GetMediaItemTake_Source(self, take):
        path = self._get(take, Take).source
        return next(h for h, p in self.sources.items() if p == path)

    def RPR_GetMediaSourceFileName(self, source, filenamebuf, filenamebuf_sz):
        # void GetMediaSourceFileName(PCM_source*, char* filenamebuf, int sz): Python gets the out params
        return [source, self._get(source, str), filenamebuf_sz]

    def RPR_GetMediaItem_Track(self, item):
        return self._get(item, Item).track

    def RPR_UpdateItemInProject(self, item):
        self._get(item, Item)

    def RPR_UpdateArrange(self):
        pass

    def RPR_Undo_BeginBlock(self):
        self.undo_depth += 1

    def RPR_Undo_EndBlock(self, descchange, extraflags):
        self.undo_depth -= 1
        self.undo.append(descchange)

    def RPR_defer(self, code):
        self.defer_calls += 1
        self.deferred.append(code)

    # -- running a script as REAPER does ----------------------------------------------------------
    def run_script(self, path: Path) -> dict[str, Any]:
        """Execute ``path`` as ``__main__`` with the RPR_ functions in its globals (REAPER's
        ``from reaper_python import *``)."""
        self.ns = {"__name__": "__main__", "__file__": str(path), "__builtins__": __builtins__}
        self.ns.update({k: getattr(self, k) for k in dir(self) if k.startswith("RPR_")})
        exec(compile(Path(path).read_text(), str(path), "exec"), self.ns)
        return self.ns

    def run_deferred(self, *, timeout: float) -> float:
        """REAPER's main loop: run each deferred string in the script's namespace, ~30 per second, until
        none is left; returns the seconds spent running the callbacks themselves (the UI-thread time)."""
        busy = 0.0
        deadline = time.monotonic() + timeout
        while self.deferred:
            if time.monotonic() > deadline:
                raise AssertionError(f"still deferring after {timeout} s; console: {''.join(self.console)[-2000:]}")
            code = self.deferred.pop(0)
            time.sleep(1.0 / DEFER_HZ)
            t0 = time.perf_counter()
            eval(code, self.ns)
            busy += time.perf_counter() - t0
        return busy

    # -- queries for tests ------------------------------------------------------------------------
    def track(self, handle: str) -> Track:
        return self._get(handle, Track)

    def item(self, handle: str) -> Item:
        return self._get(handle, Item)

    def take(self, handle: str) -> Take:
        return self._get(handle, Take)
