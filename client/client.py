"""The Python client of the unimoe-audio daemon.

Light on purpose: pyzmq, pydantic and the standard library only (no torch, no numpy, no rich), so it
imports inside Blender's and REAPER's embedded Pythons. The wire (framing, signing, connection file)
is :mod:`unimoe_audio.client.wire`; the message types are :mod:`unimoe_audio.client.protocol`.

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
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, ValidationError

from . import protocol as P
from . import wire
from .settings import ENV_PREFIX, Settings, load_settings

__all__ = [
    "Client", "Job", "JobWatch", "JobUpdate", "GenerationResult", "PartialAudio", "ClientError", "DaemonUnavailable",
    "ProtocolMismatch", "NotAllowed", "BadRequest", "GenerationFailed", "JobCancelled", "start_daemon", "TASK_NAMES",
]

# CLI / batch task names -> protocol task names
TASK_NAMES = {"speech": "speech", "music": "music", "score": "video_score", "video_score": "video_score"}
_BAD_INPUT_CODES = {"invalid_input", "path_not_allowed", "not_found", "too_large", "media_error", "unknown_type",
                    "bad_message"}
_ENGINE_CODES = {"model_error", "checkpoint_error", "out_of_memory", "internal", "cancelled"}
_UNAVAILABLE_CODES = {"busy", "shutting_down", "version_mismatch", "bad_signature", "not_running", "timeout"}
_REFUSED_CODES = {"not_allowed", "curve_required", "handshake_failed"}


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
class ClientError(Exception):
    """Base class of the client's errors. ``code`` is the protocol error code when there is one."""

    def __init__(self, message: str, code: str = "error", field: str | None = None, wanted: str | None = None):
        super().__init__(message)
        self.code = code
        self.field = field
        self.wanted = wanted


class DaemonUnavailable(ClientError):
    """No daemon answers (and none could be started), it stopped, or it refuses work (busy, stopping)."""


class ProtocolMismatch(DaemonUnavailable):
    """The daemon speaks another major protocol version than this client."""


class NotAllowed(DaemonUnavailable):
    """The daemon refused the connection itself: this machine's key is not on its allow list, or one side
    speaks CurveZMQ and the other does not (named at once from the handshake, not a timeout)."""


class BadRequest(ClientError):
    """The daemon (or the client's own validation) rejected the request; ``field`` names the culprit."""


class GenerationFailed(ClientError):
    """The job was accepted and then failed."""

    def __init__(self, message: str, code: str = "error", field: str | None = None, wanted: str | None = None,
                 job_id: str | None = None):
        super().__init__(message, code, field, wanted)
        self.job_id = job_id


class JobCancelled(GenerationFailed):
    """The job was cancelled (by this client or another)."""


def _from_protocol_error(exc: P.ProtocolError, context: str = "") -> ClientError:
    msg = f"{context}{exc.code}: {exc}"
    if exc.wanted:
        msg += f" (wanted: {exc.wanted})"
    if exc.code == "version_mismatch":
        return ProtocolMismatch(f"{msg}; this client speaks protocol {P.PROTOCOL_VERSION}. Restart the daemon "
                                "from the same installation ('unimoe-audio serve').", exc.code, exc.field, exc.wanted)
    if exc.code in _REFUSED_CODES:
        return NotAllowed(f"{exc}" + (f"; {exc.wanted}" if exc.wanted else ""), exc.code, exc.field, exc.wanted)
    if exc.code in _BAD_INPUT_CODES:
        return BadRequest(msg, exc.code, exc.field, exc.wanted)
    if exc.code in _UNAVAILABLE_CODES:
        return DaemonUnavailable(msg, exc.code, exc.field, exc.wanted)
    if exc.code in _ENGINE_CODES:  # e.g. 'voices add' when the model cannot load or encode
        return GenerationFailed(msg, exc.code, exc.field, exc.wanted)
    return ClientError(msg, exc.code, exc.field, exc.wanted)


# --------------------------------------------------------------------------------------------------
# typed results
# --------------------------------------------------------------------------------------------------
class GenerationResult(BaseModel):
    """A finished job's audio file and its format."""

    job_id: str
    task: str = ""
    status: str = "done"
    path: str
    sidecar: str = ""
    seconds: float
    sample_rate: int
    channels: int
    bit_depth: int = 24
    seed: int
    tag: str | None = None
    host_path: str | None = None  # on a remote host: where the daemon wrote it (``path`` is the local copy)


@dataclass
class PartialAudio:
    """The audio so far of a streaming job (a WAV file under the cache folder)."""

    job_id: str
    path: str
    seconds: float


@dataclass
class JobUpdate:
    """One step of a job: ``kind`` is the event type (accepted, started, progress, partial, done, failed,
    cancelled, requeued, or ``snapshot`` for the state found when the watch began)."""

    kind: str
    job_id: str
    seq: int = 0
    fraction: float = 0.0
    stage: str = ""
    state: str = ""
    event: BaseModel | None = None

    @property
    def final(self) -> bool:
        return self.kind in P.FINAL_EVENTS


# --------------------------------------------------------------------------------------------------
# starting the daemon
# --------------------------------------------------------------------------------------------------
def daemon_gone(pid: int, settings: Settings) -> str:
    """What the client says when the daemon's process vanished under a request or a job."""
    return (f"the daemon (pid {pid}) crashed or was killed; the reason is at the end of its log, "
            f"{settings.log_path / 'daemon.log'}")


def _read_live_connection(settings: Settings) -> wire.ConnectionInfo | None:
    """The connection file if it names a live process, else None. Raises ProtocolMismatch early."""
    try:
        info = wire.read_connection_file(settings.connection_file)
    except wire.DaemonNotRunning:
        return None
    except P.ProtocolError as exc:
        raise DaemonUnavailable(str(exc), exc.code) from None
    if info.pid and not wire.pid_alive(info.pid):
        return None
    try:
        P.check_version(info.protocol_version)
    except P.ProtocolError as exc:
        raise _from_protocol_error(exc, f"daemon pid {info.pid}: ") from None
    return info


def _ping(info: wire.ConnectionInfo, timeout: float, settings: Settings | None = None) -> P.PingReply | None:
    ch = wire.Channel.open(info, settings, timeout=timeout)
    try:
        reply = ch.call("ping", {}, control=True, timeout=timeout)
    except wire.ReplyTimeout:
        return None
    except P.ProtocolError as exc:
        raise _from_protocol_error(exc) from None
    finally:
        ch.close()
    assert isinstance(reply, P.PingReply)
    try:
        P.check_version(reply.protocol_version)
    except P.ProtocolError as exc:
        raise _from_protocol_error(exc) from None
    return reply


def daemon_command() -> list[str]:
    """The command that runs the daemon (the client never imports the daemon package)."""
    return [sys.executable, "-m", "unimoe_audio.daemon"]


def start_daemon(settings: Settings | None = None, *, env: dict[str, str] | None = None, wait: bool = True,
                 timeout: float = 60.0) -> int:
    """Start ``python -m unimoe_audio.daemon`` in the background (its own session, so the caller's Ctrl-C
    does not reach it) and, with ``wait``, return once it answers a ping. Returns the daemon's pid.

    Only one starter at a time: a lock file in the runtime folder serialises concurrent auto-starts, and a
    daemon that is already answering is reused.
    """
    settings = settings or load_settings()
    env = dict(os.environ if env is None else env)
    # The child must resolve the same folders as this process.
    for name in ("home", "config_dir", "data_dir", "cache_dir", "log_dir", "runtime_dir", "models_dir",
                 "voices_dir", "output_dir"):
        value = getattr(settings, name)
        key = f"{ENV_PREFIX}{name.upper()}"
        if value is not None and key not in env:
            env[key] = str(value)
    runtime = wire.ensure_private_dir(settings.runtime_path)
    log_dir = settings.log_path
    log_dir.mkdir(parents=True, exist_ok=True)
    with _start_lock(runtime / "autostart.lock"):
        info = _read_live_connection(settings)
        if info is not None and _ping(info, 2.0, settings) is not None:
            return info.pid
        # The daemon's own --detach double-forks it into its own session (so Ctrl-C here does not reach
        # it and no zombie is left in a long-lived host such as Blender) and returns once it listens.
        try:
            proc = subprocess.run([*daemon_command(), "--detach", "--wait", str(timeout)], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            raise DaemonUnavailable(f"the daemon did not start within {timeout:g} s; see {log_dir}", "timeout") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise DaemonUnavailable(f"the daemon could not start (exit {proc.returncode}); logs in {log_dir}:\n{detail}",
                                    "not_running")
        if not wait:
            return _parse_pid(proc.stdout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = _read_live_connection(settings)
            if info is not None and _ping(info, 1.0, settings) is not None:
                return info.pid
            time.sleep(0.1)
        raise DaemonUnavailable(f"the daemon did not answer within {timeout:g} s; see {log_dir}", "timeout")


def _parse_pid(text: str) -> int:
    for token in reversed(text.split()):
        if token.isdigit():
            return int(token)
    return 0


@contextlib.contextmanager
def _start_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, the daemon's pid file arbitrates
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------------------------------
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
        self._wanted: dict[str, tuple[Path, str | None]] = {}  # remote: job -> (local folder, name) asked for
        self._delivered: dict[str, str] = {}  # remote: job -> its local copy
        self._host_paths: dict[str, str] = {}  # remote: job -> where the host wrote it
        if self.remote:
            self.info = self._connect_remote(min(10.0, connect_timeout))
            self.channel = wire.Channel.open(self.info, self.settings, timeout=timeout)
            return
        info = _read_live_connection(self.settings)
        ping = _ping(info, min(5.0, connect_timeout), self.settings) if info is not None else None
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
            info = _read_live_connection(self.settings)
            if info is None:
                raise DaemonUnavailable("the daemon started but its connection file vanished", "not_running")
        self.info = info
        self.channel = wire.Channel.open(info, self.settings, timeout=timeout)

    def _connect_remote(self, timeout: float) -> wire.ConnectionInfo:
        from . import remote

        name = str(self.settings.remote)
        try:
            info = remote.load_profile(self.settings, name)
        except (remote.RemoteSetupError, P.ProtocolError) as exc:
            raise DaemonUnavailable(str(exc), "not_running") from None
        reply = _ping(info, timeout, self.settings)
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
            if self.info.pid and not wire.pid_alive(self.info.pid):
                raise DaemonUnavailable(daemon_gone(self.info.pid, self.settings), "not_running") from None
            raise DaemonUnavailable(f"daemon did not answer: {exc}", "timeout") from None
        except P.ProtocolError as exc:
            raise _from_protocol_error(exc) from None

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
        while wait and not self.remote and time.monotonic() < deadline and wire.pid_alive(self.info.pid):
            time.sleep(0.05)

    # -- submitting -------------------------------------------------------------------------------
    def submit_request(self, request: P.SubmitRequest, *, retries: int = 1) -> "Job":
        """Submit one job. Every submit carries an idempotency key (``request_id``, a fresh one unless the
        request has its own), so a submit retried after a timeout (``retries`` times, the daemon alive)
        gets the first job back instead of rendering twice."""
        wanted: tuple[Path, str | None] | None = None
        if self.remote and request.output.folder:
            # The folder is this machine's: the host writes into its own output folder (under the same
            # name), and wait() brings the file here.
            wanted = (Path(request.output.folder), request.output.name)
            request = request.model_copy(update={"output": request.output.model_copy(update={"folder": None})})
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
        if wanted is not None:
            self._wanted[reply.job_id] = wanted
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
        req = P.JobsRequest(states=states, task=TASK_NAMES.get(task, task) if task else None, limit=limit)
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
            if self.remote and upd.kind == "done" and isinstance(upd.event, P.DoneEvent):
                upd.event = self._localize_done(job_id, upd.event)
            yield upd

    def _localize_done(self, job_id: str, ev: P.DoneEvent) -> P.DoneEvent:
        try:
            local = self.local_path(job_id, ev.path)
        except ClientError as exc:  # e.g. the host removed the file: the host path stays, said once
            self._notice(f"job {job_id}: its audio could not be fetched from {self.info.name}: {exc}")
            return ev
        self._host_paths[job_id] = ev.path
        side = Path(local).with_suffix(".json")
        return ev.model_copy(update={"path": local, "sidecar": str(side) if side.is_file() else ""})

    def _host_updates(self, job_id: str, *, timeout: float | None, poll: float) -> Iterator[JobUpdate]:
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            sub = self.channel.subscribe([P.job_topic(job_id)])
        except P.ProtocolError as exc:
            raise _from_protocol_error(exc) from None
        try:
            snap = self.snapshot(job_id)
            last_seq = snap.seq
            first = _update_from_snapshot(snap)
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
                    upd = _update_from_event(msg.msg_type, msg.content)
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
                        upd = _update_from_snapshot(snap)
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
                if self.remote:
                    name = Path(path).name
                    local = self.settings.cache_path / "partials" / job_id / name
                    try:
                        self.fetch(job_id, local, part="partial", name=name)
                    except ClientError:
                        continue  # superseded and removed on the host already: the next one follows
                    path = str(local)
                yield PartialAudio(job_id, path, upd.event.seconds)
            if upd.final:
                self._result(job_id, upd)

    def _result(self, job_id: str, final: JobUpdate) -> GenerationResult:
        res = self._host_result(job_id, final)
        return self._bring_home(res) if self.remote else res

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
            raise _from_protocol_error(exc, f"fetch of job {job_id}: ") from None

    def local_path(self, job_id: str, path: str) -> str:
        """Where a done job's audio is on this machine. Local daemon: ``path`` itself. Remote host: the
        file (and its sidecar) fetched once — to the ``output`` this client asked for, else into this
        machine's output folder under the host's file name — and that copy's path. For callers that
        follow jobs by events or polling (the panel, host scripts); :meth:`wait` does it already."""
        if not self.remote:
            return path
        done = self._delivered.get(job_id)
        if done is not None and Path(done).is_file():
            return done
        folder, name = self._wanted.get(job_id, (self.settings.output_path, None))
        dest = folder / (f"{name}.wav" if name else Path(path).name)
        self.fetch(job_id, dest)
        with contextlib.suppress(ClientError):
            self.fetch(job_id, dest.with_suffix(".json"), part="sidecar")
        self._wanted.pop(job_id, None)
        self._delivered[job_id] = str(dest)
        return str(dest)

    def _bring_home(self, res: GenerationResult) -> GenerationResult:
        host_path = self._host_paths.get(res.job_id, res.path)
        local = Path(self.local_path(res.job_id, host_path))
        sidecar = local.with_suffix(".json")
        return res.model_copy(update={"path": str(local), "sidecar": str(sidecar) if sidecar.is_file() else "",
                                      "host_path": host_path})

    def _host_result(self, job_id: str, final: JobUpdate) -> GenerationResult:
        ev = final.event
        if final.kind == "done":
            if isinstance(ev, P.DoneEvent):
                return GenerationResult(job_id=job_id, path=ev.path, sidecar=ev.sidecar, seconds=ev.seconds,
                                        sample_rate=ev.sample_rate, channels=ev.channels, bit_depth=ev.bit_depth,
                                        seed=ev.seed, tag=ev.tag, task=self._task_of(job_id))
            info = self.job(job_id)
            if info.result is None:
                raise GenerationFailed(f"job {job_id} is done but has no result", job_id=job_id)
            r = info.result
            return GenerationResult(job_id=job_id, task=info.task, path=r.path, sidecar=r.sidecar, seconds=r.seconds,
                                    sample_rate=r.sample_rate, channels=r.channels, bit_depth=r.bit_depth,
                                    seed=r.seed, tag=info.tag)
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

    def _task_of(self, job_id: str) -> str:
        try:
            return self.job(job_id).task
        except ClientError:
            return ""

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
            raise _from_protocol_error(P.validation_error(exc)) from None
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
            raise _from_protocol_error(P.validation_error(exc)) from None
        return list(self._call("voices", req).voices)  # type: ignore[attr-defined]


class JobWatch:
    """A job followed without blocking, for hosts that own their UI thread (REAPER's defer, Blender's timers).

    Opening the watch subscribes to the job's events, then takes one snapshot (so nothing is missed).
    :meth:`poll` only reads events already received (no request, returns at once) and gives the newest
    update, or None when nothing new came. When no event has come for ``resync_s`` it checks that the
    daemon's process is alive (a local check) and sends one short snapshot request (``resync_timeout``;
    a busy daemon that does not answer in time is simply asked again later), which also covers events
    published before the subscription reached the daemon.
    """

    def __init__(self, client: "Client", job_id: str, *, resync_s: float = 5.0, resync_timeout: float = 0.25):
        self.client = client
        self.job_id = job_id
        self.resync_s = resync_s
        self.resync_timeout = resync_timeout
        self.requests = 1  # requests sent to the daemon (the opening snapshot); a host can check its cost
        try:
            self._sub: wire.Subscription | None = client.channel.subscribe([P.job_topic(job_id)])
        except P.ProtocolError as exc:
            raise _from_protocol_error(exc) from None
        snap = client.snapshot(job_id)
        self._seq = snap.seq
        self.last: JobUpdate = _update_from_snapshot(snap)
        self._pending: JobUpdate | None = self.last
        self._quiet_since = time.monotonic()
        if self.last.final:
            self.close()

    def poll(self) -> JobUpdate | None:
        newest, self._pending = self._pending, None
        while self._sub is not None and not (newest is not None and newest.final):
            msg = self._sub.recv(timeout=0)
            if msg is None:
                break
            seq = int(msg.content.get("seq") or 0)
            if msg.content.get("job_id") != self.job_id or (seq and seq <= self._seq):
                continue
            upd = _update_from_event(msg.msg_type, msg.content)
            if upd is not None:
                self._seq = max(self._seq, seq)
                newest = upd
        if newest is None and not self.last.final and time.monotonic() - self._quiet_since >= self.resync_s:
            self._quiet_since = time.monotonic()
            newest = self._resync()
        if newest is None:
            return None
        if not newest.final and newest.kind not in ("progress", "snapshot"):
            newest.fraction = max(newest.fraction, self.last.fraction)  # started/partial carry no fraction
        self.last = newest
        self._quiet_since = time.monotonic()
        if newest.final:
            self.close()
        return newest

    def _resync(self) -> JobUpdate | None:
        pid = self.client.info.pid
        if pid and not wire.pid_alive(pid):
            err = P.ErrorReply(code="not_running", message=daemon_gone(pid, self.client.settings))
            return JobUpdate(kind="failed", job_id=self.job_id, stage="failed", state="failed",
                             event=P.FailedEvent(job_id=self.job_id, error=err))
        self.requests += 1
        try:
            snap = self.client._call("snapshot", P.SnapshotRequest(job_id=self.job_id), timeout=self.resync_timeout)
        except DaemonUnavailable:
            return None  # no answer in time: ask again after the next quiet spell
        assert isinstance(snap, P.SnapshotReply)
        if snap.seq <= self._seq and snap.job.state not in P.FINAL_STATES:
            return None
        self._seq = max(self._seq, snap.seq)
        return _update_from_snapshot(snap)

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None


class Job:
    """A submitted job: ``updates()``, ``wait()``, ``stream()``, ``cancel()``, ``info()``."""

    def __init__(self, client: Client, job_id: str, task: str = "", position: int = 0,
                 request: P.SubmitRequest | None = None):
        self.client = client
        self.id = job_id
        self.task = task
        self.position = position
        self.request = request

    def __repr__(self) -> str:
        return f"Job({self.id!r}, task={self.task!r})"

    def updates(self, timeout: float | None = None) -> Iterator[JobUpdate]:
        return self.client.updates(self.id, timeout=timeout)

    def wait(self, timeout: float | None = None, on_progress: Callable[[JobUpdate], Any] | None = None) -> GenerationResult:
        return self.client.wait(self.id, timeout=timeout, on_progress=on_progress)

    def stream(self, timeout: float | None = None) -> Iterator[PartialAudio]:
        return self.client.stream(self.id, timeout=timeout)

    def cancel(self) -> P.CancelReply:
        return self.client.cancel(self.id)

    def info(self) -> P.JobInfo:
        return self.client.job(self.id)


def _update_from_event(msg_type: str, content: dict[str, Any]) -> JobUpdate | None:
    try:
        ev = P.parse_event(msg_type, content)
    except P.ProtocolError:
        return None
    if not hasattr(ev, "job_id"):
        return None
    upd = JobUpdate(kind=msg_type, job_id=ev.job_id, seq=getattr(ev, "seq", 0), event=ev)  # type: ignore[attr-defined]
    if isinstance(ev, P.ProgressEvent):
        upd.fraction, upd.stage, upd.state = ev.fraction, ev.stage, "running"
    elif msg_type == "done":
        upd.fraction, upd.stage, upd.state = 1.0, "done", "done"
    elif msg_type in ("failed", "cancelled"):
        upd.stage = upd.state = msg_type
    elif msg_type == "started":
        upd.stage, upd.state = "started", "running"
    elif msg_type in ("accepted", "requeued"):
        upd.stage, upd.state = "queued", "queued"
    elif msg_type == "partial":
        upd.stage, upd.state = "partial", "running"
    return upd


def _update_from_snapshot(snap: P.SnapshotReply) -> JobUpdate:
    job = snap.job
    if job.state in P.FINAL_STATES:
        kind = job.state
        event: BaseModel | None = None
        last = snap.last_event or {}
        if kind == "done" and job.result is not None:
            r = job.result
            event = P.DoneEvent(job_id=job.job_id, seq=snap.seq, path=r.path, sidecar=r.sidecar, seconds=r.seconds,
                                sample_rate=r.sample_rate, channels=r.channels, bit_depth=r.bit_depth, seed=r.seed,
                                tag=job.tag)
        elif kind == "failed":
            err = job.error or (P.ErrorReply.model_validate(last["error"]) if isinstance(last.get("error"), dict)
                                else P.ErrorReply(code="error", message="failed"))
            event = P.FailedEvent(job_id=job.job_id, seq=snap.seq, error=err, tag=job.tag)
        elif kind == "cancelled":
            event = P.CancelledEvent(job_id=job.job_id, seq=snap.seq, tag=job.tag)
        return JobUpdate(kind=kind, job_id=job.job_id, seq=snap.seq, fraction=1.0 if kind == "done" else job.fraction,
                         stage=kind, state=kind, event=event)
    return JobUpdate(kind="snapshot", job_id=job.job_id, seq=snap.seq, fraction=job.fraction,
                     stage=job.stage or job.state, state=job.state, event=job)


# --------------------------------------------------------------------------------------------------
# request building (flat fields -> SubmitRequest)
# --------------------------------------------------------------------------------------------------
_SAMPLING = ("seed", "cfg_scale", "temperature", "top_p", "top_k", "eos_factor")
_LENGTH = {"seconds": "seconds", "frames": "frames", "fps": "fps", "min_seconds": "min_seconds",
           "max_seconds": "max_seconds"}
_OUTPUT = ("sample_rate", "channels", "bit_depth", "true_peak_db", "fit_length")
_TOP = ("priority", "stream_partial", "tag")
_SPOT = ("record_in", "drop", "project", "scene", "take", "note")
_SPEC = {
    "speech": ("text", "voice", "reference_audio", "reference_text"),
    "music": ("caption", "tempo_bpm", "key", "bars"),
    "video_score": ("video", "caption", "in_seconds", "out_seconds", "mode", "frames_per_second", "max_frames"),
}


def build_request(kind: str, **fields: Any) -> P.SubmitRequest:
    """A SubmitRequest from flat fields.

    ``kind``: speech, music or score. Fields: the task's own (text, voice, reference_audio,
    reference_text / caption, tempo_bpm, key, bars / video, caption, in_seconds, out_seconds, mode ...),
    ``seconds`` (or frames + fps, min_seconds, max_seconds), sampling (seed, cfg_scale, temperature,
    top_p, top_k), output (``output``: a file path, or ``folder`` + ``name``; sample_rate, channels,
    bit_depth, ``loudness``: LUFS or "off", true_peak_db), priority, stream_partial, tag, and spotting
    (``record_in``: a timecode at ``fps``, or seconds since midnight as ``"3600.5s"``; ``drop``,
    ``project``, ``scene``, ``take``, ``note``: see :class:`~unimoe_audio.client.protocol.SpotInfo`).
    Paths are made absolute here (the daemon resolves nothing relative to the client's cwd).
    Raises BadRequest naming the field.
    """
    task = TASK_NAMES.get(kind)
    if task is None:
        raise BadRequest(f"unknown task {kind!r} (speech, music or score)", "invalid_input", "task")
    fields = {k: v for k, v in fields.items() if v is not None}
    spec: dict[str, Any] = {"task": task}
    length: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    output: dict[str, Any] = {}
    top: dict[str, Any] = {}
    spot: dict[str, Any] = {}
    for key, value in fields.items():
        if key == "fps" and "record_in" in fields:
            spot["fps"] = value  # the timeline's rate: the record-in's, and the length's when frames are given
            if "frames" in fields:
                length["fps"] = value
        elif key == "record_in":
            text = str(value).strip()
            if text.endswith("s") and ":" not in text:
                try:
                    spot["seconds"] = float(text[:-1])
                except ValueError:
                    raise BadRequest(f"record_in: not a timecode or seconds: {value!r}", "invalid_input",
                                     "spot.record_in") from None
                spot.pop("fps", None)
            else:
                spot["record_in"] = text
        elif key in _SPOT:
            spot[key] = value
        elif key in _SPEC[task]:
            if key in ("reference_audio", "video"):
                value = str(Path(str(value)).expanduser().resolve())
            spec[key] = value
        elif key in _LENGTH:
            length[_LENGTH[key]] = value
        elif key in _SAMPLING:
            sampling[key] = value
        elif key in _OUTPUT:
            output[key] = value
        elif key == "loudness":
            if isinstance(value, str) and value.lower() in ("off", "none", "no"):
                output["normalize"] = False
            else:
                output["loudness_lufs"] = float(value)
        elif key == "output":
            p = Path(str(value)).expanduser().resolve()
            output["folder"] = str(p.parent)
            output["name"] = p.stem
        elif key in ("folder", "name"):
            output[key] = str(Path(value).expanduser().resolve()) if key == "folder" else value
        elif key in _TOP:
            top[key] = value
        else:
            raise BadRequest(f"{key}: unknown field for a {kind} request", "invalid_input", key)
    if task == "music" and spec.get("bars") and spec.get("tempo_bpm") and not length:
        # Bars at a tempo are a sample-exact length for a DAW: 4/4, seconds = bars * 4 beats * 60 / BPM.
        length["seconds"] = float(spec["bars"]) * 4 * 60.0 / float(spec["tempo_bpm"])
    if length:
        spec["length"] = length
    if sampling:
        spec["sampling"] = sampling
    if "seconds" in spot:
        spot.pop("fps", None)  # a position in seconds needs no rate
    if spot:
        top["spot"] = spot
    try:
        return P.SubmitRequest(spec=spec, output=output, **top)
    except ValidationError as exc:
        raise _from_protocol_error(P.validation_error(exc)) from None
