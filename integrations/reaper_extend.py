"""REAPER ReaScript (Python): "Extend selected item": continue the selected item's music to the end of the
time selection, and put the new part butted to it on the same track.

Install as reaper_unimoe.py (Actions > Load ReaScript...). Select one audio item, make a time selection
that ends where the music should end (after the item), run the action and give a caption. The daemon
continues the item's source file from the point where the item ends in it (its take offset plus its
length: what you hear stops there), the model hearing that music as the start of its own; the new part
(``new_only``) is exactly the gap from the item's end to the selection's end at the project's rate and
goes on the item's track as a new item starting where the selected one ends, so the two play as one.
With the project's tempo, the join falls on a bar line of the source; the new item then starts at that
bar line inside the selected item, which is trimmed to it (in the same undo step).

The planning is plain functions (:func:`plan_extend`, :func:`insert_after`) over the ``RPR_`` functions.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

try:
    from unimoe_audio.integrations.reaper_unimoe import (
        TITLE, Session, project_folder, project_rate, project_tempo, selection_samples,
        time_selection)
except ImportError as _exc:  # pragma: no cover - only inside a misconfigured REAPER
    _IMPORT_ERROR: Exception | None = _exc
    Session = object  # type: ignore[assignment,misc]
else:
    _IMPORT_ERROR = None

BEATS_PER_BAR = 4


@dataclass
class ExtendPlan:
    kind: str
    fields: dict[str, Any]
    track: Any  # the selected item's track handle
    item: Any  # the selected item
    position: float  # where the new item goes (the join on the timeline)
    length: float  # the new item's length (seconds)
    samples: int
    trim_to: float | None  # the selected item's new length when the join moved back to a bar line
    track_name: str = ""


def plan_extend(*, source: str, item_pos: float, item_len: float, take_offset: float, playrate: float,
                sel_end: float, caption: str, rate: int, tempo: float | None = None, folder: str | None = None,
                track: Any = None, item: Any = None) -> ExtendPlan:
    """The job for extending an item of ``source`` (placed at ``item_pos`` for ``item_len`` s, starting
    ``take_offset`` s into the source) to ``sel_end``. Raises ValueError naming the problem."""
    caption = (caption or "").strip()
    if not caption:
        raise ValueError("caption: empty")
    if not source or not os.path.isfile(source):
        raise ValueError(f"the selected item's source is not a file on disk ({source!r})")
    if abs(playrate - 1.0) > 1e-9:
        raise ValueError("the selected item plays at a changed rate: set its playrate to 1.0 first")
    item_end = item_pos + item_len
    if sel_end <= item_end + 1e-9:
        raise ValueError("the time selection must end after the selected item: it is where the new music ends")
    join = take_offset + item_len  # seconds into the source where the item stops
    trim_to = None
    if tempo and tempo > 0:
        bar = Fraction(BEATS_PER_BAR * 60) / Fraction(tempo).limit_denominator(10**6)
        bars = int(Fraction(join).limit_denominator(10**6) // bar)
        if bars >= 1 and abs(bars * bar - Fraction(join).limit_denominator(10**6)) > Fraction(1, 10**6):
            trim_to = float(bars * bar) - take_offset  # the daemon snaps the join to this bar line
            if trim_to <= 0:
                trim_to = None
    new_pos = item_pos + (trim_to if trim_to is not None else item_len)
    samples = selection_samples(new_pos, sel_end, rate)
    length = samples / rate
    fields: dict[str, Any] = {"caption": caption, "continue_audio": source, "continue_from": join,
                              "seconds": length, "new_only": True, "sample_rate": rate}
    if tempo and tempo > 0:
        fields["tempo_bpm"] = round(float(tempo), 3)
    if folder:
        fields["folder"] = folder
    return ExtendPlan(kind="music", fields=fields, track=track, item=item, position=new_pos, length=length,
                      samples=samples, trim_to=trim_to, track_name=f"extend: {caption.splitlines()[0][:40]}")


def selected_item(api: Any) -> dict[str, Any]:
    """The selected item's track, position, length, take offset, playrate and source file."""
    if int(api.RPR_CountSelectedMediaItems(0)) != 1:
        raise ValueError("select exactly one audio item to extend")
    item = api.RPR_GetSelectedMediaItem(0, 0)
    take = api.RPR_GetActiveTake(item)
    if not take or str(take).endswith("0x0000000000000000"):
        raise ValueError("the selected item has no take")
    src = api.RPR_GetMediaItemTake_Source(take)
    t = api.RPR_GetMediaSourceFileName(src, "", 4096)
    path = next((x for x in (t if isinstance(t, (list, tuple)) else [t]) if isinstance(x, str) and os.sep in x), "")
    value = api.RPR_GetMediaItemInfo_Value
    return {"item": item, "track": api.RPR_GetMediaItem_Track(item), "source": path,
            "item_pos": float(value(item, "D_POSITION")), "item_len": float(value(item, "D_LENGTH")),
            "take_offset": float(api.RPR_GetMediaItemTakeInfo_Value(take, "D_STARTOFFS")),
            "playrate": float(api.RPR_GetMediaItemTakeInfo_Value(take, "D_PLAYRATE"))}


def insert_after(api: Any, plan: ExtendPlan, path: str) -> Any:
    """The new part on the selected item's track, starting where that item (trimmed to the bar line if
    the join moved) ends; one undo step. Returns the new item's handle."""
    api.RPR_Undo_BeginBlock()
    try:
        if plan.trim_to is not None:
            api.RPR_SetMediaItemInfo_Value(plan.item, "D_LENGTH", float(plan.trim_to))
        item = api.RPR_AddMediaItemToTrack(plan.track)
        take = api.RPR_AddTakeToMediaItem(item)
        api.RPR_SetMediaItemTake_Source(take, api.RPR_PCM_Source_CreateFromFile(path))
        api.RPR_GetSetMediaItemTakeInfo_String(take, "P_NAME", os.path.basename(path), True)
        api.RPR_SetMediaItemInfo_Value(item, "D_POSITION", float(plan.position))
        api.RPR_SetMediaItemInfo_Value(item, "D_LENGTH", float(plan.length))
        api.RPR_UpdateItemInProject(item)
        api.RPR_UpdateArrange()
    finally:
        api.RPR_Undo_EndBlock(f"{TITLE}: extend with {os.path.basename(path)}", -1)
    return item


class ExtendSession(Session):  # type: ignore[misc,valid-type]
    """reaper_unimoe's session (deferred polling, console, copy into the project) with its own plan and insert."""

    def ask_caption(self) -> str | None:
        t = self.api.RPR_GetUserInputs(f"{TITLE}: extend the selected item", 1, "caption,extrawidth=300", "", 4096)
        if not isinstance(t, (list, tuple)) or not t[0]:
            return None
        return str(t[4] if len(t) > 4 else t[-1])

    def start(self, answers: Any = None) -> bool:  # noqa: D401 - same contract as Session.start
        if _IMPORT_ERROR is not None:
            return self.fail(f"cannot import the unimoe-audio client: {_IMPORT_ERROR}\nsee docs/integrations.md")
        from unimoe_audio.integrations.hostjob import connect, describe_error, submit_with_fallback

        try:
            _, sel_end = time_selection(self.api)
            info = selected_item(self.api)
            caption = answers if isinstance(answers, str) else self.ask_caption()
            if caption is None:
                self.state = "cancelled"
                return False
            self.plan = plan_extend(caption=caption, sel_end=sel_end, rate=project_rate(self.api),
                                    tempo=project_tempo(self.api, info["item_pos"]), folder=project_folder(self.api),
                                    **{k: info[k] for k in ("source", "item_pos", "item_len", "take_offset",
                                                            "playrate", "track", "item")})
        except ValueError as exc:
            return self.fail(str(exc))
        try:
            self.client = connect(self.settings)
            self.job, self.copy_to = submit_with_fallback(self.client, self.plan.kind, self.plan.fields)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return self.fail(describe_error(exc))
        self.state = "running"
        self._next_poll = self.clock()
        self.say(f"extend job {self.job.job_id} queued ({self.plan.length:.3f} s after {self.plan.position:.3f} s)")
        return True

    def _insert(self, path: str) -> bool:
        from unimoe_audio.integrations.hostjob import copy_into

        try:
            if self.copy_to:
                path = copy_into(self.copy_to, path)
            self.path = path
            item = insert_after(self.api, self.plan, path)
            self.inserted = (self.plan.track, item)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return self.fail(f"could not insert {path}: {exc}")
        self.state = "inserted"
        self.say(f"extended: {path} at {self.plan.position:.3f} s")
        self.close()
        return False


_SESSION: Any = None


def unimoe_extend_poll() -> None:
    s = _SESSION
    if s is not None and s.tick():
        s.api.RPR_defer("unimoe_extend_poll()")


def run(api: Any, caption: str | None = None, settings: Any = None) -> Any:
    global _SESSION
    import time

    clock = api.get("RPR_time_precise") if isinstance(api, dict) else getattr(api, "RPR_time_precise", None)
    _SESSION = ExtendSession(api, settings, clock=clock or time.monotonic)
    if _SESSION.start(caption):
        _SESSION.api.RPR_defer("unimoe_extend_poll()")
    return _SESSION


if __name__ == "__main__" and "RPR_ShowConsoleMsg" in globals():  # inside REAPER (and its test)
    run(globals())
elif __name__ == "__main__":  # pragma: no cover
    print("this is a REAPER ReaScript: load it from REAPER's action list (see docs/integrations.md)",
          file=sys.stderr)
