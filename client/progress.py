"""Progress bars for the command line (rich, on stderr). The Python client itself never draws anything."""
from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


class JobBars:
    """One bar per job, keyed by job id, on a terminal (or with ``force``). When stderr is no terminal
    (a log, a CI run, a pipe) it prints plain lines instead, one per job each time it passes a further
    10%, so a long render is visibly alive there too. Nothing at all when ``enabled`` is false
    (``--quiet``, ``--progress never``, ``--json``)."""

    STEP = 0.1

    def __init__(self, enabled: bool = True, console: Console | None = None, force: bool = False):
        self.console = console or stderr_console()
        tty = force or sys.stderr.isatty()
        self.enabled = enabled and tty
        self.lines = enabled and not tty
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._labels: dict[str, str] = {}
        self._printed: dict[str, int] = {}  # job id -> last 10% step printed

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
        self._labels.setdefault(job_id, label)
        if self._progress is not None and job_id not in self._tasks:
            self._tasks[job_id] = self._progress.add_task("", total=1000, label=label, stage="queued")

    def update(self, job_id: str, fraction: float | None = None, stage: str | None = None) -> None:
        if self.lines:
            self._line(job_id, fraction, stage)
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

    def _line(self, job_id: str, fraction: float | None, stage: str | None) -> None:
        if fraction is None:
            return
        step = int(max(0.0, min(1.0, float(fraction))) / self.STEP + 1e-9)
        if step <= self._printed.get(job_id, 0):
            return
        self._printed[job_id] = step
        label = self._labels.get(job_id, job_id[:8])
        print(f"unimoe-audio: {label}: {step * 10}%" + (f" ({stage})" if stage else ""), file=sys.stderr, flush=True)

    def log(self, message: str) -> None:
        """Print a line above the bars (or plainly to stderr when bars are off)."""
        if self._progress is not None:
            self._progress.console.print(message)
        else:
            print(message, file=sys.stderr, flush=True)
