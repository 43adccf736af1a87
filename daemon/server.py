"""The daemon: start-up, the main loop, and shutdown.

One thread (the main loop here) owns every socket: the ZeroMQ request/control/event sockets
(daemon/transport.py), the OSC UDP socket (daemon/osc_bridge.py) and the inproc channel from the worker
thread (daemon/events.py). It answers every request itself through daemon/handlers.py (status answers
while the model loads: loading happens on the worker thread), inserts jobs in the SQLite queue, and
publishes every event (assigning per-job sequence numbers), forwarding job events to OSC senders too.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import time
from pathlib import Path
from typing import Any

import zmq

from ..client import connection, curve, remote, wire
from ..client.protocol import PROTOCOL_VERSION
from ..client.settings import Settings
from . import osc_server, outputs
from .events import OUTBOX_ENDPOINT, Outbox, Publisher
from .files import FileServer
from .handlers import Handlers
from .logs import LOG_NAME, get_logger
from .model_host import ModelHost
from .osc_bridge import OscBridge
from .queue import MAX_CRASHES, open_store
from .transport import HARD_SIZE_FACTOR, StartupError, Transport  # noqa: F401 - re-exported
from .uploads import UploadStore
from .voices import VoiceStore
from .worker import make_worker

log = get_logger("server")

__all__ = ["Daemon", "StartupError", "run", "package_version", "HARD_SIZE_FACTOR", "OUTBOX_ENDPOINT"]


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("unimoe-audio")
    except Exception:  # noqa: BLE001
        return "0.0.0"


class Daemon:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.version = package_version()
        # On the network the signing key is kept (exported profiles hold it); on loopback a fresh one per start.
        self.key = wire.new_key() if settings.is_loopback() else remote.persistent_hmac_key(settings.config_path / "curve")
        self.session = wire.new_id()
        self.started = time.time()
        self._stop = False
        self._stop_requeue = True
        self._lock_fd: int | None = None
        self.ctx: zmq.Context | None = None
        self.transport = Transport(settings, self.key, self.session)
        self.handlers = Handlers(self)
        self.osc: osc_server.OscSocket | None = None
        self.osc_bridge: OscBridge | None = None
        self.info: connection.ConnectionInfo | None = None
        self.warnings: list[str] = []  # problems met at start and worked around; shown by ``status``
        self._wake_r: Any = None  # a signal writes a byte here, so the main loop's poll returns at once
        self._wake_w: Any = None
        self.restart_reason: str | None = None  # set: run() starts the daemon again in a fresh process

    @property
    def stopping(self) -> bool:
        return self._stop

    # -- start -----------------------------------------------------------------------------------
    def _take_lock(self) -> None:
        rt = connection.ensure_private_dir(self.settings.runtime_path)
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

    def start(self) -> None:
        s = self.settings
        if not s.is_loopback() and not s.curve_allow:
            raise StartupError(
                f"host = {s.host!r} is not loopback: listening on the network requires CurveZMQ, and curve_allow "
                "lists no client keys. Add each workstation's public key ('unimoe-audio keys' there prints it; "
                "a Z85 string or a file holding it) to curve_allow, or set host = 127.0.0.1.")
        osc_allow = self._osc_allow()
        self._take_lock()
        # The data folder holds the queue (every request's text and paths), voices and models: user-only,
        # like the runtime folder. Outputs and cache are created with the user's umask.
        connection.ensure_private_dir(s.data_path)
        for p in (s.output_path, s.cache_path):
            p.mkdir(parents=True, exist_ok=True)
        self.store, corrupt = open_store(s.queue_db_path)
        if corrupt is not None:
            msg = (f"the queue database {s.queue_db_path} was corrupt: moved aside to {corrupt} (its jobs are not "
                   "run; delete that file once nothing in it is needed) and started with an empty queue")
            log.error(msg)
            self.warnings.append(msg)
        requeued, failed = self.store.recover(model=s.model, log_hint=str(s.log_path / LOG_NAME))
        if requeued or failed:
            log.warning("recovered after an unclean stop or a model change: %d job(s) requeued (each runs alone), "
                        "%d failed (the daemon died during them %d times, or they were made for another model)",
                        len(requeued), len(failed), MAX_CRASHES)
        self._clean_stale_temps()
        self.ctx = zmq.Context()
        ports = self.transport.open(self.ctx)
        self.req_sock = self.transport.req_sock
        self.ctl_sock = self.transport.ctl_sock
        self.pub_sock = self.transport.pub_sock
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.bind(OUTBOX_ENDPOINT)
        self.outbox = Outbox(self.ctx)
        if s.osc_port:
            self.osc = self._open_osc()
        self.publisher = Publisher(self.pub_sock, self.key, self.session, self.store, self.osc)
        if self.osc:
            self.osc_bridge = OscBridge(self.osc, self.handlers, self.publisher, allow=osc_allow)
        self.files = FileServer(self.store, s.cache_path)
        self.voices = VoiceStore(s.voices_path)
        self.uploads = UploadStore(s.uploads_path, int(s.upload_quota_mb * 2**20), s.upload_keep_days * 86400)
        self.uploads.sweep()
        self.host = ModelHost(s, on_state=self.outbox.state, on_dead_context=self.restart_fresh)
        self.roots = s.allowed_root_paths()
        self.worker = make_worker(s, self.store, self.host, self.voices, self.outbox, version=self.version)
        self.publisher.restore_osc_targets()
        self.info = connection.ConnectionInfo(
            host=s.host, request_port=ports.request, control_port=ports.control, events_port=ports.events,
            osc_port=self.osc.port if self.osc else None, osc_host=s.osc_host if self.osc else None, key=self.key,
            pid=os.getpid(), version=self.version, curve_server_key=self.transport.curve_public,
            started=self.started, model=s.model, max_message_bytes=s.max_message_bytes,
        )
        connection.write_private_file(s.pid_file, f"{os.getpid()}\n".encode())
        connection.write_connection_file(s.connection_file, self.info)
        self.worker.start()
        log.info("unimoe-audio daemon %s (protocol %s) pid %d listening on %s: request %d, control %d, events %d%s; "
                 "model %s%s; connection file %s", self.version, PROTOCOL_VERSION, os.getpid(), s.host, ports.request,
                 ports.control, ports.events, f", OSC udp {self.osc.host}:{self.osc.port}" if self.osc else "",
                 s.model, f" (TINY random model: {self.host.tiny_reason})" if self.host.tiny else "",
                 s.connection_file)
        if self.store.queued_count():
            log.info("%d queued job(s) from before the restart will run", self.store.queued_count())
        self.worker.wake()

    def _osc_allow(self) -> list[Any] | None:
        """The OSC sender allow list (None: loopback only, nothing to check). OSC has no authentication,
        so listening beyond loopback needs osc_allow and is announced loudly."""
        s = self.settings
        if not s.osc_port or curve.is_loopback_host(s.osc_host):
            return None
        if not s.osc_allow:
            raise StartupError(
                f"osc_host = {s.osc_host!r} is not loopback, and OSC carries no authentication: list the sender "
                "addresses that may queue jobs in osc_allow (e.g. 192.168.1.20 or 192.168.1.0/24), or set "
                "osc_host = 127.0.0.1")
        try:
            nets = osc_server.parse_allow(s.osc_allow)
        except ValueError as exc:
            raise StartupError(f"osc_allow: {exc}") from None
        warning = (f"WARNING: OSC listens on {s.osc_host}:{s.osc_port} WITHOUT AUTHENTICATION; it takes jobs from "
                   f"loopback and from {', '.join(map(str, nets))} (osc_allow); anyone who can send from those "
                   "addresses can queue work")
        log.warning(warning)
        import sys

        print(f"unimoe-audio daemon: {warning}", file=sys.stderr, flush=True)
        return nets

    def _open_osc(self) -> osc_server.OscSocket:
        """The OSC socket. The default port is machine-wide (a second user's daemon would find it taken):
        unless osc_port was set explicitly, a taken default falls back to a free port, which the
        connection file and ``status`` report."""
        s = self.settings
        try:
            return osc_server.OscSocket(s.osc_host, s.osc_port)
        except OSError as exc:
            if "osc_port" in s.model_fields_set:
                raise StartupError(f"cannot listen for OSC on {s.osc_host}:{s.osc_port}: {exc} "
                                   "(set osc_port to another port, or 0 to disable OSC)") from None
            try:
                sock = osc_server.OscSocket(s.osc_host, 0)
            except OSError as exc2:
                raise StartupError(f"cannot listen for OSC on {s.osc_host}: {exc2} "
                                   "(set osc_port to a free port, or 0 to disable OSC)") from None
            log.warning("OSC default port %d is taken (%s); listening on %d instead (set osc_port to choose)",
                        s.osc_port, exc, sock.port)
            return sock

    def _clean_stale_temps(self) -> None:
        """Hidden temp files a killed daemon left in output folders, and the visible leftovers of writes
        that never finished (no job of ours runs yet: we hold the lock). Folders: the default output folder
        and those of jobs still queued, failed or cancelled."""
        folders = {self.settings.output_path}
        for row in self.store.list(states=["queued", "failed", "cancelled"], limit=10_000):
            with contextlib.suppress(Exception):
                folder = json.loads(row["request"]).get("output", {}).get("folder")
                if folder:
                    folders.add(Path(folder).expanduser())
        removed = 0
        for folder in folders:
            removed += len(outputs.clean_stale_temps(folder, self.store.state))
            for path in outputs.clean_partial_outputs(folder, self.store.state):
                log.info("removed a partial output of an unfinished write: %s", path)
        if removed:
            log.info("removed %d stale temporary file(s) from output folders", removed)

    # -- main loop -------------------------------------------------------------------------------
    def request_stop(self, requeue_running: bool = True) -> None:
        self._stop_requeue = requeue_running
        self._stop = True

    def restart_fresh(self, why: str) -> None:
        """Stop as ``stop`` does (the queue is kept) and let :func:`run` start the daemon again in a
        fresh process: a GPU context a sticky error killed cannot be renewed in this one. Any thread."""
        self.restart_reason = why
        self.request_stop(True)
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"\0")

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.req_sock, zmq.POLLIN)
        poller.register(self.ctl_sock, zmq.POLLIN)
        poller.register(self.inbox, zmq.POLLIN)
        if self._wake_r is not None:
            poller.register(self._wake_r.fileno(), zmq.POLLIN)
        if self.osc:
            poller.register(self.osc.fileno(), zmq.POLLIN)
        stopping_since: float | None = None
        dispatch = self.handlers.dispatch
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
                # While stopping, look at the worker often: an idle daemon stops in milliseconds.
                events = dict(poller.poll(200 if stopping_since is None else 10))
            except zmq.ZMQError as exc:
                if exc.errno == zmq.ETERM:
                    break
                raise
            if self._wake_r is not None and self._wake_r.fileno() in events:
                with contextlib.suppress(OSError):
                    self._wake_r.recv(4096)
            if self.inbox in events:
                self._drain_inbox()
            if self.ctl_sock in events:
                self.transport.drain("control", dispatch)
            if self.req_sock in events:
                self.transport.drain("request", dispatch)
            if self.osc_bridge and self.osc and self.osc.fileno() in events:
                self.osc_bridge.handle_readable()
            if stopping_since is not None and time.monotonic() - stopping_since > 120:
                log.error("the worker did not stop within 120 s; exiting anyway (its job runs again at next start)")
                break

    def close(self) -> None:
        s = self.settings
        with contextlib.suppress(Exception):
            connection.remove_connection_file(s.connection_file, pid=os.getpid())
        with contextlib.suppress(Exception):
            if s.pid_file.read_text().strip() == str(os.getpid()):
                s.pid_file.unlink()
        if self.osc:
            self.osc.close()
        self.transport.close()
        if self.ctx is not None:
            with contextlib.suppress(Exception):
                self.outbox.close()
            self.ctx.destroy(linger=500)
        with contextlib.suppress(Exception):
            self.store.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        if self._wake_w is not None:
            with contextlib.suppress(ValueError):
                signal.set_wakeup_fd(-1)
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        log.info("daemon stopped")

    # -- the worker's messages -------------------------------------------------------------------
    def _publish_daemon(self, state: str, error: dict[str, Any] | None = None) -> None:
        content = {"state": state, "model": self.settings.model, "tiny": self.host.tiny,
                   "queue_length": self.store.queued_count()}
        if error:
            content["error"] = error
        self.publisher.publish("daemon", content)

    def _drain_inbox(self) -> None:
        while True:
            try:
                raw = self.inbox.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            item = pickle.loads(raw)
            try:
                if item[0] == "event":
                    self.publisher.publish(item[1], item[2])
                elif item[0] == "state":
                    self._publish_daemon(item[1], item[2])
                elif item[0] == "reply":
                    _, which, envelope, parent_id, msg_type, content, osc = item
                    if which == "osc":
                        if osc and self.osc_bridge and msg_type == "error":
                            to, tag = osc
                            self.osc_bridge.send_error(to, content, tag)
                        continue
                    self.transport.send(self.transport.socket(which), envelope, msg_type, content, parent_id)
            except Exception:  # noqa: BLE001
                log.exception("handling a worker message failed")


def run(settings: Settings) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT or a shutdown request. Exit status."""
    daemon = Daemon(settings)

    def on_signal(signum: int, frame: Any) -> None:
        log.info("signal %d received", signum)
        daemon.request_stop(True)

    # The signal's byte on this socket pair wakes the main loop's poll: an idle daemon stops in
    # milliseconds instead of at its next poll timeout.
    import socket

    daemon._wake_r, daemon._wake_w = socket.socketpair()
    for sock in (daemon._wake_r, daemon._wake_w):
        sock.setblocking(False)
    signal.set_wakeup_fd(daemon._wake_w.fileno(), warn_on_full_buffer=False)
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
    if daemon.restart_reason:
        _exec_fresh(daemon.restart_reason)
    return 0


def _exec_fresh(why: str) -> None:
    """Replace this process with the same daemon command (same pid, environment and log): a new
    CUDA context. The queue on disk carries the jobs over; the simulated-fault test hook is dropped
    so it fires once per daemon."""
    import logging
    import sys

    from ..model.scheduler import SIMULATE_FAULT_ENV

    log.warning("restarting in a fresh process (%s): %s", why, " ".join(sys.orig_argv))
    logging.shutdown()
    os.environ.pop(SIMULATE_FAULT_ENV, None)
    os.execv(sys.executable, sys.orig_argv)
