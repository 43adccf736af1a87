"""REAPER ReaScript (Python): generate music or speech for the time selection and insert it on a new track.

Install: Actions > Show action list > New action > Load ReaScript... and pick this file (REAPER must have
Python enabled: Options > Preferences > Plug-ins > ReaScript). The unimoe-audio client must be importable
from REAPER's Python (see docs/integrations.md), and a daemon must be running (``unimoe-audio serve``).

Run it with a time selection: it asks what to make (``music`` or ``speech``) and the caption or text,
submits one job of exactly the selection's length (at the project's sample rate, and for music the tempo
in force at the selection start), and keeps REAPER responsive while the job runs: REAPER calls the
deferred ``unimoe_poll()`` about 30 times a second; every ``POLL_EVERY_S`` of those it reads the job's
events already received (no request, no wait), and the console gets a line per stage or per 10 %.
When the job is done the WAV goes on a new track (created for it, and the item put on that track
explicitly) at the selection start. The file is written into the project's media folder, or, when the
daemon may not write there (outside its allowed roots), into its own output folder and copied over.

A job outlives the REAPER session that asked for it: its id and where its item goes are kept in the
project's extended state (``SetProjExtState``, saved with the .rpp). Running the script again in that
project (after REAPER was closed mid-job, say) first follows those jobs and inserts their results, before
asking for a new one.

Everything that decides *what* to request and *where* to put it is in plain functions
(:func:`plan_request`, :func:`insert_on_new_track` over any object with ``RPR_`` attributes) so it can be
tested without REAPER.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

try:  # REAPER runs scripts with the package importable only if the user set it up
    from unimoe_audio.integrations.hostjob import HostJob, connect, copy_into, describe_error, submit_with_fallback
except ImportError as _exc:  # pragma: no cover - only inside a misconfigured REAPER
    HostJob = connect = copy_into = describe_error = submit_with_fallback = None  # type: ignore[assignment]
    _IMPORT_ERROR: Exception | None = _exc
else:
    _IMPORT_ERROR = None

TITLE = "unimoe-audio"
DEFAULT_RATE = 48000
POLL_EVERY_S = 0.25  # how often the deferred callback looks at the job (REAPER defers ~30 times a second)
CONSOLE_EVERY = 0.10  # a console line per stage change or per this fraction of progress


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


def project_tempo(api: Api, at: float = 0.0) -> float | None:
    """The tempo in force at ``at`` seconds (the tempo map, not the project's first tempo):
    ``TimeMap2_GetDividedBpmAtTime`` (the BPM as REAPER shows it, in beats of the
    time signature), else ``TimeMap_GetTimeSigAtTime``'s tempo, else the master tempo."""
    if api.has("RPR_TimeMap2_GetDividedBpmAtTime"):
        v = api.RPR_TimeMap2_GetDividedBpmAtTime(0, float(at))
        v = _last_numbers(v, 1)[0] if isinstance(v, (list, tuple)) else v
        if v and float(v) > 0:
            return float(v)
    if api.has("RPR_TimeMap_GetTimeSigAtTime"):
        # (proj, time, timesig_num, timesig_denom, tempo): the tempo is the last value
        t = api.RPR_TimeMap_GetTimeSigAtTime(0, float(at), 0, 0, 0.0)
        v = _last_numbers(t, 1)[0] if isinstance(t, (list, tuple)) else t
        if v and float(v) > 0:
            return float(v)
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


def insert_on_new_track(api: Api, path: str, position: float, length: float, name: str) -> tuple[Any, Any]:
    """A new track at the end named ``name`` holding one item of ``path`` at ``position`` for ``length``
    seconds, in one undo step. The item is added to that track explicitly (``AddMediaItemToTrack``), so
    neither the track selection nor the edit cursor is used or changed. Returns (track, item): REAPER's
    opaque handle strings."""
    api.RPR_Undo_BeginBlock()
    try:
        index = int(api.RPR_CountTracks(0))
        api.RPR_InsertTrackAtIndex(index, True)
        track = api.RPR_GetTrack(0, index)
        api.RPR_GetSetMediaTrackInfo_String(track, "P_NAME", name, True)
        item = api.RPR_AddMediaItemToTrack(track)
        take = api.RPR_AddTakeToMediaItem(item)
        source = api.RPR_PCM_Source_CreateFromFile(path)
        api.RPR_SetMediaItemTake_Source(take, source)
        api.RPR_GetSetMediaItemTakeInfo_String(take, "P_NAME", os.path.basename(path), True)
        api.RPR_SetMediaItemInfo_Value(item, "D_POSITION", float(position))
        api.RPR_SetMediaItemInfo_Value(item, "D_LENGTH", float(length))
        api.RPR_UpdateItemInProject(item)
        api.RPR_UpdateArrange()
    finally:
        api.RPR_Undo_EndBlock(f"{TITLE}: insert {os.path.basename(path)}", -1)
    return track, item


# --------------------------------------------------------------------------------------------------
# jobs kept in the project (REAPER's project extended state, saved with the .rpp)
# --------------------------------------------------------------------------------------------------
EXT_SECTION = "unimoe-audio"


def remember_job(api: Api, job_id: str, plan: Plan, copy_to: str | None) -> None:
    if api.has("RPR_SetProjExtState"):
        api.RPR_SetProjExtState(0, EXT_SECTION, job_id, json.dumps({**asdict(plan), "copy_to": copy_to or ""}))


def forget_job(api: Api, job_id: str) -> None:
    if job_id and api.has("RPR_SetProjExtState"):
        api.RPR_SetProjExtState(0, EXT_SECTION, job_id, "")  # an empty value deletes the key


def pending_jobs(api: Api) -> list[tuple[str, Plan, str | None]]:
    """(job id, plan, copy_to) of each job this project was waiting for, oldest key first."""
    if not api.has("RPR_EnumProjExtState"):
        return []
    out = []
    for idx in range(1000):
        t = api.RPR_EnumProjExtState(0, EXT_SECTION, idx, "", 256, "", 65536)
        if not isinstance(t, (list, tuple)) or not t[0]:
            break
        key, value = str(t[4]), str(t[6])
        try:
            data = json.loads(value)
            copy_to = data.pop("copy_to", "") or None
            out.append((key, Plan(**data), copy_to))
        except (ValueError, TypeError):
            continue  # not ours, or damaged: left alone
    return out


# --------------------------------------------------------------------------------------------------
# the session: submit, then poll from RPR_defer
# --------------------------------------------------------------------------------------------------
class Session:
    """One run of the script: ``start()`` asks, plans and submits; ``tick()`` (deferred) follows the job and
    inserts when done. ``state``: asking, running, inserted, failed, cancelled.

    ``ticks`` counts deferred calls, ``polls`` the ones that looked at the job (one per ``POLL_EVERY_S``),
    ``lines`` the console lines written."""

    def __init__(self, api: Any, settings: Any = None, clock: Any = time.monotonic):
        self.api = api if isinstance(api, Api) else Api(api)
        self.settings = settings
        self.clock = clock
        self.plan: Plan | None = None
        self.job: Any = None
        self.client: Any = None
        self.state = "asking"
        self.message = ""
        self.inserted: tuple[Any, Any] | None = None  # (track, item) handles
        self.path = ""
        self.copy_to: str | None = None  # the project's media folder when the daemon may not write there
        self.ticks = 0
        self.polls = 0
        self.lines = 0
        self._next_poll = 0.0
        self._shown = ("", -1)

    def say(self, text: str) -> None:
        self.message = text
        self.lines += 1
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

    def resume(self) -> bool:
        """Follow a job this project was waiting for (kept in its extended state); True when one is
        followed. Jobs the daemon no longer knows are dropped from the project with a line."""
        waiting = pending_jobs(self.api)
        for n, (job_id, plan, copy_to) in enumerate(waiting):
            try:
                client = connect(self.settings)
            except Exception as exc:  # noqa: BLE001 - said; the ids stay for the next run
                self.say(f"{len(waiting)} job(s) of this project still to place: {describe_error(exc)}")
                return False
            try:
                job = HostJob.resume(client, job_id, plan.kind)
            except Exception as exc:  # noqa: BLE001
                client.close()
                self.say(f"job {job_id} of this project cannot be followed ({describe_error(exc)}); dropped")
                forget_job(self.api, job_id)
                continue
            self.client, self.job, self.plan, self.copy_to = client, job, plan, copy_to
            self.state = "running"
            self._next_poll = self.clock()
            more = len(waiting) - n - 1
            self.say(f"following {plan.kind} job {job_id}, queued before this project was closed"
                     + (f" ({more} more: run the script again)" if more else ""))
            return True
        return False

    def start(self, answers: tuple[str, str, str] | None = None) -> bool:
        if _IMPORT_ERROR is not None:
            return self.fail(f"cannot import the unimoe-audio client: {_IMPORT_ERROR}\nsee docs/integrations.md")
        if answers is None and self.resume():
            return True
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
            self.plan = plan_request(kind, start, end, prompt=prompt, tempo=project_tempo(self.api, start),
                                     project_rate=project_rate(self.api), folder=folder, voice=voice or None)
        except ValueError as exc:
            return self.fail(str(exc))
        try:
            self.client = connect(self.settings)
            # the project's media folder, or the daemon's own folder and a copy when it may not write there
            self.job, self.copy_to = submit_with_fallback(self.client, self.plan.kind, self.plan.fields)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return self.fail(describe_error(exc))
        self.state = "running"
        self._next_poll = self.clock() + POLL_EVERY_S
        remember_job(self.api, self.job.job_id, self.plan, self.copy_to)
        where = f"; it will be copied into {self.copy_to}" if self.copy_to else ""
        self.say(f"{self.plan.kind} job {self.job.job_id} queued ({self.plan.length:.3f} s, "
                 f"{self.plan.samples} samples){where}")
        return True

    def tick(self) -> bool:
        """One deferred call; True while the job still runs (defer again). Looks at the job only once per
        ``POLL_EVERY_S``, and then reads events already received: it never waits on the daemon."""
        if self.state != "running":
            return False
        self.ticks += 1
        now = self.clock()
        if now < self._next_poll:
            return True
        self._next_poll = now + POLL_EVERY_S
        self.polls += 1
        res = self.job.poll()
        if not res.final:
            if res.changed:
                self._progress(res.stage, res.fraction)
            return True
        if res.state == "done":
            return self._insert(res.path)
        if res.state == "cancelled":
            self.state = "cancelled"
            self.say("the job was cancelled")
            self.close()
            return False
        return self.fail(f"the job failed: {res.error}")

    poll = tick  # the name the first version used

    def _progress(self, stage: str, fraction: float) -> None:
        step = int(fraction / CONSOLE_EVERY + 1e-9)
        if (stage, step) == self._shown or (stage == self._shown[0] and step <= self._shown[1]):
            return
        self._shown = (stage, step)
        self.say(f"{stage} {int(fraction * 100)} %")

    def _insert(self, path: str) -> bool:
        assert self.plan is not None
        try:
            if self.copy_to:
                path = copy_into(self.copy_to, path)
            self.path = path
            self.inserted = insert_on_new_track(self.api, path, self.plan.position, self.plan.length,
                                                self.plan.track_name)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            return self.fail(f"could not insert {path}: {exc}")
        self.state = "inserted"
        self.say(f"inserted {path} at {self.plan.position:.3f} s")
        self.close()
        return False

    def close(self) -> None:
        if self.job is not None and self.state in ("inserted", "failed", "cancelled"):
            forget_job(self.api, getattr(self.job, "job_id", "") or "")
        if self.job is not None and getattr(self.job, "watch", None) is not None:
            self.job.watch.close()
        if self.client is not None:
            self.client.close()
            self.client = None


_SESSION: Session | None = None


def unimoe_poll() -> None:
    """Deferred by REAPER (``RPR_defer("unimoe_poll()")``, evaluated in this script's globals) until the
    job ends."""
    s = _SESSION
    if s is not None and s.tick():
        s.api.RPR_defer("unimoe_poll()")


def run(api: Any, answers: tuple[str, str, str] | None = None, settings: Any = None) -> Session:
    """Entry point: REAPER passes its globals (``run(globals())``)."""
    global _SESSION
    clock = api.get("RPR_time_precise") if isinstance(api, dict) else getattr(api, "RPR_time_precise", None)
    _SESSION = Session(api, settings, clock=clock or time.monotonic)
    if _SESSION.start(answers):
        _SESSION.api.RPR_defer("unimoe_poll()")
    return _SESSION


if __name__ == "__main__" and "RPR_ShowConsoleMsg" in globals():  # inside REAPER (and its test)
    run(globals())
elif __name__ == "__main__":  # pragma: no cover
    print("this is a REAPER ReaScript: load it from REAPER's action list (see docs/integrations.md)",
          file=sys.stderr)
