"""DaVinci Resolve script (Workspace > Scripts): score the current timeline with unimoe-audio.

Install: copy this file into Resolve's scripts folder, ``Edit`` category (so it shows under Workspace > Scripts >
Edit > resolve_unimoe):

- macOS:   ~/Library/Application Support/Blackmagic Design/DaVinci Resolve/Fusion/Scripts/Edit/
- Windows: %APPDATA%\\Blackmagic Design\\DaVinci Resolve\\Support\\Fusion\\Scripts\\Edit\\
- Linux:   ~/.local/share/DaVinciResolve/Fusion/Scripts/Edit/

Resolve runs it with its own Python 3 (Preferences > System > General > External scripting using: Local), which
must import ``unimoe_audio`` with the ``timeline`` extra (docs/integrations.md, "Making the client importable"); a
daemon must be running (``unimoe-audio serve``). What it does, through Resolve's documented scripting API only:

1. exports the current timeline as OTIO (``Timeline.Export(path, resolve.EXPORT_OTIO, resolve.EXPORT_NONE)``,
   Resolve 18.5+);
2. scores every clip of video track 1 (or, with ``MARKED_ONLY``, the clips carrying a marker; a clip's marker name
   is its caption) through the daemon, each exactly its record duration, spotted to its record-in; progress
   goes to Resolve's console (Workspace > Console);
3. brings the music back (``RESULT``): ``"track"`` imports the WAVs into the media pool (``MediaPool.ImportMedia``),
   adds a stereo audio track named "unimoe score" (``Timeline.AddTrack``) and places each clip at its shot's
   record frame on it (``MediaPool.AppendToTimeline`` with ``recordFrame``, ``trackIndex``, ``mediaType`` 2);
   ``"timeline"`` imports the scored OTIO as a new timeline (``MediaPool.ImportTimelineFromFile``).

Settings: edit the constants below. The logic is in plain functions (:func:`score_current_timeline`); the test
runs this file as Resolve would, against a stand-in that follows Resolve's scripting README and refuses anything
undocumented (tests/_resolve_host.py): Resolve itself does not run on Linux servers without a GPU.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

CAPTION = "cinematic underscore, follows the picture"  # the score's caption (a clip's marker name overrides it)
MARKED_ONLY = False  # True: only clips carrying a marker
RESULT = "track"  # "track": clips on a new audio track of this timeline; "timeline": a new scored timeline
TRACK_NAME = "unimoe score"
FOLDER = None  # where the daemon writes the WAVs (None: its default folder)
SEED = None


def get_resolve(namespace: dict[str, Any]) -> Any:
    """The ``resolve`` object: the global Resolve gives a script it runs, else through ``bmd``/``fusionscript``
    (a script started from the console or outside Resolve)."""
    if namespace.get("resolve") is not None:
        return namespace["resolve"]
    bmd = namespace.get("bmd")
    if bmd is not None:
        return bmd.scriptapp("Resolve")
    try:
        import DaVinciResolveScript as dvr  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("not running inside DaVinci Resolve (no 'resolve' object, no DaVinciResolveScript)") from None
    return dvr.scriptapp("Resolve")


def _first_audio_index_named(timeline: Any, name: str) -> int | None:
    for i in range(1, int(timeline.GetTrackCount("audio")) + 1):
        if timeline.GetTrackName("audio", i) == name:
            return i
    return None


def place_on_new_track(resolve: Any, project: Any, timeline: Any, cues: list[Any], say: Callable[[str], None]) -> int:
    """Import the done cues' WAVs and put each at its record frame on a new stereo audio track; the count."""
    pool = project.GetMediaPool()
    done = [c for c in cues if c.result.get("status") == "done"]
    items = pool.ImportMedia([c.result["path"] for c in done]) or []
    by_path = {os.path.normcase(os.path.abspath(i.GetClipProperty("File Path"))): i for i in items}
    if not timeline.AddTrack("audio", "stereo"):
        raise RuntimeError("Resolve refused to add an audio track")
    index = int(timeline.GetTrackCount("audio"))
    timeline.SetTrackName("audio", index, TRACK_NAME)
    start = int(timeline.GetStartFrame())
    placed = 0
    for c in done:
        item = by_path.get(os.path.normcase(os.path.abspath(c.result["path"])))
        if item is None:
            say(f"unimoe-audio: {c.name}: Resolve did not import {c.result['path']}")
            continue
        # endFrame is inclusive: frames 0 .. n-1 of the WAV, which is exactly n frames long
        got = pool.AppendToTimeline([{"mediaPoolItem": item, "startFrame": 0, "endFrame": c.frames - 1,
                                      "mediaType": 2, "trackIndex": index, "recordFrame": start + c.record_frame}])
        if got:
            placed += 1
            say(f"unimoe-audio: {c.name} on A{index} at {c.record_in} ({c.frames} frames)")
        else:
            say(f"unimoe-audio: {c.name}: Resolve refused to place it at {c.record_in}")
    return placed


def score_current_timeline(resolve: Any, *, caption: str = CAPTION, marked_only: bool = MARKED_ONLY,
                           result: str = RESULT, folder: str | None = FOLDER, seed: int | None = SEED,
                           workdir: str | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Export, score, bring back. Returns a summary (also printed line by line to Resolve's console)."""
    from unimoe_audio.client.client import Client, DaemonUnavailable
    from unimoe_audio.client.settings import load_settings
    from unimoe_audio.integrations.interchange import write_timeline
    from unimoe_audio.integrations.score_cues import plan
    from unimoe_audio.integrations.score_readers import read_edit
    from unimoe_audio.integrations.score_runner import run_cues

    if result not in ("track", "timeline"):
        raise ValueError(f"RESULT must be 'track' or 'timeline', not {result!r}")
    project = resolve.GetProjectManager().GetCurrentProject()
    timeline = project.GetCurrentTimeline() if project else None
    if timeline is None:
        raise RuntimeError("open a timeline first (no current timeline)")
    name = timeline.GetName()
    work = Path(workdir or tempfile.mkdtemp(prefix="unimoe-resolve-"))
    work.mkdir(parents=True, exist_ok=True)
    exported = work / f"{name}.otio"
    if not timeline.Export(str(exported), resolve.EXPORT_OTIO, resolve.EXPORT_NONE):
        raise RuntimeError("Resolve could not export the timeline as OTIO (Resolve 18.5 or later is needed)")
    say(f"unimoe-audio: exported {name!r} to {exported}")
    edit = read_edit(exported)
    cues, skipped = plan(edit, marker="" if marked_only else None, marker_captions=True, project=project.GetName(),
                         prefix=name.replace(" ", "_"))
    for s in skipped:
        say(f"unimoe-audio: clip {s['event']} skipped: {s['why']}")
    if not cues:
        raise RuntimeError(f"nothing to score on {name!r} ({len(skipped)} clips skipped)")
    say(f"unimoe-audio: scoring {len(cues)} clips of {name!r} at {edit.tc(0)}")
    try:
        client = Client(load_settings(), auto_start=False)
    except DaemonUnavailable as exc:
        raise RuntimeError(f"{exc} (start it with 'unimoe-audio serve')") from None
    with client:
        run_cues(client, cues, caption=caption, folder=folder, seed=seed, progress=lambda m: say(f"unimoe-audio: {m}"))
    done = [c for c in cues if c.result.get("status") == "done"]
    summary: dict[str, Any] = {"timeline": name, "cues": len(cues), "done": len(done), "skipped": skipped}
    if not done:
        raise RuntimeError("no clip was scored (see the lines above)")
    scored = write_timeline(edit, cues, work / f"{name} (scored).otio")
    summary["otio"] = str(scored)
    if result == "timeline":
        new = project.GetMediaPool().ImportTimelineFromFile(str(scored), {"timelineName": f"{name} (scored)",
                                                                         "importSourceClips": True})
        if not new:
            raise RuntimeError(f"Resolve could not import {scored}")
        summary["new_timeline"] = new.GetName()
        say(f"unimoe-audio: new timeline {new.GetName()!r}")
    else:
        summary["placed"] = place_on_new_track(resolve, project, timeline, cues, say)
    say(f"unimoe-audio: done: {len(done)}/{len(cues)} clips scored")
    return summary


def main(namespace: dict[str, Any]) -> int:
    try:
        score_current_timeline(get_resolve(namespace))
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"unimoe-audio: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    code = main(globals())
    if globals().get("resolve") is None:  # run from a shell: an exit status; inside Resolve: just return
        sys.exit(code)
