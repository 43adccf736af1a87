"""Progress bars for the command line (rich, on stderr). The Python client itself never draws anything."""
from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class JobBars:
    """One bar per job, keyed by job id. Disabled (a no-op) when ``enabled`` is false or stderr is no TTY
    and ``force`` is not set, so scripts and ``--json`` callers get clean stderr."""

    def __init__(self, enabled: bool = True, console: Console | None = None, force: bool = False):
        self.console = console or stderr_console()
        self.enabled = enabled and (force or sys.stderr.isatty())
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> "JobBars":
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[label]}"),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%"),
                TextColumn("{task.fields[stage]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def add(self, job_id: str, label: str) -> None:
        if self._progress is not None and job_id not in self._tasks:
            self._tasks[job_id] = self._progress.add_task("", total=1000, label=label, stage="queued")

    def update(self, job_id: str, fraction: float | None = None, stage: str | None = None) -> None:
        if self._progress is None:
            return
        if job_id not in self._tasks:
            self.add(job_id, job_id[:8])
        kw: dict[str, Any] = {}
        if fraction is not None:
            kw["completed"] = max(0.0, min(1.0, float(fraction))) * 1000
        if stage is not None:
            kw["stage"] = stage
        self._progress.update(self._tasks[job_id], **kw)

    def log(self, message: str) -> None:
        """Print a line above the bars (or plainly to stderr when bars are off)."""
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, file=sys.stderr, flush=True)
