"""OSC (UDP) front end: translates OSC messages to the same protocol requests the ZeroMQ sockets take,
and replies/job notifications back to OSC messages. Parsing and building use python-osc; the UDP socket
is polled by the daemon's main loop (no extra thread, no locks).

Address space and argument conventions: docs/protocol.md, "OSC".
"""
from __future__ import annotations

import ipaddress
import math
import socket
import typing
from typing import Any

from pythonosc.osc_bundle import OscBundle
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from ..client import tasks
from ..client.protocol import PROTOCOL_VERSION, ProtocolError
from .logs import get_logger

log = get_logger("osc")

# ---------------------------------------------------------------------------------------------------
# OSC address space (UDP; loopback by default; audio never travels over OSC, only file paths)
# ---------------------------------------------------------------------------------------------------
OSC_PREFIX = "/unimoe"
# Requests (client -> daemon)
OSC_PING = "/unimoe/ping"
OSC_CANCEL = "/unimoe/cancel"
OSC_STATUS = "/unimoe/status"
# each task's own address and positional arguments come from its module (client/tasks/)
OSC_SPEECH = tasks.get("speech").osc_address
OSC_MUSIC = tasks.get("music").osc_address
OSC_VIDEO_SCORE = tasks.get("video_score").osc_address
_TASKS = {t.osc_address: (t.name, t.osc_args) for t in tasks.all_tasks() if t.osc_address}
OSC_REQUESTS = (OSC_PING, *_TASKS, OSC_CANCEL, OSC_STATUS)
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

MAX_DATAGRAM = 65507

# key -> (section, field) in the SubmitRequest dict
_SPEC = "spec"
_KEYS: dict[str, tuple[str, ...]] = {
    "seconds": (_SPEC, "length", "seconds"),
    "frames": (_SPEC, "length", "frames"),
    "fps": (_SPEC, "length", "fps"),
    "min_seconds": (_SPEC, "length", "min_seconds"),
    "max_seconds": (_SPEC, "length", "max_seconds"),
    "seed": (_SPEC, "sampling", "seed"),
    "cfg_scale": (_SPEC, "sampling", "cfg_scale"),
    "temperature": (_SPEC, "sampling", "temperature"),
    "top_p": (_SPEC, "sampling", "top_p"),
    "top_k": (_SPEC, "sampling", "top_k"),
    "eos_factor": (_SPEC, "sampling", "eos_factor"),
    "folder": ("output", "folder"),
    "name": ("output", "name"),
    "sample_rate": ("output", "sample_rate"),
    "channels": ("output", "channels"),
    "bit_depth": ("output", "bit_depth"),
    "loudness_lufs": ("output", "loudness_lufs"),
    "true_peak_db": ("output", "true_peak_db"),
    "normalize": ("output", "normalize"),
    "fit_length": ("output", "fit_length"),
    "overwrite": ("output", "overwrite"),
    "priority": ("priority",),
    "request_id": ("request_id",),  # idempotency key: a resent datagram makes no second job
    # Spotting (BWF bext + iXML in the WAV): the timeline position and production notes.
    "record_in": ("spot", "record_in"),
    "record_fps": ("spot", "fps"),  # the timecode rate of record_in ("fps" is the length's frame rate)
    "record_seconds": ("spot", "seconds"),
    "project": ("spot", "project"),
    "scene": ("spot", "scene"),
    "take": ("spot", "take"),
    "note": ("spot", "note"),
}
# The OSC type each key takes, as the ZeroMQ schema types the field it fills (client/protocol.py).
_FLOAT = ["seconds", "min_seconds", "max_seconds", "cfg_scale", "temperature", "top_p", "eos_factor",
          "loudness_lufs", "true_peak_db", "record_seconds"]
_INT = ["frames", "seed", "top_k", "sample_rate", "channels", "bit_depth", "priority"]


def _scalar(annotation: Any) -> type | None:
    """float, int or None (text) for a spec field's annotation (``float | None`` -> float)."""
    for t in (float, int):
        if annotation is t or t in typing.get_args(annotation):
            return t
    return None


# each task's optional keys (its own fields; aliases such as "in" for in_seconds), typed as its spec types them
for _t in tasks.all_tasks():
    for _key, _field in _t.osc_keys().items():
        _KEYS.setdefault(_key, (_SPEC, _field))
        _kind = _scalar(_t.spec.model_fields[_field].annotation)
        if _kind is float and _key not in _FLOAT:
            _FLOAT.append(_key)
        elif _kind is int and _key not in _INT:
            _INT.append(_key)
_FLAG = ["normalize", "fit_length", "overwrite", "progress"]
for _t in tasks.all_tasks():  # a task's own yes/no fields (music's loop, new_only) are flags too
    for _key, _field in _t.osc_keys().items():
        if _t.spec.model_fields[_field].annotation in (bool, bool | None) and _key not in _FLAG:
            _FLAG.append(_key)
_NUMBER_OR_STRING = ("fps", "record_fps")  # 25, 29.97 or "24000/1001"
_REPLY_KEYS = ("reply_port", "reply_host", "tag", "progress")
_FIELD_TO_KEY = {".".join(v): k for k, v in _KEYS.items()}
_FIELD_TO_KEY.update({f"spec.{a}": a for _t in tasks.all_tasks() for a in _t.osc_args})
_FIELD_TO_KEY["job_id"] = "job_id"
_SIMPLE = {OSC_PING: ("ping", ()), OSC_STATUS: ("status", ()), OSC_CANCEL: ("cancel", ("job_id",))}


class OscRequest:
    """One parsed OSC request: the protocol request it maps to and where replies go."""

    def __init__(self, msg_type: str, content: dict[str, Any], reply_to: tuple[str, int], tag: str,
                 progress: bool):
        self.msg_type = msg_type
        self.content = content
        self.reply_to = reply_to
        self.tag = tag
        self.progress = progress


def osc_field(field: str | None) -> str | None:
    """A protocol field path as the OSC argument name the user typed."""
    if field is None:
        return None
    return _FIELD_TO_KEY.get(field, field)


def _set(d: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for p in path[:-1]:
        d = d.setdefault(p, {})
    d[path[-1]] = value


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def typed(key: str, v: Any) -> Any:
    """An OSC argument checked against the type of the field it fills; ProtocolError naming the key."""
    if key in _FLOAT or (key in _NUMBER_OR_STRING and not isinstance(v, str)):
        if not _is_number(v):
            raise ProtocolError("invalid_input", f"{key} must be a number, got {_osc_kind(v)}", field=key,
                                wanted="a number (f or i)")
        if not math.isfinite(v):
            raise ProtocolError("invalid_input", f"{key} must be a finite number, got {v}", field=key,
                                wanted="a finite number (f or i)")
        return v
    if key in _INT:
        if isinstance(v, float) and math.isfinite(v) and v.is_integer():
            return int(v)  # Max and TouchOSC often send whole numbers as floats
        if not _is_number(v) or isinstance(v, float):
            raise ProtocolError("invalid_input", f"{key} must be a whole number, got {_osc_kind(v)}"
                                + (f" {v}" if isinstance(v, float) else ""), field=key, wanted="an int (i)")
        return v
    if key in _FLAG:
        if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
            return bool(v)
        raise ProtocolError("invalid_input", f"{key} must be 0 or 1, got {_osc_kind(v)} {v!r}", field=key,
                            wanted="0 or 1 (i), or T/F")
    if not isinstance(v, str):
        raise ProtocolError("invalid_input", f"{key} must be a string, got {_osc_kind(v)}", field=key,
                            wanted="a string (s)")
    return v


def _osc_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an int"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (bytes, bytearray)):
        return "a blob"
    return f"a {type(v).__name__}"


def routing(address: str, args: list[Any], sender: tuple[str, int]) -> tuple[tuple[str, int], str]:
    """Where a request's replies go and its tag, read leniently (never raises), so that an error about
    any other argument still reaches ``reply_host:reply_port`` with the tag."""
    n = len((_TASKS.get(address) or _SIMPLE.get(address) or ("", ()))[1])
    host, port, tag = sender[0], sender[1], ""
    rest = args[n:]
    for i in range(0, len(rest) - 1, 2):
        k, v = rest[i], rest[i + 1]
        if k == "reply_port" and isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536:
            port = v
        elif k == "reply_host" and isinstance(v, str):
            host = v
        elif k == "tag" and isinstance(v, str):
            tag = v
    return (host, port), tag


def parse(address: str, args: list[Any], sender: tuple[str, int]) -> OscRequest:
    """Map an OSC message to a protocol request. Raises ProtocolError naming the argument."""
    reply_host, reply_port, tag, progress = sender[0], sender[1], "", False
    if address in _TASKS:
        task, required = _TASKS[address]
    elif address in _SIMPLE:
        task, required = _SIMPLE[address]
    else:
        raise ProtocolError("unknown_type", f"unknown OSC address {address}", field="address",
                            wanted=", ".join(OSC_REQUESTS))
    if len(args) < len(required):
        raise ProtocolError("invalid_input", f"{address} needs {' '.join(required)}",
                            field=required[len(args)], wanted="a string")
    positional, rest = args[: len(required)], args[len(required):]
    for name, value in zip(required, positional):
        if not isinstance(value, str):
            raise ProtocolError("invalid_input", f"{name} must be a string", field=name, wanted="a string (s)")
    if len(rest) % 2:
        raise ProtocolError("invalid_input", "optional arguments come in key value pairs",
                            field=str(rest[-1]), wanted="key value pairs after the required arguments")
    pairs: list[tuple[str, Any]] = []
    for i in range(0, len(rest), 2):
        k, v = rest[i], rest[i + 1]
        if not isinstance(k, str):
            raise ProtocolError("invalid_input", f"expected a key name, got {k!r}", field=f"argument {len(required) + i + 1}",
                                wanted="key value pairs")
        pairs.append((k, v))
    content: dict[str, Any] = {}
    for k, v in pairs:
        if k == "reply_port":
            if not isinstance(v, int) or isinstance(v, bool) or not 0 < v < 65536:
                raise ProtocolError("invalid_input", "reply_port must be an int port", field="reply_port",
                                    wanted="an int (i) 1..65535")
            reply_port = v
        elif k == "reply_host":
            if not isinstance(v, str):
                raise ProtocolError("invalid_input", "reply_host must be a string", field="reply_host", wanted="s")
            reply_host = v
        elif k == "tag":
            tag = typed("tag", v)
        elif k == "progress":
            progress = typed("progress", v)
        elif task in ("ping", "status", "cancel") or k not in _KEYS:
            raise ProtocolError("invalid_input", f"unknown key {k!r} for {address}", field=k,
                                wanted=", ".join(_REPLY_KEYS + (tuple(_KEYS) if tasks.find(task) is not None else ())))
        else:
            _set(content, _KEYS[k], typed(k, v))
    if task in ("ping", "status"):
        return OscRequest(task, {}, (reply_host, reply_port), tag, progress)
    if task == "cancel":
        return OscRequest("cancel", {"job_id": positional[0]}, (reply_host, reply_port), tag, progress)
    spec = content.setdefault("spec", {})
    spec["task"] = task
    for name, value in zip(required, positional):
        spec[name] = value
    if tag:
        content["tag"] = tag
    return OscRequest("submit", content, (reply_host, reply_port), tag, progress)


def build(address: str, args: list[Any]) -> bytes:
    b = OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, bool):
            b.add_arg(int(a), "i")
        elif isinstance(a, int):
            b.add_arg(a, "i" if -(2**31) <= a < 2**31 else "h")
        elif isinstance(a, float):
            b.add_arg(a, "f")
        else:
            b.add_arg("" if a is None else str(a), "s")
    return b.build().dgram


def error_message(err: ProtocolError | Any, tag: str) -> tuple[str, list[Any]]:
    return OSC_ERROR, [err.code, err.message, osc_field(err.field) or "", tag]


def reply_messages(msg_type: str, reply: dict[str, Any], tag: str) -> list[tuple[str, list[Any]]]:
    if msg_type == "ping":
        return [(OSC_PONG, [reply.get("protocol_version", PROTOCOL_VERSION), int(reply.get("pid", 0))])]
    if msg_type == "status":
        return [(OSC_STATE, [reply["state"], reply.get("model", ""), int(reply.get("queue_length", 0)),
                                  int(bool(reply.get("tiny")))])]
    if msg_type == "submit":
        return [(OSC_ACCEPTED, [reply["job_id"], int(reply.get("position", 0)), tag])]
    if msg_type == "cancel":
        state = reply.get("state")
        if state == "cancelled":
            return [(OSC_CANCELLED, [reply["job_id"], tag])]
        if reply.get("pending"):
            return []  # /unimoe/cancelled follows when the running job stops
        # Already finished (done or failed): not an error, as over ZeroMQ (cancel_reply{state, was}).
        return [(OSC_CANCEL_REPLY, [reply["job_id"], state, tag])]
    return []


def event_message(event: str, content: dict[str, Any], tag: str, progress: bool) -> tuple[str, list[Any]] | None:
    job_id = content.get("job_id", "")
    if event == "started":
        return OSC_STARTED, [job_id, tag]
    if event == "progress":
        if not progress:
            return None
        return OSC_PROGRESS, [job_id, float(content.get("fraction", 0.0)), content.get("stage", ""), tag]
    if event == "done":
        return OSC_DONE, [job_id, content["path"], float(content.get("seconds", 0.0)), tag]
    if event == "failed":
        err = content.get("error", {})
        return OSC_FAILED, [job_id, err.get("code", "error"), err.get("message", ""), tag]
    if event == "cancelled":
        return OSC_CANCELLED, [job_id, tag]
    return None


def iter_messages(data: bytes) -> list[tuple[str, list[Any]]]:
    """Messages in a datagram (a message or a bundle, nested bundles flattened)."""
    if OscBundle.dgram_is_bundle(data):
        out: list[tuple[str, list[Any]]] = []
        for item in OscBundle(data):
            if isinstance(item, OscBundle):
                out += iter_messages(item.dgram)
            else:
                out.append((item.address, list(item.params)))
        return out
    msg = OscMessage(data)
    return [(msg.address, list(msg.params))]


def parse_allow(entries: list[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """osc_allow entries (addresses or networks) as networks; ValueError names a bad one."""
    nets = []
    for e in entries:
        try:
            nets.append(ipaddress.ip_network(e.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{e!r} is not an IP address or network (e.g. 192.168.1.20 or 192.168.1.0/24)") from None
    return nets


def sender_allowed(address: str, nets: list[Any]) -> bool:
    """Loopback senders always; others when inside one of ``nets``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in n for n in nets if n.version == ip.version)


class OscSocket:
    def __init__(self, host: str, port: int):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.bind((host, port))
        self.host, self.port = self.sock.getsockname()[:2]

    def fileno(self) -> int:
        return self.sock.fileno()

    def recv_all(self) -> list[tuple[bytes, tuple[str, int]]]:
        out = []
        while True:
            try:
                data, addr = self.sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return out
            except OSError as exc:  # e.g. ICMP port unreachable reported on a later recv
                log.debug("osc recv: %s", exc)
                return out
            out.append((data, addr[:2]))

    def send(self, to: tuple[str, int], address: str, args: list[Any]) -> None:
        try:
            self.sock.sendto(build(address, args), to)
        except OSError as exc:
            log.warning("OSC reply to %s:%s failed: %s", to[0], to[1], exc)

    def close(self) -> None:
        self.sock.close()
