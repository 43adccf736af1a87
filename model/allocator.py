"""Keep the C allocator from hoarding freed tensor memory while a checkpoint streams in.

Loading reads thousands of 1-30 MB tensors, converts each (bf16 -> fp32 for quantization, or to the
load dtype) and keeps a smaller result. glibc's malloc raises its mmap threshold dynamically (up to
32 MiB) each time a large block is freed, after which blocks of that size come from the heap arenas
instead of their own mappings; the short-lived copies then fragment the arenas around the kept
results and are never returned to the system. Measured on the full-size model (2 cores, cold page
cache): ``models import --quant int8`` grew to 24 GB of anonymous memory and was killed, for a 7 GB
result; with a fixed 1 MiB threshold it peaks at 7.0 GB. Fixing the threshold (which also stops the
dynamic adjustment) gives every tensor of 1 MiB or more its own mapping, returned on free. Small
per-step tensors of the decode loop stay below it, so the decode path is unaffected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

MMAP_THRESHOLD = 1 << 20  # bytes; blocks at least this large are mapped on their own
_M_MMAP_THRESHOLD = -3  # mallopt parameter number (malloc.h)
_done: bool | None = None


def fix_mmap_threshold() -> bool:
    """Set glibc's mmap threshold once per process; True when set (False off glibc, e.g. macOS)."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl has no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _done


def malloc_trim() -> None:
    """Return free heap pages to the system (after a load or a model release); no-op off glibc."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
