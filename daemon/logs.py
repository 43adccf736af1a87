"""Daemon logging: a rotated file in settings.log_path (daemon.log) plus stderr in the foreground."""
from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import Callable

LOG_NAME = "daemon.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"
# Called after daemon.log rotates: crash.py points the fault log at the new file there (registered by it, so
# logging knows nothing of crash handling and crash.py may log).
_AFTER_ROLLOVER: list[Callable[[], None]] = []


def after_rollover(fn: Callable[[], None]) -> None:
    if fn not in _AFTER_ROLLOVER:
        _AFTER_ROLLOVER.append(fn)


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """Log files are user-only (0600): they name texts, paths and jobs."""

    def _open(self):  # type: ignore[no-untyped-def]
        stream = super()._open()
        with contextlib.suppress(OSError):
            os.chmod(self.baseFilename, 0o600)
        return stream

    def doRollover(self) -> None:
        super().doRollover()
        for fn in list(_AFTER_ROLLOVER):
            fn()


def setup_logging(log_dir: Path, level: str = "INFO", *, stderr: bool = True,
                  max_bytes: int = 5 * 1024 * 1024, backups: int = 5) -> Path:
    """Configure the ``unimoe_audio`` logger tree; return the log file's path."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(log_dir, 0o700)
    path = log_dir / LOG_NAME
    root = logging.getLogger("unimoe_audio")
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fh = _PrivateRotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    fh.setFormatter(logging.Formatter(_FORMAT))
    root.addHandler(fh)
    if stderr:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(sh)
    root.propagate = False
    return path


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(f"unimoe_audio.daemon.{name}")
