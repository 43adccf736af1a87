"""Typed errors raised by the model layer.

Every error names the request field it concerns, so the daemon can hand callers a structured error
("field `seconds`: wanted a number between 0.5 and 600") without parsing messages.
"""
from __future__ import annotations


class UniMoEError(Exception):
    """Base class of every error the model layer raises on purpose."""

    code = "error"

    def __init__(self, message: str, field: str | None = None, wanted: str | None = None):
        super().__init__(message if field is None else f"{field}: {message}")
        self.field = field
        self.wanted = wanted
        self.detail = message


class InvalidInput(UniMoEError):
    """A request field has a bad value (empty text, silent audio, impossible length, ...)."""

    code = "invalid_input"


class CheckpointError(UniMoEError):
    """A checkpoint folder or file is missing, corrupt, or does not match the architecture."""

    code = "checkpoint_error"


class Cancelled(UniMoEError):
    """Generation was stopped by the caller's progress callback."""

    code = "cancelled"


class MediaError(InvalidInput):
    """An audio or video file could not be decoded (unreadable, no stream, no frames)."""

    code = "media_error"
