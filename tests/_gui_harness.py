"""Helpers of the panel tests: Qt offscreen, a real daemon on the tiny model, waits on the panel's state."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from PySide6.QtTest import QTest  # noqa: E402

WAIT = 180.0


def wait_until(pred: Callable[[], Any], timeout: float, what: str, panel: Any = None) -> Any:
    """Wait on the panel's own state (a row's state, a widget), pumping Qt events; fail with context."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        QTest.qWait(50)
    extra = ""
    if panel is not None:
        extra = ("\nrows: " + repr([(r.job_id, r.state, r.stage, r.path) for r in panel.jobs.rows()]) +
                 "\nstatus: " + panel.status_label.text() + "\nerror: " + panel.error_label.text() +
                 "\noffline: " + panel.offline_label.text())
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")


def open_panel(qtbot: Any, settings: Any, **kw: Any) -> Any:
    from unimoe_audio.gui.panel import Panel

    p = Panel(settings, auto_start=False, status_interval_ms=300, **kw)
    qtbot.addWidget(p)
    p.resize(700, 880)
    p.show()
    return p


def connected_panel(qtbot: Any, settings: Any) -> Any:
    p = open_panel(qtbot, settings)
    wait_until(lambda: p.online and p.generate_button.isEnabled(), 60, "the panel to connect", p)
    return p


def generate_music(panel: Any, caption: str, seconds: float = 1.0, seed: int = -1, folder: Path | None = None) -> str:
    """Fill the Music tab, press Generate, return the new take's job id once its row is listed."""
    before = {r.job_id for r in panel.jobs.rows()}
    panel.tabs.setCurrentWidget(panel.music)
    panel.music.by_seconds.setChecked(True)
    panel.music.caption.setPlainText(caption)
    panel.music.seconds.setValue(seconds)
    panel.music.seed.setValue(seed)
    panel.output.folder.setText(str(folder) if folder else "")
    panel.generate()
    return new_job(panel, before)


def new_job(panel: Any, before: set[str]) -> str:
    ids = wait_until(lambda: [r.job_id for r in panel.jobs.rows() if r.job_id not in before], 60, "a new row", panel)
    return ids[0]


def wait_done(panel: Any, job_id: str, timeout: float = WAIT) -> Any:
    wait_until(lambda: panel.jobs.get(job_id) is not None and panel.jobs.get(job_id).final, timeout,
               f"job {job_id} to finish", panel)
    row = panel.jobs.get(job_id)
    assert row.state == "done", row
    return row
