"""The envelope: frames, HMAC signing and their checks, and the wire's errors.

One implementation of the message format, used by the daemon and by every client (CLI, panel, DAW
scripts); the jupyter_client ``Session`` of this protocol. The connection file is
:mod:`.connection`, CurveZMQ keys :mod:`.curve`, the synchronous client end :mod:`.channel`.
Light imports only: pydantic (through protocol) and the standard library.

A message on a socket is these frames::

    [routing...] b"unimoe-audio/1"  signature_hex  header_json  content_json  [buffer...]

``routing`` is the ROUTER identity envelope on the request/control sockets (added and removed by ZeroMQ
and the daemon) and the topic frame (``job.<id>`` or ``daemon``) on the event socket. The signature is
HMAC-SHA256 over ``header_json + content_json`` (and then each buffer frame, when there are any) with the
key from the connection file, in lowercase hex. Buffers are raw bytes (the chunks of a ``fetch`` reply).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from .protocol import (
    IDENT,
    ErrorReply,
    Header,
    ProtocolError,
    check_version,
    dump,
    new_id,
)

__all__ = ["WireError", "RemoteError", "DaemonNotRunning", "ReplyTimeout", "ProtocolError", "Message", "new_id",
           "new_key", "sign", "serialize", "split_envelope", "deserialize"]

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
