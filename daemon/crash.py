"""A fatal crash leaves a trace: ``faulthandler`` writes the fatal signal (SIGSEGV, SIGABRT, SIGBUS,
SIGFPE, SIGILL) and the Python traceback of every thread into the daemon's log, where the Python
logging of an ordinary error would never run (a segfault in a native kernel kills the process at once).

The fault log is its own file descriptor on ``daemon.log`` opened for appending; when the log rotates
(daemon/logs.py) it is opened again, so the trace lands in the current file.

A test hook makes the worker crash itself on purpose (the crash tests run a real daemon that dies of
a real signal): ``UNIMOE_AUDIO_TEST_CRASH=TAG`` crashes with SIGSEGV when a job tagged ``TAG`` starts,
``abort:TAG`` with SIGABRT. Not a setting: it is read from the environment only, and only for tests.
"""
from __future__ import annotations

import faulthandler
import logging
import os
from pathlib import Path
from typing import IO

from .logs import after_rollover, get_logger

TEST_CRASH_ENV = "UNIMOE_AUDIO_TEST_CRASH"
_fault_file: IO[str] | None = None
_fault_path: Path | None = None

log = get_logger("crash")


def enable_fault_log(path: Path) -> None:
    """Write fatal signals and all threads' tracebacks to ``path`` (appending)."""
    global _fault_file, _fault_path
    old = _fault_file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    _fault_file = os.fdopen(fd, "a", encoding="utf-8")
    _fault_path = Path(path)
    faulthandler.enable(file=_fault_file, all_threads=True)
    after_rollover(reopen_fault_log)  # fatal-signal traces follow the log to its new file
    if old is not None:
        old.close()


def reopen_fault_log() -> None:
    """After the log rotated: point the fault log at the new file."""
    if _fault_path is not None:
        enable_fault_log(_fault_path)


def crash_if_asked(tag: str | None) -> None:
    """The crash tests' hook (see the module docstring)."""
    want = os.environ.get(TEST_CRASH_ENV)
    if not want or tag is None:
        return
    how, _, target = want.partition(":") if want.startswith("abort:") else ("segv", "", want)
    if tag != target:
        return
    log.error("crashing on purpose with %s for job tag %r (%s is set)", "SIGABRT" if how == "abort" else "SIGSEGV",
              tag, TEST_CRASH_ENV)
    for h in logging.getLogger("unimoe_audio").handlers:
        h.flush()
    if how == "abort":
        os.abort()
    faulthandler._sigsegv()  # a real SIGSEGV in this thread (CPython's own test helper)
