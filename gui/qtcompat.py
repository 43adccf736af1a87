"""Work-arounds for defects of the installed Qt bindings, applied once when the panel is imported.

PySide6 6.12.0 on Python < 3.12: every call of a method that returns nothing (``setText``, ``drawLine``,
``lineTo`` ...) drops one reference to ``None`` that it never took. A panel that paints waveforms makes
thousands of such calls a second, and the interpreter aborts with "none_dealloc: deallocating None"
within a minute. Python 3.12+ makes None immortal, so there the bug is harmless. pyproject.toml excludes
that release; this guard covers an environment that has it anyway: it measures the leak and, only when
there is one, gives None the same immortality 3.12 has (a reference count too large to ever reach zero).
"""
from __future__ import annotations

import ctypes
import sys

_IMMORTAL = 1 << 60
_applied = False


def none_leaks_per_call() -> int:
    """How many references to None one void Qt method call drops (0 for a healthy binding)."""
    from PySide6.QtCore import QObject

    probe = QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        probe.setObjectName("probe")
    return max(0, round((before - sys.getrefcount(None)) / 64))


def guard_none_refcount() -> bool:
    """Apply the guard when the binding leaks; returns whether it was needed."""
    global _applied
    if _applied or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return _applied
    if none_leaks_per_call() == 0:
        return False
    # ob_refcnt is the first field of every CPython object (a Py_ssize_t) in release builds.
    ctypes.c_ssize_t.from_address(id(None)).value += _IMMORTAL
    _applied = True
    return True
