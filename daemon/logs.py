"""Daemon logging: a rotated file in settings.log_path (daemon.log) plus stderr in the foreground."""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

LOG_NAME = "daemon.log"
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s [%(threadName)s] %(message)s"


def setup_logging(log_dir: Path, level: str = "INFO", *, stderr: bool = True,
                  max_bytes: int = 5 * 1024 * 1024, backups: int = 5) -> Path:
    """Configure the ``unimoe_audio`` logger tree; return the log file's path."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / LOG_NAME
    root = logging.getLogger("unimoe_audio")
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fh = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
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
