"""Waiting on progress, not on the clock: a wait fails only when nothing has moved for ``STALL_S``
seconds, so a slow but working run on a loaded machine passes and a stuck one fails.

What counts as movement (any of): a job event recorded in a daemon's queue database (every progress,
state or partial event bumps the job's ``event_seq``; states change), a file growing (daemon output,
logs, a download), a child process printing a line. ``UNIMOE_AUDIO_TEST_STALL_S`` overrides the
default for very slow machines.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Iterable

STALL_S = float(os.environ.get("UNIMOE_AUDIO_TEST_STALL_S", "240"))


def queue_signature(db: Path) -> Any:
    """(events recorded, states) of every job in a daemon's queue database; None when unreadable."""
    if not Path(db).is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2)
        try:
            return tuple(con.execute("SELECT id, state, event_seq, attempts FROM jobs ORDER BY id").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return None


def sizes(paths: Iterable[Path]) -> tuple:
    out = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.append(sum(f.stat().st_size for f in p.rglob("*") if f.is_file()))
        else:
            out.append(p.stat().st_size if p.exists() else -1)
    return tuple(out)


class Watch:
    """Progress of one or more daemons' homes: their queue databases and log folders."""

    def __init__(self, dbs: Iterable[Path] = (), files: Iterable[Path] = (), extra: Callable[[], Any] | None = None):
        self.dbs = [Path(d) for d in dbs]
        self.files = [Path(f) for f in files]
        self.extra = extra

    @classmethod
    def home(cls, home: Path, **kw: Any) -> "Watch":
        from unimoe_audio.client.settings import load_settings

        s = load_settings(home=Path(home))
        return cls(dbs=[s.queue_db_path], files=[s.log_path], **kw)

    def signature(self) -> Any:
        return (tuple(queue_signature(d) for d in self.dbs), sizes(self.files),
                self.extra() if self.extra else None)

    def wait(self, predicate: Callable[[], Any], what: str = "condition", interval: float = 0.1,
             stall: float = STALL_S) -> Any:
        """The predicate's first truthy value; AssertionError once nothing moved for ``stall`` s."""
        last = self.signature()
        moved = time.monotonic()
        while True:
            value = predicate()
            if value:
                return value
            now = time.monotonic()
            sig = self.signature()
            if sig != last:
                last, moved = sig, now
            elif now - moved > stall:
                raise AssertionError(f"no progress for {stall:.0f} s while waiting for {what}")
            time.sleep(interval)
