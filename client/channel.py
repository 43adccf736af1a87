"""The synchronous client end: signed request/reply with timeouts (:class:`Channel`) and event
subscriptions (:class:`Subscription`), built from the connection file."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterable, Iterator

import zmq
from pydantic import BaseModel

from .connection import ConnectionInfo, read_connection_file
from .curve import client_keypair, curve_client
from .protocol import ProtocolError, new_id, parse_reply
from .wire import Message, RemoteError, ReplyTimeout, WireError, deserialize, serialize

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
                    timeout: float | None = None, control: bool = False,
                    buffers: list[bytes] | None = None) -> Message:
        """Send one request (``buffers``: raw frames after the content, e.g. an upload's chunk) and wait for
        its reply message (any type, ``error`` included)."""
        if self._closed:
            raise WireError("bad_message", "channel is closed", field="channel")
        which = "control" if control else "request"
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        frames, header = serialize(msg_type, content, key=self.key, session=self.session, buffers=buffers)
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
                except ProtocolError as exc:
                    if exc.code == "bad_signature":
                        self._check_key_mismatch(reply, header.msg_id)
                    continue  # a stray or forged reply: ignore
                if msg.header.parent_id == header.msg_id:
                    return msg
                # a late reply to an earlier request that timed out: drop it

    def _check_key_mismatch(self, reply: list[bytes], msg_id: str) -> None:
        """A reply we cannot verify that answers our own request with ``bad_signature``: the daemon there
        is alive and signs with another key than ours (the connection file was replaced or edited after it
        started). Say so, instead of waiting out a timeout that reads as "no daemon"."""
        try:
            msg = deserialize(reply, key=None, check_signature=False)
        except ProtocolError:
            return
        if msg.header.parent_id != msg_id or msg.msg_type != "error" or msg.content.get("code") != "bad_signature":
            return
        pid = f" (pid {self.info.pid})" if self.info.pid else ""
        where = self.info.name or self.info.endpoint("control")
        raise WireError("key_mismatch", f"the connection file's signing key does not match the running daemon{pid} at "
                        f"{where}: that daemon refused the request's signature", field="key",
                        wanted=("the daemon's own connection file (restart that daemon: it writes a fresh one)"
                                if not self.info.name else "a fresh profile ('unimoe-audio remote export' on the "
                                "host, 'unimoe-audio remote add' here)"))

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

    def subscribe(self, topics: Iterable[str] = ("",), *, confirm: float | None = None) -> "Subscription":
        """Events on ``topics``. ``confirm``: wait up to that many seconds until the subscription is known
        to have reached the daemon (:meth:`Subscription.confirm`), so no event published afterwards is lost."""
        sub = Subscription(self, topics)
        if confirm is not None:
            try:
                sub.confirm(confirm)
            except BaseException:
                sub.close()
                raise
        return sub

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

    ZeroMQ subscriptions take a moment to reach the publisher, and events sent before that are dropped:
    :meth:`confirm` waits until they have arrived (before submitting work whose events matter), or use the
    ``snapshot`` request to catch up on a job whose events you may have missed.
    """

    def __init__(self, channel: Channel, topics: Iterable[str] = ("",)):
        self._channel = channel
        self._key = channel.key
        self._held: deque[Message] = deque()  # events read while confirming, handed out by recv() first
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

    def confirm(self, timeout: float = 30.0) -> "Subscription":
        """Return once the daemon's publisher has every topic subscribed so far (the subscription handshake).

        Subscribes to a fresh ``echo.<token>`` topic and asks the daemon (``ping{echo: token}`` on the control
        socket, which stays responsive under load) to publish an ``echo`` event there, again and again with
        a growing pause, until one arrives. ZeroMQ sends a socket's subscriptions to the publisher in order
        on one connection, so when the echo topic has arrived the earlier ones have too. Events of other
        topics read meanwhile are kept for :meth:`recv`. Raises :class:`ReplyTimeout` when no echo came
        within ``timeout`` s (the events port unreachable, e.g. a firewall), and the daemon's error for a
        daemon that predates the ``echo`` field.
        """
        from .protocol import PingRequest, echo_topic

        token = new_id()
        topic = echo_topic(token)
        self.add(topic)
        deadline = time.monotonic() + timeout
        pause = 0.02
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ReplyTimeout(f"no event from {self._channel.info.endpoint('events')} within {timeout:g} s: "
                                       "is the daemon's events port reachable from here?")
                self._channel.request("ping", PingRequest(echo=token), timeout=left, control=True)
                until = min(deadline, time.monotonic() + pause)
                while (msg := self._next(max(0.0, until - time.monotonic()))) is not None:
                    if msg.msg_type == "echo" and msg.topic == topic:
                        return self
                    if not msg.topic.startswith("echo."):
                        self._held.append(msg)
                pause = min(pause * 2, 1.0)
        finally:
            self.remove(topic)

    def _next(self, timeout: float | None) -> Message | None:
        """The next verified message off the socket (not the held ones), or None on timeout."""
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

    def recv(self, timeout: float | None = None) -> Message | None:
        """The next verified event (``msg.topic``, ``msg.msg_type``, ``msg.content``), or None on timeout."""
        if self._held:
            return self._held.popleft()
        return self._next(timeout)

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
