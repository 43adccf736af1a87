"""Framing, signing, the connection file, CurveZMQ helpers, OSC addresses, and a small sync channel.

One implementation of the wire, used by the daemon and by every client (CLI, panel, DAW scripts).
Light imports only: pyzmq, pydantic (through protocol), the standard library.

A message on a socket is these frames::

    [routing...] b"unimoe-audio/1"  signature_hex  header_json  content_json  [buffer...]

``routing`` is the ROUTER identity envelope on the request/control sockets (added and removed by ZeroMQ
and the daemon) and the topic frame (``job.<id>`` or ``daemon``) on the event socket. The signature is
HMAC-SHA256 over ``header_json + content_json`` (and then each buffer frame, when there are any) with the
key from the connection file, in lowercase hex. Buffers are raw bytes (the chunks of a ``fetch`` reply).
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import socket
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import zmq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .protocol import (
    IDENT,
    PROTOCOL_VERSION,
    SIGNATURE_SCHEME,
    ErrorReply,
    Header,
    ProtocolError,
    check_version,
    dump,
    new_id,
    parse_reply,
)

# ---------------------------------------------------------------------------------------------------
# OSC address space (UDP; loopback by default; audio never travels over OSC, only file paths)
# ---------------------------------------------------------------------------------------------------
OSC_PREFIX = "/unimoe"
# Requests (client -> daemon)
OSC_PING = "/unimoe/ping"
OSC_SPEECH = "/unimoe/speech"
OSC_MUSIC = "/unimoe/music"
OSC_VIDEO_SCORE = "/unimoe/video-score"
OSC_CANCEL = "/unimoe/cancel"
OSC_STATUS = "/unimoe/status"
OSC_REQUESTS = (OSC_PING, OSC_SPEECH, OSC_MUSIC, OSC_VIDEO_SCORE, OSC_CANCEL, OSC_STATUS)
# Replies and job notifications (daemon -> the sender's address, or host:reply_port)
OSC_PONG = "/unimoe/pong"  # protocol_version pid
OSC_ACCEPTED = "/unimoe/accepted"  # job_id position tag
OSC_STARTED = "/unimoe/started"  # job_id tag
OSC_PROGRESS = "/unimoe/progress"  # job_id fraction stage tag
OSC_DONE = "/unimoe/done"  # job_id path seconds tag
OSC_FAILED = "/unimoe/failed"  # job_id code message tag
OSC_CANCELLED = "/unimoe/cancelled"  # job_id tag
OSC_CANCEL_REPLY = "/unimoe/cancel-reply"  # job_id state tag: cancel of a job already done or failed
OSC_ERROR = "/unimoe/error"  # code message field tag
OSC_STATE = "/unimoe/state"  # state model queue_length tiny(0|1)

CONNECTION_FILE_NAME = "daemon.json"
ZAP_DOMAIN = "unimoe-audio"


# ---------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------
class WireError(ProtocolError):
    """A framing or signature problem (code bad_message, bad_signature, too_large, version_mismatch)."""


class RemoteError(ProtocolError):
    """The daemon answered with an ``error`` message."""

    @classmethod
    def from_reply(cls, content: dict[str, Any]) -> "RemoteError":
        err = ErrorReply.model_validate(content)
        return cls(err.code, err.message, field=err.field, wanted=err.wanted)


class DaemonNotRunning(ProtocolError):
    def __init__(self, message: str):
        super().__init__("not_running", message)


class ReplyTimeout(ProtocolError, TimeoutError):
    def __init__(self, message: str):
        super().__init__("timeout", message)


# ---------------------------------------------------------------------------------------------------
# Signing and framing
# ---------------------------------------------------------------------------------------------------
def new_key() -> str:
    """A fresh signing key (64 hex chars = 256 bits)."""
    return secrets.token_hex(32)


MAX_BUFFERS = 4  # raw frames a message may carry after its content (fetch chunks)


def sign(key: bytes | str, header: bytes, content: bytes, *buffers: bytes) -> bytes:
    if isinstance(key, str):
        key = key.encode("ascii")
    mac = hmac.new(key, digestmod=hashlib.sha256)
    mac.update(header)
    mac.update(content)
    for buf in buffers:
        mac.update(buf)
    return mac.hexdigest().encode("ascii")


#: How the frames of a message must look (said in errors about them).
FRAMES_WANTED = ("[routing frames...] then exactly 4 frames: 'unimoe-audio/1', the hex HMAC-SHA256 signature, "
                 "the header JSON, the content JSON")
#: Header fields a received message must carry, and the type of every header field (docs/protocol.md).
REQUIRED_HEADER_FIELDS = ("msg_id", "msg_type", "protocol_version")
HEADER_FIELD_TYPES = {
    "msg_id": "a string of 1-128 characters, unique per message",
    "msg_type": "a string of 1-64 characters naming the message type",
    "protocol_version": "a string 'MAJOR.MINOR', e.g. '1.0'",
    "session": "a string of at most 128 characters",
    "date": "an ISO-8601 date-time with a time zone, e.g. '2026-01-02T03:04:05.678+00:00'",
    "parent_id": "a string of 1-128 characters (replies: the request's msg_id) or null",
}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (numbers must be finite)")


def _loads(frame: bytes, which: str) -> Any:
    """A JSON frame; any undecodable frame (not UTF-8, not JSON, NaN/Infinity, nested deeper than the
    decoder allows) is a typed bad_message, never an internal error."""
    try:
        return json.loads(frame, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise WireError("bad_message", f"{which} frame is not JSON: {exc}", field=which) from None
    except RecursionError:
        raise WireError("bad_message", f"{which} frame is nested too deeply", field=which,
                        wanted="JSON nested at most a few hundred levels") from None


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


@dataclass
class Message:
    header: Header
    content: dict[str, Any]
    envelope: list[bytes] = field(default_factory=list)  # ROUTER identities, or [topic] on PUB/SUB
    buffers: list[bytes] = field(default_factory=list)  # raw frames after the content (fetch chunks)

    @property
    def msg_type(self) -> str:
        return self.header.msg_type

    @property
    def topic(self) -> str:
        return self.envelope[0].decode("utf-8", "replace") if self.envelope else ""


def serialize(
    msg_type: str,
    content: BaseModel | dict[str, Any] | None,
    *,
    key: bytes | str,
    session: str = "",
    parent_id: str | None = None,
    msg_id: str | None = None,
    buffers: list[bytes] | None = None,
) -> tuple[list[bytes], Header]:
    """Frames ``[IDENT, sig, header, content, *buffers]`` (without routing envelope) and the header sent."""
    if isinstance(content, BaseModel):
        content = dump(content)
    header = Header(msg_id=msg_id or new_id(), msg_type=msg_type, session=session, parent_id=parent_id)
    hb = _json(header.model_dump(mode="json", exclude_none=True))
    cb = _json(content or {})
    bufs = list(buffers or [])
    return [IDENT, sign(key, hb, cb, *bufs), hb, cb, *bufs], header


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """(routing envelope, [IDENT, sig, header, content]) of a received multipart message."""
    for i, frame in enumerate(frames):
        if frame == IDENT:
            return frames[:i], frames[i:]
    raise WireError("bad_message", f"no {IDENT.decode()!r} frame", field="frames", wanted=FRAMES_WANTED)


def deserialize(frames: list[bytes], *, key: bytes | None, max_bytes: int | None = None,
                check_signature: bool = True) -> Message:
    """Parse and verify a received multipart message (with or without its envelope).

    Raises :class:`WireError` (too_large, bad_message, bad_signature, version_mismatch).
    """
    envelope, body = split_envelope(frames)
    if max_bytes is not None:
        size = sum(len(f) for f in body)  # the routing envelope is ZeroMQ's, not the sender's
        if size > max_bytes:
            raise WireError("too_large", f"message of {size} bytes is over the limit", field="content",
                            wanted=f"at most {max_bytes} bytes")
    if not 4 <= len(body) <= 4 + MAX_BUFFERS:
        raise WireError("bad_message", f"wanted 4 frames after the delimiter, got {len(body)}", field="frames",
                        wanted="4 frames ('unimoe-audio/1', the signature, the header, the content), "
                        "then at most 4 raw buffer frames")
    _, sig, hb, cb = body[:4]
    buffers = body[4:]
    if check_signature:
        if key is None:
            raise WireError("bad_signature", "no key to check the signature", field="signature")
        if not sig:
            raise WireError("bad_signature", "unsigned message", field="signature", wanted="HMAC-SHA256 hex")
        if not hmac.compare_digest(sig, sign(key, hb, cb, *buffers)):
            raise WireError("bad_signature", "signature does not match", field="signature",
                            wanted="HMAC-SHA256 hex of header+content with the connection file key")
    raw_header = _loads(hb, "header")
    content = _loads(cb, "content")
    if not isinstance(raw_header, dict):
        raise WireError("bad_message", "header must be a JSON object", field="header", wanted="object")
    if not isinstance(content, dict):
        raise WireError("invalid_input", "content must be a JSON object", field="content", wanted="object")
    for name in REQUIRED_HEADER_FIELDS:
        if name not in raw_header:
            raise WireError("bad_message", f"the header has no {name}", field=f"header.{name}",
                            wanted=HEADER_FIELD_TYPES[name])
    try:
        header = Header.model_validate(raw_header)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        name = ".".join(str(p) for p in err.get("loc", ()))
        raise WireError("bad_message", f"bad header field: {err.get('msg', 'invalid')}",
                        field=f"header.{name}" if name else "header",
                        wanted=HEADER_FIELD_TYPES.get(name, "see docs/protocol.md, Frames")) from None
    try:
        check_version(header.protocol_version)
    except ProtocolError as exc:
        raise WireError(exc.code, exc.message, field=exc.field, wanted=exc.wanted) from None
    return Message(header=header, content=content, envelope=envelope, buffers=list(buffers))


# ---------------------------------------------------------------------------------------------------
# Connection file (runtime_dir/daemon.json, user-only 0600)
# ---------------------------------------------------------------------------------------------------
class ConnectionInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    transport: str = "tcp"
    host: str = "127.0.0.1"
    request_port: int
    control_port: int
    events_port: int
    osc_port: int | None = None
    osc_host: str | None = None
    key: str = Field(description="HMAC-SHA256 signing key (hex).")
    signature_scheme: str = SIGNATURE_SCHEME
    pid: int = 0
    protocol_version: str = PROTOCOL_VERSION
    version: str = ""
    curve_server_key: str | None = Field(None, description="Z85 public key of the daemon when CurveZMQ is on.")
    started: float = 0.0
    model: str = ""
    max_message_bytes: int | None = Field(None, description="Largest request the daemon takes (bytes, all frames); "
                                          "clients refuse to send a bigger one (too_large) without asking.")
    name: str = Field("", description="The remote profile's name ('remote add'); empty for the local daemon.")

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("ascii")

    @property
    def connect_host(self) -> str:
        if self.host in ("0.0.0.0", "*", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    def endpoint(self, which: str) -> str:
        port = {"request": self.request_port, "control": self.control_port, "events": self.events_port}[which]
        host = self.connect_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.transport}://{host}:{port}"


def ensure_private_dir(path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, data: bytes) -> None:
    """Write atomically (temp file in the same folder, then rename) with mode 0600."""
    path = Path(path)
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_connection_file(path: Path, info: ConnectionInfo) -> None:
    write_private_file(Path(path), json.dumps(info.model_dump(mode="json"), indent=2).encode("utf-8"))


def read_connection_file(path: Path) -> ConnectionInfo:
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise DaemonNotRunning(f"no daemon connection file at {path} (is the daemon running?)") from None
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise WireError("bad_message", f"{path} belongs to another user", field="connection_file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WireError("bad_message", f"{path} is readable by others (wanted mode 0600)", field="connection_file")
    try:
        return ConnectionInfo.model_validate_json(text)
    except Exception as exc:
        raise WireError("bad_message", f"unreadable connection file {path}: {exc}".splitlines()[0],
                        field="connection_file") from None


def remove_connection_file(path: Path, pid: int | None = None) -> bool:
    """Remove the connection file, only if it names ``pid`` (when given). True when removed."""
    path = Path(path)
    if pid is not None:
        try:
            if json.loads(path.read_text("utf-8")).get("pid") != pid:
                return False
        except (OSError, ValueError):
            return False
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs. An exited process not yet reaped by its parent (a zombie: a
    detached daemon waits for init, which may reap late) is not alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # "pid (comm) state ...": comm may hold spaces and parentheses, so split after the last ')'
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc (macOS, Windows): kill(0) is all we know


# ---------------------------------------------------------------------------------------------------
# CurveZMQ (required whenever the daemon listens beyond loopback)
# ---------------------------------------------------------------------------------------------------
def _load_or_create_keypair(folder: Path, name: str) -> tuple[bytes, bytes]:
    folder = ensure_private_dir(Path(folder))
    pub_path, sec_path = folder / f"{name}.public", folder / f"{name}.secret"
    if pub_path.is_file() and sec_path.is_file():
        return pub_path.read_bytes().strip(), sec_path.read_bytes().strip()
    public, secret = zmq.curve_keypair()
    write_private_file(sec_path, secret)
    write_private_file(pub_path, public)
    return public, secret


def server_keypair(config_dir: Path) -> tuple[bytes, bytes]:
    """The daemon's CurveZMQ key pair (Z85), kept in ``<config>/curve`` (user-only) so that it survives
    reboots: workstations' profiles name its public key."""
    return _load_or_create_keypair(Path(config_dir) / "curve", "server")


def client_keypair(config_dir: Path) -> tuple[bytes, bytes]:
    """This machine's client key pair (Z85), kept in ``<config>/curve``; add the public key to curve_allow."""
    return _load_or_create_keypair(Path(config_dir) / "curve", "client")


def curve_server(sock: zmq.Socket, secret: bytes) -> None:
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.zap_domain = ZAP_DOMAIN.encode()


def curve_client(sock: zmq.Socket, server_public: bytes, public: bytes, secret: bytes) -> None:
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def is_loopback_host(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


# ---------------------------------------------------------------------------------------------------
# Channel: the synchronous client end (signed request/reply with timeouts, and event subscriptions)
# ---------------------------------------------------------------------------------------------------
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
                     | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH)


class Channel:
    """Signed request/reply to the daemon, from its connection file. Thread-safe (one lock per socket).

    ``request()`` returns the reply content (a dict) or raises :class:`RemoteError` for an ``error``
    reply, :class:`ReplyTimeout` when nothing comes back in time, and :class:`WireError` with code
    ``not_allowed``, ``curve_required`` or ``handshake_failed`` as soon as ZeroMQ reports that the daemon
    refused the connection (a Curve daemon cannot answer a peer it refused, so the socket monitor's
    handshake events are the only way to tell a refusal from a daemon that is not there).
    ``call()`` also parses the reply into its protocol model. ``subscribe()`` opens an event subscription.
    Build it with :meth:`open` (or :meth:`from_settings`): the one place that loads the client keys.
    """

    def __init__(
        self,
        info: ConnectionInfo,
        *,
        timeout: float = 10.0,
        context: zmq.Context | None = None,
        client_keys: tuple[bytes, bytes] | None = None,
        session: str | None = None,
    ):
        self.info = info
        self.key = info.key_bytes
        self.timeout = timeout
        self.session = session or new_id()
        self._ctx = context or zmq.Context.instance()
        self._client_keys = client_keys
        if info.curve_server_key and client_keys is None:
            raise WireError("bad_message", "the daemon requires CurveZMQ; pass client_keys (see client_keypair())",
                            field="client_keys")
        self._socks: dict[str, zmq.Socket] = {}
        self._mons: dict[str, zmq.Socket] = {}
        self._bare_failures = 0
        self._locks = {"request": threading.Lock(), "control": threading.Lock()}
        self._closed = False

    @classmethod
    def open(cls, info: ConnectionInfo, settings: Any = None, **kw: Any) -> "Channel":
        """A channel to ``info``, with this machine's client key pair (``<config>/curve``, made when
        missing) when the daemon uses CurveZMQ. Every client (Client, CLI, panel, host scripts) comes here."""
        if info.curve_server_key and kw.get("client_keys") is None:
            if settings is None:
                from .settings import load_settings

                settings = load_settings()
            kw["client_keys"] = client_keypair(settings.config_path)
        return cls(info, **kw)

    @classmethod
    def from_file(cls, path: Path | str, settings: Any = None, **kw: Any) -> "Channel":
        return cls.open(read_connection_file(Path(path)), settings, **kw)

    @classmethod
    def from_settings(cls, settings: Any = None, **kw: Any) -> "Channel":
        """From ``settings.connection_file`` (``load_settings()`` when not given); Curve keys when needed."""
        if settings is None:
            from .settings import load_settings

            settings = load_settings()
        return cls.open(read_connection_file(settings.connection_file), settings, **kw)

    # -- sockets ----------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        """The daemon as the user knows it: the profile name and host, or host:port."""
        host = self.info.connect_host
        return f"{self.info.name} ({host})" if self.info.name else host

    def _apply_curve(self, sock: zmq.Socket) -> None:
        if self.info.curve_server_key:
            assert self._client_keys is not None
            curve_client(sock, self.info.curve_server_key.encode("ascii"), *self._client_keys)

    def _socket(self, which: str) -> zmq.Socket:
        sock = self._socks.get(which)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.linger = 0
            sock.immediate = True  # queue only to completed connections: a dead daemon times out on send
            self._apply_curve(sock)
            self._mons[which] = sock.get_monitor_socket(_HANDSHAKE_EVENTS)
            sock.connect(self.info.endpoint(which))
            self._socks[which] = sock
        return sock

    def _reset(self, which: str) -> None:
        sock = self._socks.pop(which, None)
        mon = self._mons.pop(which, None)
        if sock is not None:
            with contextlib.suppress(zmq.ZMQError):
                sock.disable_monitor()
            sock.close(0)
        if mon is not None:
            mon.close(0)

    def _refusal(self, event: int, value: int) -> WireError | None:
        """The named error for a failed handshake event (None for a success)."""
        where = self.where
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            pub = self._client_keys[0].decode("ascii") if self._client_keys else "(none)"
            return WireError("not_allowed", f"this workstation's key is not allowed on {where} (its public key "
                             f"{pub} is not in the host's curve_allow)", field="curve_allow",
                             wanted="on the host, add the output of 'unimoe-audio keys' here to curve_allow "
                             "and restart its daemon")
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # The peer may simply have closed first (a Curve server drops a plain client, which then sees
            # EPIPE): the next attempt (ZeroMQ reconnects every 100 ms) may report the precise reason. Only
            # repeated bare failures are named; a plain handshake fails only against a Curve daemon.
            self._bare_failures += 1
            if self._bare_failures < (3 if self.info.curve_server_key else 2):
                return None
        mismatch = (event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
        if mismatch or (event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL and not self.info.curve_server_key):
            if self.info.curve_server_key:
                return WireError("curve_required", f"the daemon on {where} does not use CurveZMQ, but this "
                                 "connection expects it (a stale profile?)", field="curve_server_key",
                                 wanted="a fresh profile ('unimoe-audio remote export' on the host)")
            return WireError("curve_required", f"the daemon on {where} accepts only encrypted (CurveZMQ) clients, "
                             "and this connection has no server key", field="curve_server_key",
                             wanted="a profile from the host ('unimoe-audio remote export' there, "
                             "'unimoe-audio remote add' here)")
        if event in (zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
            return WireError("handshake_failed", f"the connection handshake with {where} failed (ZeroMQ event "
                             f"{event:#x}, value {value:#x}): the host's server key may have changed",
                             field="curve_server_key", wanted="a fresh profile ('unimoe-audio remote export')")
        return None

    def _check_monitor(self, which: str) -> None:
        from zmq.utils.monitor import recv_monitor_message

        mon = self._mons.get(which)
        while mon is not None:
            try:
                ev = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            if int(ev["event"]) == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._bare_failures = 0
            err = self._refusal(int(ev["event"]), int(ev["value"]))
            if err is not None:
                self._bare_failures = 0
                self._reset(which)  # stops libzmq reconnecting into the same refusal
                raise err

    def request_raw(self, msg_type: str, content: BaseModel | dict[str, Any] | None = None, *,
                    timeout: float | None = None, control: bool = False) -> Message:
        """Send one request and wait for its reply message (any type, ``error`` included)."""
        if self._closed:
            raise WireError("bad_message", "channel is closed", field="channel")
        which = "control" if control else "request"
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        frames, header = serialize(msg_type, content, key=self.key, session=self.session)
        limit = self.info.max_message_bytes
        size = sum(len(f) for f in frames)
        if limit is not None and size > limit:
            # The daemon would answer too_large, or (past its hard limit) ZeroMQ would drop the connection
            # with no answer at all: refuse here, with the same typed error, before sending.
            raise WireError("too_large", f"message of {size} bytes is over the daemon's limit", field="content",
                            wanted=f"at most {limit} bytes (max_message_bytes)")
        with self._locks[which]:
            sock = self._socket(which)
            mon = self._mons[which]
            # Wait until the connection is up (immediate=True), watching the handshake for a refusal.
            while True:
                self._check_monitor(which)
                left = deadline - time.monotonic()
                if left <= 0:
                    self._reset(which)
                    raise ReplyTimeout(f"daemon at {self.info.endpoint(which)} does not accept connections "
                                       f"(not running?)")
                poller = zmq.Poller()
                poller.register(sock, zmq.POLLOUT)
                poller.register(mon, zmq.POLLIN)
                ready = dict(poller.poll(min(int(left * 1000) + 1, 200)))
                if sock in ready:
                    try:
                        sock.send_multipart(frames, copy=False, flags=zmq.NOBLOCK)
                        break
                    except zmq.Again:
                        continue
            while True:
                self._check_monitor(which)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReplyTimeout(f"no reply to {msg_type!r} within {timeout:g} s")
                poller = zmq.Poller()
                poller.register(sock, zmq.POLLIN)
                poller.register(mon, zmq.POLLIN)
                ready = dict(poller.poll(int(left * 1000) + 1))
                if sock not in ready:
                    continue
                reply = sock.recv_multipart()
                try:
                    msg = deserialize(reply, key=self.key)
                except ProtocolError:
                    continue  # a stray or forged reply: ignore
                if msg.header.parent_id == header.msg_id:
                    return msg
                # a late reply to an earlier request that timed out: drop it

    def request(self, msg_type: str, content: BaseModel | dict[str, Any] | None = None, *,
                timeout: float | None = None, control: bool = False) -> dict[str, Any]:
        msg = self.request_raw(msg_type, content, timeout=timeout, control=control)
        if msg.msg_type == "error":
            raise RemoteError.from_reply(msg.content)
        return msg.content

    def call(self, msg_type: str, content: BaseModel | dict[str, Any] | None = None, *,
             timeout: float | None = None, control: bool = False) -> BaseModel:
        msg = self.request_raw(msg_type, content, timeout=timeout, control=control)
        if msg.msg_type == "error":
            raise RemoteError.from_reply(msg.content)
        return parse_reply(msg.msg_type, msg.content)

    def subscribe(self, topics: Iterable[str] = ("",)) -> "Subscription":
        return Subscription(self, topics)

    def close(self) -> None:
        self._closed = True
        for which in list(self._socks):
            self._reset(which)

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Subscription:
    """Signed events from the daemon's PUB socket. ``""`` subscribes to everything; ``job.<id>`` to one job.

    ZeroMQ subscriptions take a moment to reach the publisher: subscribe *before* submitting, or use the
    ``snapshot`` request to catch up on a job whose events you may have missed.
    """

    def __init__(self, channel: Channel, topics: Iterable[str] = ("",)):
        self._key = channel.key
        self._sock = channel._ctx.socket(zmq.SUB)
        self._sock.linger = 0
        channel._apply_curve(self._sock)
        for t in topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, t.encode("utf-8"))
        self._sock.connect(channel.info.endpoint("events"))

    def add(self, topic: str) -> None:
        self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))

    def remove(self, topic: str) -> None:
        self._sock.setsockopt(zmq.UNSUBSCRIBE, topic.encode("utf-8"))

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next verified event (``msg.topic``, ``msg.msg_type``, ``msg.content``), or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            if not self._sock.poll(wait, zmq.POLLIN):
                return None
            frames = self._sock.recv_multipart()
            try:
                return deserialize(frames, key=self._key)
            except ProtocolError:
                continue

    def __iter__(self) -> Iterator[Message]:
        while True:
            msg = self.recv()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self._sock.close(0)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def free_port(host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> int:
    """A currently free port (tests and benchmarks)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]
