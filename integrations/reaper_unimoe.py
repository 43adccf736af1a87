"""REAPER ReaScript (Python): generate music or speech for the time selection and insert it on a new track.

Install: Actions > Show action list > New action > Load ReaScript... and pick this file (REAPER must have
Python enabled: Options > Preferences > Plug-ins > ReaScript). The unimoe-audio client must be importable
from REAPER's Python (see docs/integrations.md), and a daemon must be running (``unimoe-audio serve``).

Run it with a time selection: it asks what to make (``music`` or ``speech``) and the caption or text,
submits one job of exactly the selection's length (at the project's sample rate and tempo), and keeps
REAPER responsive while the job runs (``RPR_defer`` polls the daemon). When the job is done the WAV goes
on a new track at the selection start.

Everything that decides *what* to request and *where* to put it is in plain functions
(:func:`plan_request`, :func:`insert_on_new_track` over any object with ``RPR_`` attributes) so it can be
tested without REAPER.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

try:  # REAPER runs scripts with the package importable only if the user set it up
    from unimoe_audio.integrations.hostjob import HostJob, connect, describe_error
except ImportError as _exc:  # pragma: no cover - only inside a misconfigured REAPER
    HostJob = connect = describe_error = None  # type: ignore[assignment]
    _IMPORT_ERROR: Exception | None = _exc
else:
    _IMPORT_ERROR = None

TITLE = "unimoe-audio"
DEFAULT_RATE = 48000
POLL_EVERY_S = 0.25


# --------------------------------------------------------------------------------------------------
# pure planning
# --------------------------------------------------------------------------------------------------
@dataclass
class Plan:
    kind: str  # "music" or "speech"
    fields: dict[str, Any]
    position: float  # seconds: where the item goes (the selection start)
    length: float  # seconds
    samples: int  # exact length in samples at the output rate
    track_name: str


def selection_samples(start: float, end: float, sample_rate: int) -> int:
    """Exact sample length of a selection: sample(end) - sample(start), so that items tile."""
    return int(round(end * sample_rate)) - int(round(start * sample_rate))


def plan_request(kind: str, start: float, end: float, *, prompt: str, tempo: float | None = None,
                 project_rate: float | int | None = None, folder: str | None = None, voice: str | None = None,
                 seed: int | None = None, name: str | None = None) -> Plan:
    """The job for a time selection ``start..end`` (seconds).

    ``kind``: ``music`` (``prompt`` is the caption; the project tempo goes along as ``tempo_bpm``) or
    ``speech`` (``prompt`` is the text; ``voice`` a saved voice). The length is the selection's, at the
    project's sample rate (``project_rate`` 0/None: 48 kHz), sample exact. Raises ValueError naming the
    problem (no selection, empty prompt, unknown kind).
    """
    kind = (kind or "").strip().lower()
    if kind not in ("music", "speech"):
        raise ValueError(f"kind: wanted music or speech, got {kind!r}")
    if end <= start:
        raise ValueError("no time selection: select the range to fill first")
    prompt = (prompt or "").strip()
    if not prompt:
        raise ValueError("caption: empty" if kind == "music" else "text: empty")
    rate = int(project_rate) if project_rate and project_rate > 0 else DEFAULT_RATE
    samples = selection_samples(start, end, rate)
    length = samples / rate
    fields: dict[str, Any] = {"seconds": length, "sample_rate": rate, "fit_length": True}
    if kind == "music":
        fields["caption"] = prompt
        if tempo and tempo > 0:
            fields["tempo_bpm"] = round(float(tempo), 3)
    else:
        fields["text"] = prompt
        if voice:
            fields["voice"] = voice
    if folder:
        fields["folder"] = folder
    if seed is not None:
        fields["seed"] = int(seed)
    if name:
        fields["name"] = name
    label = prompt.splitlines()[0][:40]
    return Plan(kind=kind, fields=fields, position=float(start), length=length, samples=samples,
                track_name=f"{kind}: {label}")


def parse_inputs(csv: str) -> tuple[str, str, str]:
    """REAPER's GetUserInputs answer ``kind,prompt,voice`` (the prompt may contain commas: everything
    between the first and the last comma)."""
    first, _, rest = (csv or "").partition(",")
    prompt, _, voice = rest.rpartition(",")
    if not _:
        prompt, voice = rest, ""
    return first.strip() or "music", prompt.strip(), voice.strip()


# --------------------------------------------------------------------------------------------------
# REAPER calls (``api``: the script's globals in REAPER, or any object with the RPR_ functions)
# --------------------------------------------------------------------------------------------------
class Api:
    """Attribute access over REAPER's ``RPR_*`` functions, from a module, object or dict of globals."""

    def __init__(self, source: Any):
        self._src = source

    def __getattr__(self, name: str) -> Any:
        src = self._src
        if isinstance(src, dict):
            if name in src:
                return src[name]
            raise AttributeError(name)
        return getattr(src, name)

    def has(self, name: str) -> bool:
        try:
            getattr(self, name)
            return True
        except AttributeError:
            return False


def _last_numbers(t: Any, n: int) -> list[float]:
    """REAPER's Python returns output parameters as a list/tuple (return value first when there is one);
    the numbers we want are the last ``n`` numeric entries before any trailing flags."""
    if not isinstance(t, (list, tuple)):
        return [float(t)]
    nums = [x for x in t if isinstance(x, (int, float)) and not isinstance(x, bool)]
    return [float(x) for x in nums[-n:]]


def time_selection(api: Api) -> tuple[float, float]:
    # GetSet_LoopTimeRange(isSet, isLoop, start, end, allowautoseek) -> (..., isSet, isLoop, start, end, allow)
    t = api.RPR_GetSet_LoopTimeRange(False, False, 0.0, 0.0, False)
    if isinstance(t, (list, tuple)) and len(t) >= 3:
        return float(t[-3]), float(t[-2])
    raise RuntimeError(f"unexpected GetSet_LoopTimeRange result {t!r}")


def project_rate(api: Api) -> int:
    if api.has("RPR_GetSetProjectInfo"):
        use = api.RPR_GetSetProjectInfo(0, "PROJECT_SRATE_USE", 0, False)
        rate = api.RPR_GetSetProjectInfo(0, "PROJECT_SRATE", 0, False)
        use_v = _last_numbers(use, 1)[0] if use is not None else 0
        rate_v = _last_numbers(rate, 1)[0] if rate is not None else 0
        if use_v and rate_v > 0:
            return int(rate_v)
    return DEFAULT_RATE


def project_tempo(api: Api) -> float | None:
    if api.has("RPR_Master_GetTempo"):
        v = api.RPR_Master_GetTempo()
        return float(v) if v else None
    return None


def project_folder(api: Api) -> str | None:
    if not api.has("RPR_GetProjectPath"):
        return None
    t = api.RPR_GetProjectPath("", 4096)
    items = t if isinstance(t, (list, tuple)) else [t]
    for x in items:
        if isinstance(x, str) and x:
            return x
    return None


def insert_on_new_track(api: Api, path: str, position: float, name: str) -> Any:
    """A new track at the end named ``name``, with ``path`` inserted at ``position`` (seconds); the edit
    cursor goes back where it was. Returns the track."""
    cursor = api.RPR_GetCursorPosition() if api.has("RPR_GetCursorPosition") else None
    api.RPR_Undo_BeginBlock()
    try:
        index = int(api.RPR_CountTracks(0))
        api.RPR_InsertTrackAtIndex(index, True)
        track = api.RPR_GetTrack(0, index)
        api.RPR_GetSetMediaTrackInfo_String(track, "P_NAME", name, True)
        api.RPR_SetOnlyTrackSelected(track)
        api.RPR_SetEditCurPos(position, False, False)
        api.RPR_InsertMedia(path, 0)  # 0: add to the selected track at the edit cursor
        if cursor is not None:
            api.RPR_SetEditCurPos(float(cursor if not isinstance(cursor, (list, tuple)) else cursor[0]), False, False)
        api.RPR_UpdateArrange()
    finally:
        api.RPR_Undo_EndBlock(f"{TITLE}: insert {os.path.basename(path)}", -1)
    return track


# --------------------------------------------------------------------------------------------------
# the session: submit, then poll from RPR_defer
# --------------------------------------------------------------------------------------------------
class Session:
    """One run of the script: ``start()`` asks, plans and submits; ``poll()`` (deferred) inserts when done.
    ``state``: asking, running, inserted, failed, cancelled."""

    def __init__(self, api: Any, settings: Any = None):
        self.api = api if isinstance(api, Api) else Api(api)
        self.settings = settings
        self.plan: Plan | None = None
        self.job: Any = None
        self.client: Any = None
        self.state = "asking"
        self.message = ""
        self.inserted_track: Any = None
        self._last_stage = ""

    def say(self, text: str) -> None:
        self.message = text
        if self.api.has("RPR_ShowConsoleMsg"):
            self.api.RPR_ShowConsoleMsg(f"{TITLE}: {text}\n")

    def fail(self, text: str) -> bool:
        self.state = "failed"
        self.say(text)
        if self.api.has("RPR_ShowMessageBox"):
            self.api.RPR_ShowMessageBox(text, TITLE, 0)
        self.close()
        return False

    def ask(self) -> tuple[str, str, str] | None:
        t = self.api.RPR_GetUserInputs(f"{TITLE}: fill the time selection", 3,
                                       "music or speech,caption / text,saved voice (speech),extrawidth=300",
                                       "music,,", 4096)
        if not isinstance(t, (list, tuple)) or not t[0]:
            return None
        return parse_inputs(str(t[4] if len(t) > 4 else t[-1]))

    def start(self, answers: tuple[str, str, str] | None = None) -> bool:
        if _IMPORT_ERROR is not None:
            return self.fail(f"cannot import the unimoe-audio client: {_IMPORT_ERROR}\nsee docs/integrations.md")
        try:
            start, end = time_selection(self.api)
            if end <= start:
                return self.fail("no time selection: select the range to fill first")
            answers = answers or self.ask()
            if answers is None:
                self.state = "cancelled"
                return False
            kind, prompt, voice = answers
            folder = project_folder(self.api)
            self.plan = plan_request(kind, start, end, prompt=prompt, tempo=project_tempo(self.api),
                                     project_rate=project_rate(self.api), folder=folder, voice=voice or None)
        except ValueError as exc:
            return self.fail(str(exc))
        try:
            self.client = connect(self.settings)
            self.job = HostJob(self.client, self.plan.kind, self.plan.fields)
            self.job.submit()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return self.fail(describe_error(exc))
        self.state = "running"
        self.say(f"{self.plan.kind} job {self.job.job_id} queued ({self.plan.length:.3f} s, {self.plan.samples} samples)")
        return True

    def poll(self) -> bool:
        """One step; True while the job still runs (defer again)."""
        if self.state != "running":
            return False
        res = self.job.poll()
        if not res.final:
            stage = f"{res.stage} {int(res.fraction * 100)} %"
            if stage != self._last_stage:
                self._last_stage = stage
                self.say(stage)
            return True
        if res.state == "done":
            assert self.plan is not None
            self.inserted_track = insert_on_new_track(self.api, res.path, self.plan.position, self.plan.track_name)
            self.state = "inserted"
            self.say(f"inserted {res.path} at {self.plan.position:.3f} s")
            self.close()
            return False
        if res.state == "cancelled":
            self.state = "cancelled"
            self.say("the job was cancelled")
            self.close()
            return False
        return self.fail(f"the job failed: {res.error}")

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


_SESSION: Session | None = None


def unimoe_poll() -> None:
    """Deferred by REAPER (``RPR_defer("unimoe_poll()")``) until the job ends."""
    s = _SESSION
    if s is not None and s.poll():
        s.api.RPR_defer("unimoe_poll()")


def run(api: Any, answers: tuple[str, str, str] | None = None, settings: Any = None) -> Session:
    """Entry point: REAPER passes its globals (``run(globals())``)."""
    global _SESSION
    _SESSION = Session(api, settings)
    if _SESSION.start(answers):
        _SESSION.api.RPR_defer("unimoe_poll()")
    return _SESSION


if __name__ == "__main__" and "RPR_ShowConsoleMsg" in globals():  # pragma: no cover - inside REAPER
    run(globals())
elif __name__ == "__main__":  # pragma: no cover
    print("this is a REAPER ReaScript: load it from REAPER's action list (see docs/integrations.md)",
          file=sys.stderr)
