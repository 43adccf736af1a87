"""Transport: the ZeroMQ sockets (request and control ROUTERs, event PUB), CurveZMQ when listening on
the network, and the framing of requests and replies (signature and size checks, typed error replies).

A request arrives as frames, is checked and parsed here into a typed request, handed to a dispatch
function (daemon/handlers.py), and its reply is signed and sent back on the socket it came in on.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable

import zmq

from ..client import curve, wire
from ..client.protocol import CONTROL_REQUESTS, ProtocolError, parse_request, reply_type
from ..client.settings import Settings
from .logs import get_logger
from .model_host import error_from_exception

log = get_logger("server")

HARD_SIZE_FACTOR = 4  # ZeroMQ drops (without reply) frames over this many times max_message_bytes

# dispatch(msg_type, request, deferred=(which, envelope, parent_id)) -> (reply, after) or None (answered later)
Dispatch = Callable[..., "tuple[Any, Callable[[], None] | None] | None"]


@dataclass
class WithBuffers:
    """A reply whose raw frames follow its content (a ``fetch`` chunk)."""

    content: Any
    buffers: list[bytes]


class StartupError(Exception):
    """The daemon refuses to start (message says why and what to do)."""


def peek_msg_id(frames: list[bytes]) -> str | None:
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


def bind(sock: zmq.Socket, host: str, port: int) -> int:
    """Bind on host:port (port 0: any free port); the port bound."""
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


@dataclass
class Ports:
    request: int
    control: int
    events: int


class Transport:
    """Owns the three TCP sockets. Only the main loop thread uses it."""

    def __init__(self, settings: Settings, key: str, session: str):
        self.settings = settings
        self.key = key
        self.session = session
        self.auth: Any = None
        self.curve_public: str | None = None

    def open(self, ctx: zmq.Context) -> Ports:
        s = self.settings
        curve = not s.is_loopback()
        secret = None
        if curve:
            from zmq.auth.thread import ThreadAuthenticator

            from ..client import remote

            # In the config folder, not the runtime one (cleared at reboot): exported profiles name this key.
            public, secret = curve.server_keypair(s.config_path)
            try:
                allowed = remote.load_allowed_keys(s.curve_allow)
            except remote.RemoteSetupError as exc:
                raise StartupError(str(exc)) from None
            # This user's own client key (same config folder, which also holds the server's secret) is
            # allowed too, so the CLI, panel and scripts on the host itself keep working.
            allowed.add(curve.client_keypair(s.config_path)[0])
            log.info("CurveZMQ on: %d client key(s) allowed (curve_allow and this host's own)", len(allowed))

            class _Keys:
                def callback(self, domain: str, key: bytes) -> bool:  # key: Z85
                    ok = key in allowed
                    if not ok:
                        log.warning("CurveZMQ: refused client key %s (not in curve_allow)",
                                    key.decode("ascii", "replace"))
                    return ok

            self.auth = ThreadAuthenticator(ctx)
            self.auth.start()
            self.auth.configure_curve_callback(domain=curve.ZAP_DOMAIN, credentials_provider=_Keys())
            self.curve_public = public.decode("ascii")
        hard = s.max_message_bytes * HARD_SIZE_FACTOR
        self.req_sock = ctx.socket(zmq.ROUTER)
        self.ctl_sock = ctx.socket(zmq.ROUTER)
        self.pub_sock = ctx.socket(zmq.PUB)
        for sock in (self.req_sock, self.ctl_sock, self.pub_sock):
            sock.linger = 500
            if curve:
                curve.curve_server(sock, secret)
        for sock in (self.req_sock, self.ctl_sock):
            sock.maxmsgsize = hard
            sock.router_mandatory = False
        self.pub_sock.sndhwm = 100_000
        return Ports(request=bind(self.req_sock, s.host, s.listen_port("request")),
                     control=bind(self.ctl_sock, s.host, s.listen_port("control")),
                     events=bind(self.pub_sock, s.host, s.listen_port("events")))

    def socket(self, which: str) -> zmq.Socket:
        return self.ctl_sock if which == "control" else self.req_sock

    def close(self) -> None:
        if self.auth is not None:
            try:
                self.auth.stop()
            except Exception:  # noqa: BLE001
                pass

    # -- replies ---------------------------------------------------------------------------------
    def send(self, sock: zmq.Socket, envelope: list[bytes], msg_type: str, content: Any, parent_id: str | None) -> None:
        buffers = None
        if isinstance(content, WithBuffers):
            content, buffers = content.content, content.buffers
        try:
            frames, _ = wire.serialize(msg_type, content, key=self.key, session=self.session, parent_id=parent_id,
                                       buffers=buffers)
            sock.send_multipart(envelope + frames, flags=zmq.NOBLOCK)
        except Exception as exc:  # noqa: BLE001
            log.warning("reply %s not sent: %s", msg_type, exc)

    # -- requests --------------------------------------------------------------------------------
    def drain(self, which: str, dispatch: Dispatch) -> None:
        sock = self.socket(which)
        for _ in range(1000):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.handle_frames(sock, which, frames, dispatch)

    def handle_frames(self, sock: zmq.Socket, which: str, frames: list[bytes], dispatch: Dispatch) -> None:
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
            out = dispatch(msg_type, req, deferred=deferred)
            if out is None:
                return  # answered later by the worker
            content, after = out
            self.send(sock, envelope, reply_type(msg_type), content, parent_id)
            if after:
                after()
        except ProtocolError as exc:
            if parent_id is None:
                parent_id = peek_msg_id(frames)
            log.warning("%s request %s rejected: %s %s%s", which, msg_type, exc.code, exc.message,
                        f" (field {exc.field})" if exc.field else "")
            self.send(sock, envelope, "error", exc.to_reply(), parent_id)
        except Exception as exc:  # noqa: BLE001 - never die on a request
            log.exception("%s request %s failed", which, msg_type)
            err = error_from_exception(exc)
            self.send(sock, envelope, "error", err, parent_id)
        finally:
            log.debug("%s %s handled in %.3f ms", which, msg_type, (time.perf_counter() - t0) * 1e3)
