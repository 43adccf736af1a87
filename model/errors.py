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


def is_device_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the accelerator's error (after which its context may be unusable): torch's
    ``AcceleratorError`` / ``torch.cuda.CudaError``, or a RuntimeError whose text is CUDA's."""
    if isinstance(exc, DeviceFault):
        return True
    import torch

    types = tuple(t for t in (getattr(torch, "AcceleratorError", None), getattr(torch.cuda, "CudaError", None)) if t)
    if types and isinstance(exc, types):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("CUDA error" in text or "device-side assert" in text
                                              or "CUBLAS_STATUS" in text or "cuDNN error" in text)


def as_device_fault(exc: BaseException) -> DeviceFault:
    if isinstance(exc, DeviceFault):
        return exc
    err = DeviceFault(f"the GPU reported an error: {type(exc).__name__}: {exc}",
                      wanted="nothing: the model is reloaded in a fresh context before the next job; "
                             "if it repeats, try dtype float32 or another driver")
    err.__cause__ = exc
    return err
