"""The client's typed errors, and the mapping from a protocol error code to one of them."""
from __future__ import annotations

from . import protocol as P

__all__ = ["ClientError", "DaemonUnavailable", "ProtocolMismatch", "NotAllowed", "BadRequest", "GenerationFailed",
           "JobCancelled", "from_protocol_error"]

_BAD_INPUT_CODES = {"invalid_input", "path_not_allowed", "not_found", "too_large", "media_error", "unknown_type",
                    "bad_message"}
_ENGINE_CODES = {"model_error", "checkpoint_error", "out_of_memory", "internal", "cancelled"}
_UNAVAILABLE_CODES = {"busy", "shutting_down", "version_mismatch", "bad_signature", "not_running", "timeout"}
_REFUSED_CODES = {"not_allowed", "curve_required", "handshake_failed"}


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


def from_protocol_error(exc: P.ProtocolError, context: str = "") -> ClientError:
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
