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


class BadLogits(UniMoEError):
    """The model produced logits that cannot be sampled (NaN/inf: e.g. an fp16 overflow) for one item.
    Checked on the device before sampling, so nothing is indexed with a bad value: only that item
    fails, its neighbours in the batch and the device go on."""

    code = "bad_logits"

    def __init__(self, detail: str = "the model produced non-finite logits for this item"):
        super().__init__(detail, wanted="dtype bfloat16 or float32 (float16 can overflow), or another seed")


class DeviceFault(UniMoEError):
    """The accelerator reported an error (a CUDA error, a device-side assert): the jobs in flight
    fail with it, and the daemon reloads the model in a fresh process before the next job."""

    code = "device_fault"
