"""The daemon's main loop: ZeroMQ request/control ROUTER sockets, the event PUB socket, the OSC UDP
socket, and the inproc channel from the worker thread, all polled by one thread.

Only this thread touches the sockets. It answers every request itself (status answers while the model
loads: loading happens on the worker thread), inserts jobs in the SQLite queue, and publishes every event
(assigning per-job sequence numbers), forwarding job events to OSC senders as well.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable

import zmq

from ..client import wire
from ..client.protocol import (
    CONTROL_REQUESTS,
    DAEMON_TOPIC,
    FINAL_EVENTS,
    PROTOCOL_VERSION,
    CancelReply,
    CancelRequest,
    ErrorReply,
    JobReply,
    JobRequest,
    JobsReply,
    JobsRequest,
    MemoryInfo,
    ModelInfo,
    ModelsReply,
    PingReply,
    ProtocolError,
    ShutdownReply,
    ShutdownRequest,
    SnapshotReply,
    SnapshotRequest,
    StatusReply,
    SubmitReply,
    SubmitRequest,
    UnloadReply,
    VoicesReply,
    VoicesRequest,
    dump,
    job_topic,
    parse_request,
    reply_type,
)
from ..client.settings import Settings
from . import osc_server, outputs
from .logs import get_logger
from .model_host import ModelHost, error_from_exception
from .queue import JobStore, row_to_info
from .voices import VoiceStore
from .ray_backend import make_worker
from .worker import batch_key

log = get_logger("server")

OUTBOX_ENDPOINT = "inproc://unimoe-outbox"
HARD_SIZE_FACTOR = 4  # ZeroMQ drops (without reply) frames over this many times max_message_bytes


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("unimoe-audio")
    except Exception:  # noqa: BLE001
        return "0.0.0"


def _peek_msg_id(frames: list[bytes]) -> str | None:
    """The msg_id of a message that failed checks (too large, bad signature), so its error reply reaches
    the waiting client; None if there is none to read."""
    try:
        _, body = wire.split_envelope(frames)
        if len(body) >= 3 and len(body[2]) < 4096:
            mid = json.loads(body[2]).get("msg_id")
            return mid if isinstance(mid, str) and len(mid) <= 128 else None
    except Exception:  # noqa: BLE001
        return None
    return None


class StartupError(Exception):
    """The daemon refuses to start (message says why and what to do)."""


class Outbox:
    """Thread-safe hand-off from the worker thread to the main loop (one inproc PUSH per thread)."""

    def __init__(self, ctx: zmq.Context):
        self._ctx = ctx
        self._local = threading.local()
        self._all: list[zmq.Socket] = []
        self._lock = threading.Lock()

    def _sock(self) -> zmq.Socket:
        s = getattr(self._local, "sock", None)
        if s is None:
            s = self._ctx.socket(zmq.PUSH)
            s.linger = 1000
            s.connect(OUTBOX_ENDPOINT)
            self._local.sock = s
            with self._lock:
                self._all.append(s)
        return s

    def _put(self, item: tuple[Any, ...]) -> None:
        self._sock().send(pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL))

    def event(self, etype: str, content: dict[str, Any]) -> None:
        self._put(("event", etype, content))

    def state(self, state: str, error: ErrorReply | None) -> None:
        self._put(("state", state, None if error is None else error.model_dump()))

    def reply(self, which: str, envelope: list[bytes], parent_id: str, msg_type: str, content: dict[str, Any],
              osc: Any = None) -> None:
        self._put(("reply", which, envelope, parent_id, msg_type, content, osc))

    def close(self) -> None:
        with self._lock:
            for s in self._all:
                s.close(0)
            self._all.clear()


class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.version = package_version()
        self.key = wire.new_key()
        self.session = wire.new_id()
        self.started = time.time()
        self._stop = False
        self._stop_requeue = True
        self._lock_fd: int | None = None
        self.ctx: zmq.Context | None = None
        self.auth: Any = None
        self.osc: osc_server.OscSocket | None = None
        self._seq: dict[str, int] = {}
        self._osc_targets: dict[str, tuple[str, int, str, bool]] = {}
        self.info: wire.ConnectionInfo | None = None

    # -- start -----------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        rt = wire.ensure_private_dir(self.settings.runtime_path)
        path = rt / "daemon.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # pragma: no cover - Windows: no flock; rely on the connection file
            pass
        except OSError:
            os.close(fd)
            pid = None
            with contextlib.suppress(OSError, ValueError):
                pid = int(self.settings.pid_file.read_text().strip())
            raise StartupError(f"another daemon is already running{f' (pid {pid})' if pid else ''} with runtime folder "
                               f"{rt}; stop it first ('unimoe-audio stop') or use another UNIMOE_AUDIO_HOME") from None
        self._lock_fd = fd

    def _bind(self, sock: zmq.Socket, port: int) -> int:
        host = self.settings.host
        h = f"[{host}]" if ":" in host else host
        if port:
            try:
                sock.bind(f"tcp://{h}:{port}")
            except zmq.ZMQError as exc:
                raise StartupError(f"cannot listen on {host}:{port}: {exc}") from None
            return port
        try:
            sock.bind(f"tcp://{h}:*")
        except zmq.ZMQError as exc:
            raise StartupError(f"cannot listen on {host}: {exc}") from None
        return int(sock.last_endpoint.decode().rsplit(":", 1)[1])

    def start(self) -> None:
        s = self.settings
        curve = not s.is_loopback()
        if curve and not s.curve_allow:
            raise StartupError(
                f"host = {s.host!r} is not loopback: listening on the network requires CurveZMQ, and curve_allow "
                "lists no client keys. Add each client's public key (Z85, made by wire.client_keypair) to "
                "curve_allow, or set host = 127.0.0.1.")
        self._take_lock()
        for p in (s.data_path, s.output_path, s.cache_path):
            p.mkdir(parents=True, exist_ok=True)
        self.store = JobStore(s.queue_db_path)
        requeued, failed = self.store.recover()
        if requeued or failed:
            log.warning("recovered after an unclean stop: %d job(s) requeued, %d failed (too many attempts)",
                        len(requeued), len(failed))
        self.ctx = zmq.Context()
        curve_public = None
        if curve:
            from zmq.auth.thread import ThreadAuthenticator

            public, secret = wire.server_keypair(s.runtime_path)
            allowed = {k.encode("ascii") if isinstance(k, str) else k for k in s.curve_allow}

            class _Keys:
                def callback(self, domain: str, key: bytes) -> bool:  # key: Z85
                    ok = key in allowed
                    if not ok:
                        log.warning("CurveZMQ: refused a client key not in curve_allow")
                    return ok

            self.auth = ThreadAuthenticator(self.ctx)
            self.auth.start()
            self.auth.configure_curve_callback(domain=wire.ZAP_DOMAIN, credentials_provider=_Keys())
            curve_public = public.decode("ascii")
        hard = s.max_message_bytes * HARD_SIZE_FACTOR
        self.req_sock = self.ctx.socket(zmq.ROUTER)
        self.ctl_sock = self.ctx.socket(zmq.ROUTER)
        self.pub_sock = self.ctx.socket(zmq.PUB)
        for sock in (self.req_sock, self.ctl_sock, self.pub_sock):
            sock.linger = 500
            if curve:
                wire.curve_server(sock, secret)
        for sock in (self.req_sock, self.ctl_sock):
            sock.maxmsgsize = hard
            sock.router_mandatory = False
        self.pub_sock.sndhwm = 100_000
        req_port = self._bind(self.req_sock, s.request_port)
        ctl_port = self._bind(self.ctl_sock, s.control_port)
        ev_port = self._bind(self.pub_sock, s.events_port)
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(OUTBOX_ENDPOINT)
        self.outbox = Outbox(self.ctx)
        if s.osc_port:
            try:
                self.osc = osc_server.OscSocket(s.osc_host, s.osc_port)
            except OSError as exc:
                raise StartupError(f"cannot listen for OSC on {s.osc_host}:{s.osc_port}: {exc} "
                                   "(set osc_port to another port, or 0 to disable OSC)") from None
        self.voices = VoiceStore(s.voices_path)
        self.host = ModelHost(s, on_state=self.outbox.state)
        self.roots = s.allowed_root_paths()
        self.worker = make_worker(s, self.store, self.host, self.voices, self.outbox, version=self.version)
        for row in self.store.list(states=["queued", "running"], limit=1_000_000):
            if row["osc_reply"]:
                host, port, tag, progress = json.loads(row["osc_reply"])
                self._osc_targets[row["id"]] = (host, int(port), tag, bool(progress))
        self.info = wire.ConnectionInfo(
            host=s.host, request_port=req_port, control_port=ctl_port, events_port=ev_port,
            osc_port=self.osc.port if self.osc else None, osc_host=s.osc_host if self.osc else None, key=self.key,
            pid=os.getpid(), version=self.version, curve_server_key=curve_public, started=self.started, model=s.model,
        )
        wire.write_private_file(s.pid_file, f"{os.getpid()}\n".encode())
        wire.write_connection_file(s.connection_file, self.info)
        self.worker.start()
        log.info("unimoe-audio daemon %s (protocol %s) pid %d listening on %s: request %d, control %d, events %d%s; "
                 "model %s%s; connection file %s", self.version, PROTOCOL_VERSION, os.getpid(), s.host, req_port,
                 ctl_port, ev_port, f", OSC udp {self.osc.host}:{self.osc.port}" if self.osc else "", s.model,
                 f" (TINY random model: {self.host.tiny_reason})" if self.host.tiny else "", s.connection_file)
        if self.store.queued_count():
            log.info("%d queued job(s) from before the restart will run", self.store.queued_count())
        self.worker.wake()

    # -- main loop -------------------------------------------------------------------------------
    def request_stop(self, requeue_running: bool = True) -> None:
        self._stop_requeue = requeue_running
        self._stop = True

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.req_sock, zmq.POLLIN)
        poller.register(self.ctl_sock, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        if self.osc:
            poller.register(self.osc.fileno(), zmq.POLLIN)
        stopping_since: float | None = None
        while True:
            if self._stop and stopping_since is None:
                stopping_since = time.monotonic()
                log.info("stopping (%s the running job)", "requeueing" if self._stop_requeue else "finishing")
                self._publish_daemon("stopping")
                self.worker.stop(self._stop_requeue)
            if stopping_since is not None and not self.worker.is_alive():
                self._drain_inbox()
                break
            try:
                events = dict(poller.poll(200))
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    break
                raise
            if self.inbox in events:
                self._drain_inbox()
            if self.ctl_sock in events:
                self._drain(self.ctl_sock, "control")
            if self.req_sock in events:
                self._drain(self.req_sock, "request")
            if self.osc and self.osc.fileno() in events:
                self._handle_osc()
            if stopping_since is not None and time.monotonic() - stopping_since > 120:
                log.error("the worker did not stop within 120 s; exiting anyway (its job runs again at next start)")
                break

    def close(self) -> None:
        s = self.settings
        with contextlib.suppress(Exception):
            wire.remove_connection_file(s.connection_file, pid=os.getpid())
        with contextlib.suppress(Exception):
            if s.pid_file.read_text().strip() == str(os.getpid()):
                s.pid_file.unlink()
        if self.osc:
            self.osc.close()
        if self.auth is not None:
            with contextlib.suppress(Exception):
                self.auth.stop()
        if self.ctx is not None:
            with contextlib.suppress(Exception):
                self.outbox.close()
            self.ctx.destroy(linger=500)
        with contextlib.suppress(Exception):
            self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        log.info("daemon stopped")

    # -- sending ---------------------------------------------------------------------------------
    def _send(self, sock: zmq.Socket, envelope: list[bytes], msg_type: str, content: Any, parent_id: str | None) -> None:
        try:
            frames, _ = wire.serialize(msg_type, content, key=self.key, session=self.session, parent_id=parent_id)
            sock.send_multipart(envelope + frames, flags=zmq.NOBLOCK)
        except Exception as exc:  # noqa: BLE001
            log.warning("reply %s not sent: %s", msg_type, exc)

    def _publish(self, etype: str, content: dict[str, Any]) -> None:
        job_id = content.get("job_id")
        if job_id:
            seq = self._seq.get(job_id)
            if seq is None:
                row = self.store.row(job_id)
                seq = row["event_seq"] if row else 0
            seq += 1
            self._seq[job_id] = seq
            content["seq"] = seq
            topic = job_topic(job_id)
            try:
                self.store.note_event(job_id, seq, {"event": etype, **content},
                                      fraction=content.get("fraction") if etype == "progress" else None,
                                      stage=content.get("stage") if etype == "progress" else None)
            except Exception:  # noqa: BLE001
                log.exception("recording event failed")
        else:
            topic = DAEMON_TOPIC
        frames, _ = wire.serialize(etype, content, key=self.key, session=self.session)
        try:
            self.pub_sock.send_multipart([topic.encode()] + frames, flags=zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            log.warning("event %s not published: %s", etype, exc)
        if job_id:
            target = self._osc_targets.get(job_id)
            if target and self.osc:
                msg = osc_server.event_message(etype, content, target[2], target[3])
                if msg:
                    self.osc.send((target[0], target[1]), *msg)
            if etype in FINAL_EVENTS:
                self._seq.pop(job_id, None)
                self._osc_targets.pop(job_id, None)

    def _publish_daemon(self, state: str, error: dict[str, Any] | None = None) -> None:
        content = {"state": state, "model": self.settings.model, "tiny": self.host.tiny,
                   "queue_length": self.store.queued_count()}
        if error:
            content["error"] = error
        self._publish("daemon", content)

    def _drain_inbox(self) -> None:
        while True:
            try:
                raw = self.inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            item = pickle.loads(raw)
            try:
                if item[0] == "event":
                    self._publish(item[1], item[2])
                elif item[0] == "state":
                    self._publish_daemon(item[1], item[2])
                elif item[0] == "reply":
                    _, which, envelope, parent_id, msg_type, content, osc = item
                    if which == "osc":
                        if osc and self.osc:
                            to, tag = osc
                            if msg_type == "error":
                                self.osc.send(to, *osc_server.error_message(ProtocolError(**content), tag))
                        continue
                    sock = self.ctl_sock if which == "control" else self.req_sock
                    self._send(sock, envelope, msg_type, content, parent_id)
            except Exception:  # noqa: BLE001
                log.exception("handling a worker message failed")

    # -- requests --------------------------------------------------------------------------------
    def _drain(self, sock: zmq.Socket, which: str) -> None:
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle_frames(sock, which, frames)

    def _handle_frames(self, sock: zmq.Socket, which: str, frames: list[bytes]) -> None:
        try:
            envelope, _ = wire.split_envelope(frames)
        except ProtocolError:
            envelope = frames[:1]
        parent_id = None
        msg_type = "?"
        t0 = time.perf_counter()
        try:
            msg = wire.deserialize(frames, key=self.key.encode(), max_bytes=self.settings.max_message_bytes)
            parent_id = msg.header.msg_id
            msg_type = msg.msg_type
            if which == "control" and msg_type not in CONTROL_REQUESTS:
                raise ProtocolError("unknown_type", f"{msg_type!r} is not a control request", field="msg_type",
                                    wanted=", ".join(sorted(CONTROL_REQUESTS)) + " (others go to the request socket)")
            req = parse_request(msg_type, msg.content)
            deferred = (which, envelope, parent_id)
            out = self._dispatch(msg_type, req, deferred=deferred)
            if out is None:
                return  # answered later by the worker
            content, after = out
            self._send(sock, envelope, reply_type(msg_type), content, parent_id)
            if after:
                after()
        except ProtocolError as exc:
            if parent_id is None:
                parent_id = _peek_msg_id(frames)
            log.warning("%s request %s rejected: %s %s%s", which, msg_type, exc.code, exc.message,
                        f" (field {exc.field})" if exc.field else "")
            self._send(sock, envelope, "error", exc.to_reply(), parent_id)
        except Exception as exc:  # noqa: BLE001 - never die on a request
            log.exception("%s request %s failed", which, msg_type)
            err = error_from_exception(exc)
            self._send(sock, envelope, "error", err, parent_id)
        finally:
            log.debug("%s %s handled in %.3f ms", which, msg_type, (time.perf_counter() - t0) * 1e3)

    def _dispatch(self, msg_type: str, req: Any, *, deferred: Any = None, osc: Any = None
                  ) -> tuple[Any, Callable[[], None] | None] | None:
        fn = getattr(self, f"_on_{msg_type}")
        return fn(req, deferred=deferred, osc=osc)

    def _on_ping(self, req: Any, **_: Any) -> Any:
        return PingReply(version=self.version, pid=os.getpid(), time=time.time()), None

    def _state(self) -> str:
        h = self.host.state
        if h in ("loading", "error"):
            return h
        if self.worker.running or self.store.running_ids():
            return "busy"
        if self.host.engine is not None:
            return "ready"
        return h if h in ("idle", "unloaded") else "idle"

    def _on_status(self, req: Any, **_: Any) -> Any:
        h = self.host
        return StatusReply(
            state=self._state(), model=self.settings.model, model_dir=str(h.model_dir) if h.model_dir else None,
            model_hash=h.model_hash, tiny=h.tiny, tiny_reason=h.tiny_reason, device=h.device, dtype=h.dtype,
            memory=MemoryInfo(**h.memory()), queue_length=self.store.queued_count(), running=self.store.running_ids(),
            error=h.error, keep_alive=self.settings.keep_alive, uptime_s=time.time() - self.started,
            version=self.version, pid=os.getpid(), output_dir=str(self.settings.output_path),
            osc_port=self.osc.port if self.osc else None, backend=self.worker.backend_status(),
        ), None

    def _check_submit(self, req: SubmitRequest) -> None:
        spec = req.spec
        if spec.task == "speech":
            if spec.reference_audio:
                outputs.check_input_file(spec.reference_audio, self.roots, "spec.reference_audio")
            if spec.voice is not None and not self.voices.exists(spec.voice):
                raise ProtocolError("not_found", f"no saved voice named {spec.voice!r}", field="spec.voice",
                                    wanted="a name from 'voices list', or reference_audio + reference_text")
        elif spec.task == "video_score":
            outputs.check_input_file(spec.video, self.roots, "spec.video")
        outputs.output_folder(req.output.folder, self.settings.output_path, self.roots)

    def _on_submit(self, req: SubmitRequest, *, osc: Any = None, **_: Any) -> Any:
        if self._stop:
            raise ProtocolError("shutting_down", "the daemon is stopping; submit again after it restarts")
        self._check_submit(req)
        job_id = wire.new_id()
        osc_reply = None
        if osc is not None:
            (host, port), tag, progress = osc
            osc_reply = [host, port, tag, progress]
        ok = self.store.add(job_id, req.spec.task, req.priority, dump(req), tag=req.tag, batch_key=batch_key(req),
                            osc_reply=osc_reply, max_queue=self.settings.max_queue)
        if not ok:
            raise ProtocolError("busy", f"the queue is full ({self.settings.max_queue} jobs waiting)", field="queue",
                                wanted="retry when jobs finish (max_queue)")
        if osc_reply:
            self._osc_targets[job_id] = (osc_reply[0], int(osc_reply[1]), osc_reply[2], bool(osc_reply[3]))
        position = self.store.position(job_id) or 0
        eta = self.worker.eta(position)
        log.info("job %s queued: %s, priority %d, position %d", job_id, req.spec.task, req.priority, position)

        def after() -> None:
            self._publish("accepted", {"job_id": job_id, "tag": req.tag, "task": req.spec.task, "position": position,
                                       "eta_s": eta})
            self.worker.wake()

        return SubmitReply(job_id=job_id, state="queued", position=position, eta_s=eta), after

    def _job_info(self, row: dict[str, Any], with_request: bool = True) -> Any:
        pos = self.store.position(row["id"]) if row["state"] == "queued" else None
        eta = None
        if row["state"] == "queued":
            eta = self.worker.eta(pos)
        elif row["state"] == "running":
            eta = self.worker.eta(-1)
        return row_to_info(row, position=pos, eta_s=eta, with_request=with_request)

    def _row(self, job_id: str) -> dict[str, Any]:
        row = self.store.row(job_id)
        if row is None:
            raise ProtocolError("not_found", f"no job {job_id!r}", field="job_id", wanted="an id from 'jobs'")
        return row

    def _on_jobs(self, req: JobsRequest, **_: Any) -> Any:
        rows = self.store.list(req.states, req.task, req.limit, req.newest_first)
        return JobsReply(jobs=[self._job_info(r) for r in rows]), None

    def _on_job(self, req: JobRequest, **_: Any) -> Any:
        return JobReply(job=self._job_info(self._row(req.job_id))), None

    def _on_snapshot(self, req: SnapshotRequest, **_: Any) -> Any:
        row = self._row(req.job_id)
        last = json.loads(row["last_event"]) if row["last_event"] else None
        return SnapshotReply(job=self._job_info(row), last_event=last, seq=self._seq.get(req.job_id, row["event_seq"])), None

    def _on_cancel(self, req: CancelRequest, **_: Any) -> Any:
        job_id = req.job_id
        if self.store.cancel_queued(job_id):
            log.info("job %s cancelled while queued", job_id)
            return CancelReply(job_id=job_id, state="cancelled", was="queued"), (
                lambda: self._publish("cancelled", {"job_id": job_id, "tag": self.store.row(job_id)["tag"]}))
        row = self._row(job_id)
        if row["state"] == "running":
            self.worker.cancel(job_id)
            log.info("job %s: cancel requested while running", job_id)
            return CancelReply(job_id=job_id, state="running", was="running", pending=True), None
        return CancelReply(job_id=job_id, state=row["state"], was=row["state"]), None

    def _on_voices(self, req: VoicesRequest, *, deferred: Any = None, osc: Any = None, **_: Any) -> Any:
        if req.action == "list":
            return VoicesReply(voices=self.voices.list()), None
        if req.action == "remove":
            if not self.voices.remove(req.name):
                raise ProtocolError("not_found", f"no saved voice named {req.name!r}", field="name")
            return VoicesReply(voices=self.voices.list()), None
        path = outputs.check_input_file(req.audio_path, self.roots, "audio_path")
        self.voices._dir(req.name)  # validates the name now
        which, envelope, parent_id = deferred

        def op() -> None:
            try:
                codes = self.worker.encode_voice(path, req.transcript)
                info = self.voices.save(req.name, codes, req.transcript, source=str(path))
                log.info("voice %r saved (%d frames)", req.name, info.frames)
                self.outbox.reply(which, envelope, parent_id, "voices_reply", dump(VoicesReply(voices=[info])))
            except ProtocolError as exc:
                self.outbox.reply(which, envelope, parent_id, "error", dump(exc.to_reply()))
            except Exception as exc:  # noqa: BLE001
                log.exception("voice encoding failed")
                err = getattr(exc, "error", None) or error_from_exception(exc)
                if err.field is None and err.code in ("invalid_input", "media_error"):
                    err.field = "audio_path"
                self.outbox.reply(which, envelope, parent_id, "error", dump(err))

        self.worker.submit_op(op)
        return None

    def _on_models(self, req: Any, **_: Any) -> Any:
        from ..client.models_store import list_models

        out = []
        for m in list_models(self.settings):
            active = m.selected or (m.builtin and self.host.tiny)
            if m.builtin and not self.host.tiny:
                active = False
            out.append(ModelInfo(name=m.name, path=m.path, tiny=m.builtin, active=active,
                                 loaded=active and self.host.engine is not None))
        return ModelsReply(models=out), None

    def _on_unload(self, req: Any, *, deferred: Any = None, **_: Any) -> Any:
        which, envelope, parent_id = deferred

        def op() -> None:
            self.host.unload("requested")
            self.outbox.reply(which, envelope, parent_id, "unload_reply", {"state": self._state()})

        self.worker.submit_op(op)
        return None

    def _on_shutdown(self, req: ShutdownRequest, **_: Any) -> Any:
        log.info("shutdown requested by a client")
        return ShutdownReply(ok=True), (lambda: self.request_stop(req.requeue_running))

    # -- OSC ---------------------------------------------------------------------------------------
    def _handle_osc(self) -> None:
        assert self.osc is not None
        for data, sender in self.osc.recv_all():
            try:
                messages = osc_server.iter_messages(data)
            except Exception as exc:  # noqa: BLE001 - python-osc raises ParseError and others
                log.warning("malformed OSC datagram from %s:%s: %s", sender[0], sender[1], exc)
                self.osc.send(sender, *osc_server.error_message(
                    ProtocolError("bad_message", f"not an OSC message: {exc}", field="datagram"), ""))
                continue
            for address, args in messages:
                self._handle_osc_message(address, args, sender)

    def _handle_osc_message(self, address: str, args: list[Any], sender: tuple[str, int]) -> None:
        assert self.osc is not None
        reply_to, tag = sender, ""
        try:
            oreq = osc_server.parse(address, args, sender)
            reply_to, tag = oreq.reply_to, oreq.tag
            try:
                req = parse_request(oreq.msg_type, oreq.content)
            except ProtocolError as exc:
                exc.field = osc_server.osc_field(exc.field)
                raise
            out = self._dispatch(oreq.msg_type, req, deferred=("osc", [], ""),
                                 osc=(reply_to, tag, oreq.progress))
            if out is None:
                return
            reply, after = out
            if oreq.msg_type == "cancel" and getattr(reply, "pending", False):
                self._osc_targets.setdefault(reply.job_id, (reply_to[0], reply_to[1], tag, False))
            for msg in osc_server.reply_messages(oreq.msg_type, dump(reply), tag):
                self.osc.send(reply_to, *msg)
            if after:
                after()
        except ProtocolError as exc:
            log.warning("OSC %s from %s:%s rejected: %s %s%s", address, sender[0], sender[1], exc.code, exc.message,
                        f" (argument {exc.field})" if exc.field else "")
            exc.field = osc_server.osc_field(exc.field)
            self.osc.send(reply_to, *osc_server.error_message(exc, tag))
        except Exception as exc:  # noqa: BLE001
            log.exception("OSC %s failed", address)
            self.osc.send(reply_to, *osc_server.error_message(ProtocolError("internal", str(exc)), tag))


def run(settings: Settings) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT or a shutdown request. Exit status."""
    daemon = Daemon(settings)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d received", signum)
        daemon.request_stop(True)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with contextlib.suppress(AttributeError):
        signal.signal(signal.SIGHUP, on_signal)
    try:
        daemon.start()
    except StartupError as exc:
        log.error("refusing to start: %s", exc)
        import logging
        import sys

        if not any(type(h) is logging.StreamHandler for h in logging.getLogger("unimoe_audio").handlers):
            print(f"unimoe-audio daemon: refusing to start: {exc}", file=sys.stderr)
        with contextlib.suppress(Exception):
            daemon.close()
        return 2
    try:
        daemon.serve_forever()
    finally:
        daemon.close()
    return 0
