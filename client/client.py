"""The Python client of the unimoe-audio daemon.

Light on purpose: pyzmq, pydantic and the standard library only (no torch, no numpy, no rich), so it
imports inside Blender's and REAPER's embedded Pythons. The envelope is :mod:`unimoe_audio.client.wire`,
the connection :mod:`~unimoe_audio.client.channel`; the message types are
:mod:`unimoe_audio.client.protocol`. Beside this module: :mod:`.errors` (typed errors),
:mod:`.autostart` (finding or starting a local daemon), :mod:`.request_fields` (flat fields to a
request), :mod:`.jobs` (updates, results, :class:`JobWatch`), :mod:`.delivery` (a remote host's audio
brought here). This module re-exports their public names: host scripts import them from here.

Typical use::

    from unimoe_audio.client.client import Client

    with Client() as c:                                   # connects; starts a daemon if none answers
        job = c.music("calm piano", seconds=8, output="/tmp/cue.wav")
        for update in job.updates():                      # progress iterator (queued, progress, ... done)
            print(update.kind, update.fraction, update.stage)
        result = job.wait()                               # typed: path, seconds, sample_rate, seed ...

Errors are typed: :class:`DaemonUnavailable` (none answers and none could be started, or it went away),
:class:`ProtocolMismatch` (the daemon speaks another major protocol version), :class:`BadRequest` (the
daemon rejected a field: ``.field``, ``.wanted``), :class:`GenerationFailed` (the job failed) and its
subclass :class:`JobCancelled`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ValidationError

from . import protocol as P
from . import wire
from .autostart import ping_daemon, read_live_connection, start_daemon
from .channel import Channel
from .connection import ConnectionInfo, pid_alive
from .delivery import RemoteDelivery
from .errors import (
    BadRequest,
    ClientError,
    DaemonUnavailable,
    GenerationFailed,
    JobCancelled,
    NotAllowed,
    ProtocolMismatch,
    from_protocol_error,
)
from .jobs import GenerationResult, Job, JobUpdate, JobWatch, PartialAudio, update_from_event, update_from_snapshot
from .request_fields import build_request, task_name
from .settings import Settings, load_settings

__all__ = [
    "Client", "Job", "JobWatch", "JobUpdate", "GenerationResult", "PartialAudio", "ClientError", "DaemonUnavailable",
    "ProtocolMismatch", "NotAllowed", "BadRequest", "GenerationFailed", "JobCancelled", "start_daemon",
    "build_request",
]


class Client:
    """A connection to the local daemon, or to a remote host's (``settings.remote``: a profile name).

    ``auto_start``: when no local daemon answers, start one in the background and say so through
    ``notice`` (default: a line on stderr). ``connect_timeout`` bounds the wait for it; ``timeout`` bounds
    each request. Thread-safe for requests; each :meth:`updates` call opens its own event subscription.

    Remote: a remote host is never started from here, and is alive when it answers a ping (no pid check).
    Its finished audio comes to this machine: :meth:`wait` fetches it (checked by size and sha256) to the
    requested ``output`` path, or into this machine's output folder, and returns the local path.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        auto_start: bool = True,
        notice: Callable[[str], None] | None = None,
        connect_timeout: float = 60.0,
        timeout: float = 30.0,
    ):
        self.settings = settings or load_settings()
        self.timeout = timeout
        self._notice = notice or (lambda m: print(f"unimoe-audio: {m}", file=sys.stderr, flush=True))
        self.started_daemon = False
        self.remote = bool(self.settings.remote)
        self._remote_pid = 0
        self._delivery = RemoteDelivery(self) if self.remote else None
        if self.remote:
            self.info = self._connect_remote(min(10.0, connect_timeout))
            self.channel = Channel.open(self.info, self.settings, timeout=timeout)
            return
        info = read_live_connection(self.settings)
        ping = ping_daemon(info, min(5.0, connect_timeout), self.settings) if info is not None else None
        if ping is None:
            if not auto_start:
                where = self.settings.connection_file
                raise DaemonUnavailable(
                    f"no daemon is running ({'no answer from pid ' + str(info.pid) if info else 'no ' + str(where)}); "
                    "start one with 'unimoe-audio serve'", "not_running")
            self._notice("no daemon was running; starting one in the background "
                         f"(logs in {self.settings.log_path})")
            pid = start_daemon(self.settings, timeout=connect_timeout)
            self.started_daemon = True
            self._notice(f"daemon started (pid {pid})")
            info = read_live_connection(self.settings)
            if info is None:
                raise DaemonUnavailable("the daemon started but its connection file vanished", "not_running")
        self.info = info
        self.channel = Channel.open(info, self.settings, timeout=timeout)

    def _connect_remote(self, timeout: float) -> ConnectionInfo:
        from . import remote

        name = str(self.settings.remote)
        try:
            info = remote.load_profile(self.settings, name)
        except (remote.RemoteSetupError, P.ProtocolError) as exc:
            raise DaemonUnavailable(str(exc), "not_running") from None
        reply = ping_daemon(info, timeout, self.settings)
        if reply is not None:
            self._remote_pid = reply.pid
        else:
            raise DaemonUnavailable(
                f"no answer from {name} ({info.connect_host}, TCP {info.request_port}-{info.events_port}) within "
                f"{timeout:g} s: is its daemon running, and the firewall open for those ports?", "not_running")
        return info

    # -- plumbing ---------------------------------------------------------------------------------
    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def pid(self) -> int:
        """The daemon's pid (on a remote host: as its ping reported it; not a process here)."""
        return self.info.pid or self._remote_pid

    def _call(self, msg_type: str, content: BaseModel | dict[str, Any] | None = None, *, control: bool = False,
              timeout: float | None = None) -> BaseModel:
        try:
            return self.channel.call(msg_type, content, control=control, timeout=timeout)
        except wire.ReplyTimeout as exc:
            if self.remote:
                raise DaemonUnavailable(f"{self.info.name} ({self.info.connect_host}) did not answer: {exc}",
                                        "timeout") from None
            if self.info.pid and not pid_alive(self.info.pid):
                raise DaemonUnavailable(f"the daemon (pid {self.info.pid}) is gone", "not_running") from None
            raise DaemonUnavailable(f"daemon did not answer: {exc}", "timeout") from None
        except P.ProtocolError as exc:
            raise from_protocol_error(exc) from None

    # -- daemon -----------------------------------------------------------------------------------
    def ping(self) -> P.PingReply:
        return self._call("ping", {}, control=True)  # type: ignore[return-value]

    def status(self) -> P.StatusReply:
        """Loaded model (``tiny`` when the random fallback serves), device, memory, queue."""
        return self._call("status", {}, control=True)  # type: ignore[return-value]

    def models(self) -> list[P.ModelInfo]:
        return list(self._call("models", {}).models)  # type: ignore[attr-defined]

    def unload(self) -> P.UnloadReply:
        return self._call("unload", {}, control=True)  # type: ignore[return-value]

    def shutdown(self, requeue_running: bool = True, wait: float = 10.0) -> None:
        """Ask the daemon to stop; with ``wait``, until its process is gone."""
        self._call("shutdown", P.ShutdownRequest(requeue_running=requeue_running), control=True)
        deadline = time.monotonic() + wait
        while wait and not self.remote and time.monotonic() < deadline and pid_alive(self.info.pid):
            time.sleep(0.05)

    # -- submitting -------------------------------------------------------------------------------
    def submit_request(self, request: P.SubmitRequest, *, retries: int = 1) -> "Job":
        """Submit one job. Every submit carries an idempotency key (``request_id``, a fresh one unless the
        request has its own), so a submit retried after a timeout (``retries`` times, the daemon alive)
        gets the first job back instead of rendering twice."""
        wanted: tuple[Path, str | None] | None = None
        if self._delivery is not None:
            request, wanted = self._delivery.outgoing(request)
        if request.request_id is None:
            request = request.model_copy(update={"request_id": wire.new_id()})
        for attempt in range(retries + 1):
            try:
                reply = self._call("submit", request)
                break
            except DaemonUnavailable as exc:
                if exc.code != "timeout" or attempt == retries:
                    raise
        assert isinstance(reply, P.SubmitReply)
        if wanted is not None and self._delivery is not None:
            self._delivery.expect(reply.job_id, wanted)
        return Job(self, reply.job_id, task=request.spec.task, position=reply.position, request=request)

    def submit(self, kind: str, **fields: Any) -> "Job":
        """Submit by flat field names (the CLI's and batch files' vocabulary); see :func:`build_request`."""
        return self.submit_request(build_request(kind, **fields))

    def speech(self, text: str, *, voice: str | None = None, reference_audio: str | None = None,
               reference_text: str | None = None, **fields: Any) -> "Job":
        return self.submit("speech", text=text, voice=voice, reference_audio=reference_audio,
                           reference_text=reference_text, **fields)

    def music(self, caption: str, **fields: Any) -> "Job":
        return self.submit("music", caption=caption, **fields)

    def score(self, video: str, caption: str = "", **fields: Any) -> "Job":
        return self.submit("score", video=video, caption=caption, **fields)

    # -- jobs -------------------------------------------------------------------------------------
    def job(self, job_id: str) -> P.JobInfo:
        return self._call("job", P.JobRequest(job_id=job_id)).job  # type: ignore[attr-defined]

    def jobs(self, states: list[str] | None = None, task: str | None = None, limit: int = 100) -> list[P.JobInfo]:
        req = P.JobsRequest(states=states, task=(task_name(task) or task) if task else None, limit=limit)
        return list(self._call("jobs", req).jobs)  # type: ignore[attr-defined]

    def cancel(self, job_id: str) -> P.CancelReply:
        return self._call("cancel", P.CancelRequest(job_id=job_id), control=True)  # type: ignore[return-value]

    def watch(self, job_id: str, **kw: Any) -> "JobWatch":
        """Follow a job without blocking: see :class:`JobWatch` (hosts call its ``poll()`` from a timer)."""
        return JobWatch(self, job_id, **kw)

    def snapshot(self, job_id: str) -> P.SnapshotReply:
        return self._call("snapshot", P.SnapshotRequest(job_id=job_id))  # type: ignore[return-value]

    def updates(self, job_id: str, *, timeout: float | None = None, poll: float = 2.0) -> Iterator[JobUpdate]:
        """The job's updates, in order, ending with its final one (done, failed or cancelled).

        Subscribes first, then asks for a snapshot, so nothing is missed; while no event arrives it asks
        for a snapshot every ``poll`` seconds, which also notices a daemon that went away. From a remote
        host, the ``done`` update's path is the local copy (see :meth:`local_path`), so the panel and
        scripts that follow updates get a file on this machine.
        """
        for upd in self._host_updates(job_id, timeout=timeout, poll=poll):
            yield self.localized(upd)

    def localized(self, upd: JobUpdate) -> JobUpdate:
        """``upd`` with a remote host's ``done`` path replaced by the local copy (fetched once); as is from a
        local daemon. For callers that follow a job with :class:`JobWatch`."""
        if self._delivery is not None and upd.kind == "done" and isinstance(upd.event, P.DoneEvent):
            upd.event = self._delivery.localize_done(upd.job_id, upd.event)
        return upd

    def _host_updates(self, job_id: str, *, timeout: float | None, poll: float) -> Iterator[JobUpdate]:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            sub = self.channel.subscribe([P.job_topic(job_id)])
        except P.ProtocolError as exc:
            raise from_protocol_error(exc) from None
        try:
            snap = self.snapshot(job_id)
            last_seq = snap.seq
            first = update_from_snapshot(snap)
            yield first
            if first.final:
                return
            next_poll = time.monotonic() + poll
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"job {job_id} not finished within {timeout:g} s")
                msg = sub.recv(timeout=0.2)
                if msg is not None:
                    seq = int(msg.content.get("seq") or 0)
                    if msg.content.get("job_id") != job_id or (seq and seq <= last_seq):
                        continue
                    last_seq = max(last_seq, seq)
                    upd = update_from_event(msg.msg_type, msg.content)
                    if upd is None:
                        continue
                    yield upd
                    if upd.final:
                        return
                    next_poll = time.monotonic() + poll
                    continue
                if time.monotonic() >= next_poll:
                    snap = self.snapshot(job_id)
                    next_poll = time.monotonic() + poll
                    if snap.seq > last_seq:
                        last_seq = snap.seq
                        upd = update_from_snapshot(snap)
                        yield upd
                        if upd.final:
                            return
        finally:
            sub.close()

    def wait(self, job_id: str, *, timeout: float | None = None,
             on_progress: Callable[[JobUpdate], Any] | None = None) -> GenerationResult:
        """Block until the job ends; return its result or raise GenerationFailed / JobCancelled."""
        final: JobUpdate | None = None
        for upd in self.updates(job_id, timeout=timeout):
            if on_progress is not None:
                on_progress(upd)
            if upd.final:
                final = upd
        assert final is not None
        return self._result(job_id, final)

    def stream(self, job_id: str, *, timeout: float | None = None) -> Iterator[PartialAudio]:
        """Partial audio files of a job submitted with ``stream_partial=True``, as they are written.
        Ends when the job ends; raises GenerationFailed / JobCancelled if it did not succeed."""
        for upd in self.updates(job_id, timeout=timeout):
            if upd.kind == "partial" and isinstance(upd.event, P.PartialEvent):
                path = upd.event.path
                if self._delivery is not None:
                    local = self._delivery.partial(job_id, path)
                    if local is None:
                        continue
                    path = local
                yield PartialAudio(job_id, path, upd.event.seconds)
            if upd.final:
                self._result(job_id, upd)

    def _result(self, job_id: str, final: JobUpdate) -> GenerationResult:
        res = self._host_result(job_id, final)
        return self._delivery.bring_home(res) if self._delivery is not None else res

    def fetch(self, job_id: str, dest: str | os.PathLike[str], *, part: str = "result",
              name: str | None = None) -> P.FetchReply:
        """Copy a job's file from the daemon to ``dest`` on this machine (atomically, checked by size and
        sha256): ``part`` is ``result`` (the audio), ``sidecar`` (its JSON) or ``partial`` (a preview)."""
        from . import remote

        def request(req: P.FetchRequest) -> wire.Message:
            try:
                return self.channel.request_raw("fetch", req)
            except wire.ReplyTimeout as exc:
                raise DaemonUnavailable(f"fetch of job {job_id}: {exc}", "timeout") from None

        try:
            return remote.receive_file(request, job_id, Path(dest), part=part, name=name)
        except P.ProtocolError as exc:
            raise from_protocol_error(exc, f"fetch of job {job_id}: ") from None

    def local_path(self, job_id: str, path: str) -> str:
        """Where a done job's audio is on this machine. Local daemon: ``path`` itself. Remote host: the
        file (and its sidecar) fetched once — to the ``output`` this client asked for, else into this
        machine's output folder under the host's file name — and that copy's path. For callers that
        follow jobs by events or polling (the panel, host scripts); :meth:`wait` does it already."""
        if self._delivery is None:
            return path
        return self._delivery.local_path(job_id, path)

    def _host_result(self, job_id: str, final: JobUpdate) -> GenerationResult:
        ev = final.event
        if final.kind == "done":
            if isinstance(ev, P.DoneEvent) and ev.task:
                return GenerationResult(job_id=job_id, task=ev.task, tag=ev.tag, **ev.result_fields())
            info = self.job(job_id)  # an older daemon's done event names no task
            if info.result is None:
                raise GenerationFailed(f"job {job_id} is done but has no result", job_id=job_id)
            return GenerationResult(job_id=job_id, task=info.task, tag=info.tag, **info.result.result_fields())
        if final.kind == "cancelled":
            raise JobCancelled(f"job {job_id} was cancelled", "cancelled", job_id=job_id)
        err: P.ErrorReply | None = getattr(ev, "error", None)
        if err is None:
            with contextlib.suppress(ClientError):
                err = self.job(job_id).error
        if err is None:
            raise GenerationFailed(f"job {job_id} failed", job_id=job_id)
        where = f" (field {err.field})" if err.field else ""
        raise GenerationFailed(f"job {job_id} failed: {err.code}: {err.message}{where}", err.code, err.field,
                               err.wanted, job_id=job_id)

    # -- voices -----------------------------------------------------------------------------------
    def voices(self) -> list[P.VoiceInfo]:
        return list(self._call("voices", P.VoicesRequest(action="list")).voices)  # type: ignore[attr-defined]

    def voice_add(self, name: str, audio: str | os.PathLike[str], transcript: str, *, replace: bool = False,
                  timeout: float = 600.0) -> P.VoiceInfo:
        """Save a voice: the daemon encodes the recording once and keeps its codes and transcript, so
        later ``speech(voice=name)`` requests need neither the file nor a re-encode."""
        try:
            req = P.VoicesRequest(action="add", name=name, audio_path=str(Path(audio).expanduser().resolve()),
                                  transcript=transcript)
        except ValidationError as exc:
            raise from_protocol_error(P.validation_error(exc)) from None
        if any(v.name == name for v in self.voices()):
            if not replace:
                raise BadRequest(f"name: a voice named {name!r} already exists (replace it with --force / replace=True)",
                                 "invalid_input", "name", "a new name")
            self.voice_rm(name)
        reply = self._call("voices", req, timeout=timeout)
        for v in reply.voices:  # type: ignore[attr-defined]
            if v.name == name:
                return v
        return P.VoiceInfo(name=name, transcript=transcript)

    def voice_rm(self, name: str) -> list[P.VoiceInfo]:
        try:
            req = P.VoicesRequest(action="remove", name=name)
        except ValidationError as exc:
            raise from_protocol_error(P.validation_error(exc)) from None
        return list(self._call("voices", req).voices)  # type: ignore[attr-defined]
