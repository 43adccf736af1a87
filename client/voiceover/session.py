"""One voiceover run: plan the cues (voices, length requests, seeds, idempotency keys), submit them as
speech jobs, follow them without blocking, fit each finished cue, and assemble the stem, the report and
the spoken subtitles. The CLI, the panel's Script tab and the Blender add-on all drive this class:

    vo = Voiceover(client, read_script("film.srt"), VoiceoverOptions(voice="narrator"), "dialogue.wav")
    vo.plan(); vo.submit()
    while not vo.finished:
        vo.poll(0.2)                   # reads events, fits what finished; hosts call it from a timer
    report = vo.finish()               # the stem, the per-cue files, the report, the spoken SRT/VTT

Where the work happens: each cue is an ordinary speech job in the daemon (durable, cancellable, resumed
after a daemon restart, deduplicated by its idempotency key); fitting (ffmpeg) and the stem (a byte copy
of non-overlapping PCM, :mod:`.wav`) happen here, on the editor's side, because that is where the files
must end up (also from a remote host), because Blender's Python has no soundfile, and because ``--only``
rewrites the stem from files on disk without the model. The client never imports torch or numpy.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

from .. import bwf
from .. import protocol as P
from ..timecode import parse_rate, timecode_seconds
from . import fit, wav
from .report import CueRecord, Report, load_report, save_report, write_spoken_subtitles
from .script import Cue, Script

__all__ = ["Voiceover", "VoiceoverOptions", "VoiceoverError", "output_paths", "parse_only", "parse_voice_map"]


class VoiceoverError(ValueError):
    """Bad input for a voiceover (an unknown speaker, a bad --only, a missing voice): the message names it."""


@dataclass
class VoiceoverOptions:
    voice: str | None = None
    ref_audio: str | None = None
    ref_text: str | None = None
    voice_map: dict[str, str] = field(default_factory=dict)
    max_stretch: float = fit.DEFAULT_MAX_STRETCH
    overflow: str = "trim"
    sample_rate: int = 48000
    channels: int = 1
    bit_depth: int = 24
    loudness: float | str | None = None
    record_in: str | None = None
    fps: str | None = None
    seed: int | None = None
    sampling: dict[str, Any] = field(default_factory=dict)  # cfg_scale, temperature, top_p, top_k
    priority: int | None = None
    tag: str | None = None
    spot_notes: dict[str, str] = field(default_factory=dict)  # iXML project, scene, take, note

    def check(self) -> None:
        if self.voice and (self.ref_audio or self.ref_text):
            raise VoiceoverError("give --voice, or --ref-audio with --ref-text, not both")
        if bool(self.ref_audio) != bool(self.ref_text):
            raise VoiceoverError("--ref-audio and --ref-text go together")
        if self.ref_audio and not Path(self.ref_audio).expanduser().is_file():
            raise VoiceoverError(f"reference audio {self.ref_audio} not found")
        if not 1.0 <= self.max_stretch <= fit.STRETCH_LIMIT:
            raise VoiceoverError(f"--max-stretch {self.max_stretch:g} is outside 1..{fit.STRETCH_LIMIT:g}")
        if self.overflow not in fit.OVERFLOW_MODES:
            raise VoiceoverError(f"--overflow {self.overflow!r}: wanted one of {', '.join(fit.OVERFLOW_MODES)}")
        if self.record_in is not None and self.fps is None and not str(self.record_in).endswith("s"):
            raise VoiceoverError("--record-in needs --fps (the timeline rate), or seconds as 3600.5s")

    def record_in_seconds(self) -> Fraction | None:
        if self.record_in is None:
            return None
        text = str(self.record_in).strip()
        if text.endswith("s") and ":" not in text:
            return Fraction(text[:-1])
        return timecode_seconds(text, self.fps)


def parse_only(text: str | None, known: set[int]) -> set[int] | None:
    """``"12,15-18"`` -> {12, 15, 16, 17, 18}; every number must be a cue of the script."""
    if text is None:
        return None
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            a, _, b = part.partition("-")
            lo, hi = int(a), int(b or a)
        except ValueError:
            raise VoiceoverError(f"--only {text!r}: {part!r} is not a cue number or a range like 15-18") from None
        if hi < lo:
            raise VoiceoverError(f"--only: the range {part} runs backwards")
        out.update(range(lo, hi + 1))
    if not out:
        raise VoiceoverError("--only names no cue")
    missing = sorted(out - known)
    if missing:
        raise VoiceoverError(f"--only: the script has no cue {', '.join(map(str, missing))} "
                             f"(its cues are numbered 1-{max(known) if known else 0}; empty ones are skipped)")
    return out


def parse_voice_map(items: list[str] | None) -> dict[str, str]:
    """``["ALICE=alice", "BOB=narrator"]``, or a file path (JSON object, or ``NAME=VOICE`` lines)."""
    out: dict[str, str] = {}
    for item in [p for it in (items or []) for p in (it.split(",") if "=" in it else [it])]:
        p = Path(item).expanduser()
        if "=" not in item and p.is_file():
            text = p.read_text(encoding="utf-8")
            try:
                data = json.loads(text)
                if not isinstance(data, dict):
                    raise VoiceoverError(f"--voice-map {item}: wanted a JSON object of speaker: voice")
                out.update({str(k): str(v) for k, v in data.items()})
                continue
            except json.JSONDecodeError:
                lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
                for ln in lines:
                    out.update(parse_voice_map([ln.strip()]))
                continue
        name, sep, voice = item.partition("=")
        if not sep or not name.strip() or not voice.strip():
            raise VoiceoverError(f"--voice-map {item!r}: wanted SPEAKER=VOICE (or a file of them)")
        out[name.strip()] = voice.strip()
    return out


def output_paths(out: str | Path) -> dict[str, Path]:
    """The files of a run whose ``-o`` is ``out`` (.wav, .otio or .mlt): the stem is ``<stem>.wav``."""
    o = Path(out).expanduser().resolve()
    base = o.with_suffix("")
    return {"out": o, "stem": base.with_suffix(".wav"), "cues": Path(f"{base}.cues"),
            "raw": Path(f"{base}.cues") / "raw", "report": Path(f"{base}.voiceover.json"),
            "srt": Path(f"{base}.spoken.srt"), "vtt": Path(f"{base}.spoken.vtt")}


def _audio_seconds(path: str) -> float:
    try:
        return wav.read_info(path).seconds
    except wav.WavError:
        pass
    exe = shutil.which("ffprobe")
    if exe:
        try:
            out = subprocess.run([exe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", path],
                                 capture_output=True, text=True, timeout=60).stdout.strip()
            return float(out)
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    return 0.0


@dataclass
class _Active:
    record: CueRecord
    cue: Cue
    fraction: float = 0.0
    stage: str = "queued"


class Voiceover:
    """A voiceover run (see the module's docstring). ``on_update(index, fraction, stage)`` hears every cue's
    progress; ``on_note(text)`` hears what is worth telling (skipped cues, overlaps, overflows)."""

    RESYNC_S = 3.0

    def __init__(self, client: Any, script: Script, options: VoiceoverOptions, out: str | Path, *,
                 only: set[int] | None = None, on_update: Callable[[int, float, str], None] | None = None,
                 on_note: Callable[[str], None] | None = None, reconnect: Callable[[], Any] | None = None):
        options.check()
        self.client = client
        self.script = script
        self.opts = options
        self.paths = output_paths(out)
        self.only = only
        self.on_update = on_update or (lambda i, f, s: None)
        self.on_note = on_note or (lambda t: None)
        self.reconnect = reconnect
        self.report: Report | None = None
        self.cues: dict[int, Cue] = {c.index: c for c in script.cues}
        self.active: dict[str, _Active] = {}  # job id -> cue in flight
        self.cancelled = False
        self._sub: Any = None
        self._raw_folder: str | None = str(self.paths["raw"])
        self._last_resync = time.monotonic()
        self._rate_of: dict[str | None, float] = {}
        self._previous: dict[int, CueRecord] = {}  # --only: the take each new one replaces

    # -- planning -----------------------------------------------------------------------------------
    def _voices(self) -> dict[str, P.VoiceInfo]:
        return {v.name: v for v in self.client.voices()}

    def _resolve(self, saved: dict[str, P.VoiceInfo]) -> dict[int, str | None]:
        """Cue -> saved voice name (None: the reference recording). Unknown speakers are one error."""
        lower = {k.lower(): k for k in saved}
        mapping = {k.lower(): v for k, v in self.opts.voice_map.items()}
        for spk, v in self.opts.voice_map.items():
            if v not in saved:
                raise VoiceoverError(f"--voice-map {spk}={v}: no saved voice named {v!r} (see 'voices ls')")
        if self.opts.voice and self.opts.voice not in saved:
            raise VoiceoverError(f"--voice {self.opts.voice!r} is not a saved voice (see 'voices ls', 'voices add')")
        default: str | None = self.opts.voice
        unknown: dict[str, list[int]] = {}
        out: dict[int, str | None] = {}
        for cue in self.script.cues:
            voice: str | None = None
            found = False
            for name, strict in ((cue.speaker, True), (cue.style, False)):
                if not name:
                    continue
                if name.lower() in mapping:
                    voice, found = mapping[name.lower()], True
                elif name.lower() in lower:
                    voice, found = lower[name.lower()], True
                elif strict:
                    unknown.setdefault(name, []).append(cue.index)
                    found = True
                if found:
                    break
            if not found:
                if default is None and not self.opts.ref_audio:
                    raise VoiceoverError(f"cue {cue.index} names no speaker: give --voice NAME or --ref-audio/--ref-text "
                                         "for the lines without one")
                voice = default
            out[cue.index] = voice
        if unknown:
            listed = "; ".join(f"{name!r} (cue {', '.join(map(str, idx[:8]))}{', ...' if len(idx) > 8 else ''})"
                               for name, idx in unknown.items())
            raise VoiceoverError(f"unknown speaker {listed}: map it with --voice-map NAME=VOICE or save a voice "
                                 "of that name ('voices add')")
        return out

    def _rate(self, voice: str | None, saved: dict[str, P.VoiceInfo]) -> float:
        if voice not in self._rate_of:
            if voice is not None:
                v = saved[voice]
                self._rate_of[voice] = fit.speaking_rate(v.transcript, v.seconds)
            else:
                self._rate_of[None] = fit.speaking_rate(self.opts.ref_text or "", _audio_seconds(
                    str(Path(self.opts.ref_audio or "").expanduser())))
        return self._rate_of[voice]

    def _signature(self, cue: Cue, voice: str | None, slot_n: int | None) -> str:
        o = self.opts
        parts = [cue.text, str(cue.start), str(cue.end), voice or f"ref:{o.ref_audio}:{o.ref_text}", str(slot_n),
                 str(o.sample_rate), str(o.channels), str(o.bit_depth), str(o.loudness), str(o.max_stretch),
                 json.dumps(o.sampling, sort_keys=True)]
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:24]

    def plan(self) -> Report:
        """Resolve voices, slots, length requests and seeds; reuse the previous run's takes where its report
        says the same cue was made the same way. Writes the report (the run's state) before anything runs."""
        o = self.opts
        saved = self._voices()
        voices = self._resolve(saved)
        sr = o.sample_rate
        old = load_report(self.paths["report"])
        if self.only is not None and old is None:
            raise VoiceoverError(f"--only regenerates cues of an earlier run, and there is no report at "
                                 f"{self.paths['report']}: run without --only first")
        rep = Report(script=str(self.script.path), script_format=self.script.format,
                     script_sha256=self.script.sha256, output=str(self.paths["stem"]), sample_rate=sr,
                     channels=o.channels, bit_depth=o.bit_depth, max_stretch=o.max_stretch, overflow=o.overflow,
                     record_in=o.record_in, fps=None if o.fps is None else str(o.fps),
                     skipped=list(self.script.skipped), warnings=list(self.script.warnings))
        for s in self.script.skipped:
            self.on_note(f"cue {s['index']} skipped: {s['reason']}")
        for w in self.script.warnings:
            self.on_note(f"warning: {w}")
        ordered = self.script.cues
        for i, cue in enumerate(ordered):
            nxt = ordered[i + 1].start if i + 1 < len(ordered) else None
            ends = [e for e in (cue.end, nxt) if e is not None]
            slot_end = min(ends) if ends else None
            start_n = round(cue.start * sr)
            slot_n = None if slot_end is None else max(1, round(slot_end * sr) - start_n)
            voice = voices[cue.index]
            ask = fit.length_request(cue.text, None if slot_n is None else slot_n / sr, self._rate(voice, saved),
                                     o.max_stretch)
            sig = self._signature(cue, voice, slot_n)
            rec = CueRecord(index=cue.index, text=cue.text, speaker=cue.speaker, voice=voice, start=float(cue.start),
                            end=None if cue.end is None else float(cue.end), start_sample=start_n,
                            slot_seconds=None if slot_n is None else slot_n / sr, estimate_seconds=round(ask.estimate_s, 3),
                            asked=ask.fields(), signature=sig)
            prev = old.cue(cue.index) if old is not None else None
            reuse = prev is not None and prev.signature == sig
            if reuse and self.only is not None and cue.index in self.only:
                assert prev is not None
                rec.seed = self._new_seed(prev.seed)  # a new take
                rec.raw_file = prev.raw_file  # removed once the new take is in
                if prev.state == "done":
                    self._previous[cue.index] = prev  # kept if the new take fails or is cancelled
            elif reuse:
                assert prev is not None
                rec = prev.model_copy(update={"start_sample": start_n, "error": None if prev.state == "done" else prev.error})
                if rec.state == "done" and not (rec.file and Path(rec.file).is_file()):
                    rec.state = "pending"  # its file is gone: make it again, same seed
                elif rec.state in ("failed", "cancelled") and self.only is None:
                    # resume: try again with the same seed, under a new key (the daemon answers a known key
                    # with the job that failed)
                    rec.state, rec.attempt = "pending", rec.attempt + 1
            else:
                rec.seed = (o.seed + cue.index) if o.seed is not None else secrets.randbits(62)
                if self.only is not None and cue.index not in self.only:
                    self.on_note(f"cue {cue.index} changed since the last run and is not in --only: it is left out "
                                 "of the stem (run without --only to make it)")
            if ask.too_long and rec.state != "done":
                self.on_note(f"cue {cue.index}: about {ask.estimate_s:.2f} s of speech for a {slot_n / sr:.2f} s slot "
                             f"(more than x{o.max_stretch:g}): expect an overflow")
            if rec.state != "done":
                key = f"{sig}:{rec.seed}:{rec.attempt}:{self.paths['stem']}"
                rec.request_id = "vo-" + hashlib.sha256(key.encode()).hexdigest()[:40]
            rep.cues.append(rec)
        self.report = rep
        save_report(rep, self.paths["report"])
        return rep

    def _new_seed(self, old: int | None) -> int:
        seed = secrets.randbits(62)
        return seed + 1 if seed == old else seed

    # -- running ------------------------------------------------------------------------------------
    def to_render(self) -> list[CueRecord]:
        assert self.report is not None, "plan() first"
        return [c for c in self.report.cues if c.state not in ("done", "skipped")
                and (self.only is None or c.index in self.only or c.state in ("queued", "running"))]

    def _fields(self, rec: CueRecord) -> dict[str, Any]:
        o = self.opts
        f: dict[str, Any] = {"text": rec.text, "seed": rec.seed, "sample_rate": o.sample_rate, "channels": o.channels,
                             "bit_depth": o.bit_depth, "fit_length": False, **rec.asked, **o.sampling,
                             "tag": o.tag or f"voiceover {self.paths['stem'].name} cue {rec.index}"}
        if rec.voice:
            f["voice"] = rec.voice
        else:
            f["reference_audio"] = str(Path(o.ref_audio or "").expanduser().resolve())
            f["reference_text"] = o.ref_text
        if o.loudness is not None:
            f["loudness"] = o.loudness
        if o.priority is not None:
            f["priority"] = o.priority
        if self._raw_folder:
            f["folder"], f["name"] = self._raw_folder, f"cue-{rec.index:04d}"
        else:
            f["name"] = f"{self.paths['stem'].stem}-cue-{rec.index:04d}"
        return f

    def _submit_one(self, rec: CueRecord) -> None:
        from ..client import BadRequest, build_request

        for attempt in (0, 1):
            req = build_request("speech", **self._fields(rec)).model_copy(update={"request_id": rec.request_id})
            try:
                job = self.client.submit_request(req)
                break
            except BadRequest as exc:
                if exc.code == "path_not_allowed" and self._raw_folder and attempt == 0:
                    # the daemon may not write beside the output: it keeps the raw takes in its own folder,
                    # the fitted cues and the stem are written here anyway
                    self._raw_folder = None
                    self.on_note(f"the daemon may not write into {self.paths['raw']}; its raw takes stay in its "
                                 "output folder")
                    continue
                raise VoiceoverError(f"cue {rec.index}: {exc}") from None
        rec.job_id, rec.state, rec.error = job.id, "queued", None
        self.active[job.id] = _Active(rec, self.cues[rec.index])
        if self._sub is not None:
            self._sub.add(P.job_topic(job.id))

    def submit(self) -> int:
        """Submit every cue still to make (a resubmit of a known key returns the daemon's existing job).
        Returns how many are in flight."""
        assert self.report is not None, "plan() first"
        if self._sub is None:
            self._sub = self.client.channel.subscribe([])
        for rec in self.to_render():
            self._submit_one(rec)
            self.on_update(rec.index, 0.0, "queued")
        save_report(self.report, self.paths["report"])
        self._last_resync = 0.0  # look at every job once: some may have ended before we subscribed
        return len(self.active)

    @property
    def finished(self) -> bool:
        return not self.active

    def progress(self) -> float:
        """Overall fraction of the cues this run makes."""
        assert self.report is not None
        todo = [c for c in self.report.cues if self.only is None or c.index in self.only]
        if not todo:
            return 1.0
        running = {a.record.index: min(a.fraction, 0.99) for a in self.active.values()}  # 1.0 only when fitted
        return sum(1.0 if c.state in ("done", "failed", "cancelled") else running.get(c.index, 0.0)
                   for c in todo) / len(todo)

    def poll(self, timeout: float = 0.0) -> bool:
        """Read the events that came (waiting up to ``timeout`` for the first), fit the cues that finished,
        and now and then ask the daemon for the state of the rest. True while cues are in flight."""
        if not self.active:
            return False
        wait = timeout
        while self._sub is not None and self.active:
            try:
                msg = self._sub.recv(timeout=wait)
            except P.ProtocolError:
                msg = None
            wait = 0.0
            if msg is None:
                break
            job_id = msg.content.get("job_id")
            if job_id in self.active:
                self._event(job_id, msg.msg_type, msg.content)
        if self.active and time.monotonic() - self._last_resync >= self.RESYNC_S:
            self._last_resync = time.monotonic()
            self._resync()
        return bool(self.active)

    def _event(self, job_id: str, kind: str, content: dict[str, Any]) -> None:
        a = self.active[job_id]
        if kind == "progress":
            a.fraction, a.stage = float(content.get("fraction") or 0.0), str(content.get("stage") or "")
            a.record.state = "running"
            self.on_update(a.record.index, a.fraction, a.stage)
        elif kind == "started":
            a.record.state, a.stage = "running", "started"
            self.on_update(a.record.index, a.fraction, a.stage)
        elif kind == "done":
            self._done(job_id, str(content.get("path") or ""))
        elif kind in ("failed", "cancelled"):
            err = content.get("error") or {}
            self._ended(job_id, kind, f"{err.get('code')}: {err.get('message')}" if err else kind)

    def _resync(self) -> None:
        from ..client import ClientError, DaemonUnavailable

        for job_id in list(self.active):
            try:
                info = self.client.job(job_id)
            except DaemonUnavailable:
                self._daemon_lost()
                return
            except ClientError as exc:
                self._ended(job_id, "failed", str(exc))
                continue
            if info.state == "done" and info.result is not None:
                self._done(job_id, info.result.path)
            elif info.state in ("failed", "cancelled"):
                err = info.error
                self._ended(job_id, info.state, f"{err.code}: {err.message}" if err else info.state)
            elif info.state == "running":
                a = self.active[job_id]
                if info.fraction > a.fraction:
                    a.fraction, a.stage, a.record.state = info.fraction, info.stage or "running", "running"
                    self.on_update(a.record.index, a.fraction, a.stage)

    def _daemon_lost(self) -> None:
        """The daemon went away: start or reach it again and resubmit the cues in flight with their keys
        (the restarted daemon has them in its queue and runs them again; the key finds them)."""
        if self.reconnect is None:
            for job_id in list(self.active):
                self._ended(job_id, "failed", "the daemon went away")
            return
        self.on_note("the daemon went away: reconnecting and resuming the unfinished cues")
        with contextlib.suppress(Exception):
            self._sub.close()
        with contextlib.suppress(Exception):
            self.client.close()
        self.client = self.reconnect()
        self._sub = self.client.channel.subscribe([])
        pending = [a.record for a in self.active.values()]
        self.active.clear()
        for rec in pending:
            self._submit_one(rec)
        self._last_resync = 0.0

    def _ended(self, job_id: str, state: str, error: str) -> None:
        a = self.active.pop(job_id)
        a.record.state, a.record.error = state, error  # type: ignore[assignment]
        self.on_update(a.record.index, a.fraction, state)
        if self._sub is not None:
            self._sub.remove(P.job_topic(job_id))
        if state == "failed":
            self.on_note(f"cue {a.record.index} failed: {error}")
        prev = self._previous.pop(a.record.index, None)
        if prev is not None and prev.file and Path(prev.file).is_file():
            rep = self.report
            assert rep is not None
            rep.cues[rep.cues.index(a.record)] = prev.model_copy(update={"error": f"the new take {state}: {error}; "
                                                                          "the previous take is kept"})
            self.on_note(f"cue {a.record.index}: the new take {state}; the previous take is kept")
        save_report(self.report, self.paths["report"])  # type: ignore[arg-type]

    def _done(self, job_id: str, path: str) -> None:
        a = self.active[job_id]
        rec = a.record
        try:
            local = self.client.local_path(job_id, path)
            self._fit(rec, local)
        except (fit.FitError, wav.WavError, OSError) as exc:
            self._ended(job_id, "failed", f"fitting: {exc}")
            return
        except Exception as exc:  # e.g. the remote file could not be fetched
            self._ended(job_id, "failed", str(exc))
            return
        self.active.pop(job_id)
        if self._sub is not None:
            self._sub.remove(P.job_topic(job_id))
        rec.state = "done"
        self.on_update(rec.index, 1.0, "done")
        save_report(self.report, self.paths["report"])  # type: ignore[arg-type]

    def _limit(self, rec: CueRecord) -> int | None:
        """Most samples the cue may keep (--overflow): its slot (trim), up to the next cue (report), all (shift)."""
        if self.opts.overflow == "shift" or rec.slot_seconds is None:
            return None
        if self.opts.overflow == "trim":
            return round(rec.slot_seconds * self.opts.sample_rate)
        later = [c.start_sample for c in self.report.cues if c.start_sample > rec.start_sample]  # type: ignore[union-attr]
        return (min(later) - rec.start_sample) if later else None

    def _fit(self, rec: CueRecord, raw: str) -> None:
        info = wav.read_info(raw)
        sr = self.opts.sample_rate
        if info.rate != sr or info.channels != self.opts.channels:
            raise wav.WavError(f"{raw}: {info.rate} Hz {info.channels} ch, asked {sr} Hz {self.opts.channels} ch")
        slot_n = None if rec.slot_seconds is None else round(rec.slot_seconds * sr)
        tempo = fit.stretch_factor(info.frames, slot_n, self.opts.max_stretch)
        stretched = info.frames if tempo == 1.0 else max(1, round(info.frames / tempo))
        limit = self._limit(rec)
        keep = stretched if limit is None else min(stretched, limit)
        dst = self.paths["cues"] / f"cue-{rec.index:04d}.wav"
        old_raw = rec.raw_file
        out = fit.render_fitted(raw, dst, tempo=tempo, keep_samples=keep)
        over = 0 if slot_n is None else max(0, stretched - slot_n)
        rec.raw_file, rec.raw_seconds = raw, round(info.frames / sr, 6)
        rec.stretch = round(info.frames / stretched, 6) if stretched else 1.0
        rec.overflow_seconds = round(over / sr, 6)
        rec.trimmed_seconds = round((stretched - out.frames) / sr, 6)
        rec.fitted = over == 0
        rec.file, rec.placed_samples = str(dst), out.frames
        if over:
            how = {"trim": f"trimmed by {rec.trimmed_seconds:.3f} s", "report": "left running past its end"
                   + (f", cut by {rec.trimmed_seconds:.3f} s at the next cue" if rec.trimmed_seconds else ""),
                   "shift": "kept whole; later cues move"}[self.opts.overflow]
            self.on_note(f"cue {rec.index} is {over / sr:.3f} s longer than its {rec.slot_seconds:.3f} s slot after a "
                         f"x{rec.stretch:.3f} stretch: {how}")
        self._previous.pop(rec.index, None)
        if old_raw and old_raw != raw and Path(old_raw).parent == self.paths["raw"]:
            for p in (Path(old_raw), Path(old_raw).with_suffix(".json")):
                p.unlink(missing_ok=True)  # the superseded take of an --only rerun

    def cancel(self) -> None:
        """Stop the cues still in flight (the finished ones stay and go into the stem)."""
        self.cancelled = True
        for job_id in list(self.active):
            with contextlib.suppress(Exception):
                self.client.cancel(job_id)
            self._ended(job_id, "cancelled", "cancelled")

    # -- the stem -----------------------------------------------------------------------------------
    def finish(self) -> Report:
        """Place the finished cues (sample exact, silence between), write the stem and the cue files' spotting,
        the report and the spoken subtitles. Cues that did not finish are left out and listed."""
        rep = self.report
        assert rep is not None
        o = self.opts
        sr = o.sample_rate
        done = sorted((c for c in rep.cues if c.state == "done" and c.file), key=lambda c: c.start_sample)
        shift_to = 0
        placements: list[tuple[int, str, int]] = []
        for c in done:
            n = wav.read_info(c.file).frames  # type: ignore[arg-type]
            start = c.start_sample
            if o.overflow == "shift" and shift_to > start:
                start = shift_to
            c.shifted_seconds = round((start - c.start_sample) / sr, 6)
            c.placed_samples = n
            c.placed_start, c.placed_end = round(start / sr, 6), round((start + n) / sr, 6)
            placements.append((start, c.file, n))  # type: ignore[arg-type]
            shift_to = start + n
        last_end = max([round(Fraction(c.end) * sr) for c in rep.cues if c.end is not None] or [0])
        frames = max([last_end] + [s + n for s, _, n in placements])
        rep.length_samples, rep.length_seconds = frames, round(frames / sr, 6)
        fmt = wav.WavInfo(sr, o.channels, o.bit_depth, 3 if o.bit_depth == 32 else 1, 0, 0,
                          o.channels * o.bit_depth // 8)
        if placements:
            fmt = wav.read_info(placements[0][1])
        base = o.record_in_seconds()
        if base is not None:
            for (start, path, n), c in zip(placements, done):
                pcm = wav.read_pcm(path)
                wav.write_pcm(path, wav.read_info(path), pcm, self._spot(base, start, f"cue {c.index}: {c.text}"))
        wav.write_stem(self.paths["stem"], fmt, frames, placements,
                       self._spot(base, 0, self.script.path.name) if base is not None else ())
        rep.overflows = [c.index for c in rep.cues if c.state == "done" and c.overflow_seconds > 0]
        rep.state = "done" if all(c.state == "done" for c in rep.cues) else "incomplete"
        try:
            rep.subtitles = [str(p) for p in write_spoken_subtitles(rep, [self.paths["srt"], self.paths["vtt"]])]
        except ImportError:
            self.on_note("pysubs2 is not installed: no spoken SRT/VTT written")
        save_report(rep, self.paths["report"])
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        return rep

    def _spot(self, base: Fraction, start: int, description: str) -> list[tuple[bytes, bytes]]:
        o = self.opts
        sr = o.sample_rate
        ref = round(base * sr) + start
        rate = parse_rate(o.fps) if o.fps is not None else None
        info = bwf.Bext(description=description[:256], originator="unimoe-audio voiceover", time_reference=ref,
                        coding_history=f"A=PCM,F={sr},W={o.bit_depth},M={'mono' if o.channels == 1 else 'stereo'},"
                        "T=unimoe-audio")
        ixml = bwf.ixml_chunk(time_reference=ref, sample_rate=sr, bit_depth=o.bit_depth, channels=o.channels,
                              timecode_rate=rate, drop=";" in str(o.record_in or ""), **o.spot_notes)
        return [(b"bext", bwf.bext_chunk(info)), (b"iXML", ixml)]
