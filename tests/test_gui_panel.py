"""The panel with real widgets (offscreen) against a real daemon on the tiny model: no mocks."""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _content import check_audio  # noqa: E402
from _gui_harness import WAIT, wait_until  # noqa: E402

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QGuiApplication, QImage  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import QApplication  # noqa: E402

from unimoe_audio.gui.panel import Panel  # noqa: E402


@pytest.fixture(scope="module")
def qapp():
    return QApplication.instance() or QApplication(["test"])


@pytest.fixture()
def panel(qapp, daemon):
    p = Panel(daemon.settings, auto_start=False, status_interval_ms=300)
    p.resize(640, 780)
    p.show()
    wait_until(lambda: p.generate_button.isEnabled(), 30, "the panel to connect", p)
    yield p
    p.close()


def test_status_line_shows_daemon_and_tiny_warning(panel):
    wait_until(lambda: panel.status is not None, 10, "a status")
    text = panel.status_label.text()
    assert "Daemon:" in text and "tiny" in text and "queue" in text
    assert "cpu" in text  # the device (from settings until the model loads, then the daemon's)
    assert panel.tiny_warning.isVisible()
    assert "noise" in panel.tiny_warning.text()


def test_generate_music_until_done(panel, daemon, tmp_path):
    out = daemon.home / "gui-out"
    panel.tabs.setCurrentWidget(panel.music)
    QTest.keyClicks(panel.music.caption, "calm piano, slow")
    panel.music.seconds.setValue(1.0)
    panel.music.seed.setValue(7)
    panel.output.folder.setText(str(out))
    panel.output.rate.setCurrentIndex(panel.output.rate.findData(48000))
    panel.output.channels.setCurrentIndex(panel.output.channels.findData(1))
    assert panel.request_fields() == {"caption": "calm piano, slow", "seconds": 1.0, "seed": 7, "folder": str(out),
                                      "sample_rate": 48000, "channels": 1}
    QTest.mouseClick(panel.generate_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: panel.jobs.rowCount() == 1, 30, "the job row", panel)
    row = panel.jobs.rows()[0]
    assert row.task == "music" and row.description == "calm piano, slow"
    seen_states: set[str] = set()

    def finished():
        r = panel.jobs.get(row.job_id)
        seen_states.add(r.state)
        return r.final

    wait_until(finished, WAIT, "the job to finish", panel)
    r = panel.jobs.get(row.job_id)
    assert r.state == "done", r
    assert r.fraction == 1.0
    p = Path(r.path)
    assert p.parent == out.resolve()
    assert abs(r.seconds - 1.0) < 1e-3
    check_audio(p, seconds=1.0)
    # reveal / copy path act on the selected row
    panel.select_job(row.job_id)
    assert panel.reveal_button.isEnabled() and panel.copy_button.isEnabled()
    assert not panel.cancel_button.isEnabled()
    assert panel.copy_selected_path() == str(p)
    assert QGuiApplication.clipboard().text() == str(p)
    assert panel.jobs.data(panel.jobs.index(0, 6)) == p.name
    if os.environ.get("UNIMOE_GUI_SCREENSHOT"):  # a scratch PNG to look at (not part of the repo)
        panel.grab().save(os.environ["UNIMOE_GUI_SCREENSHOT"])


def test_cancel_running_job_from_panel(panel, daemon):
    panel.tabs.setCurrentWidget(panel.music)
    panel.music.caption.setPlainText("a very long ambient drone")
    panel.music.seconds.setValue(600.0)
    panel.output.folder.setText(str(daemon.home / "gui-cancel"))
    panel.generate()
    wait_until(lambda: panel.jobs.rowCount() >= 1 and panel.jobs.rows()[0].description.startswith("a very long"),
               30, "the job row", panel)
    job_id = panel.jobs.rows()[0].job_id
    panel.select_job(job_id)
    wait_until(lambda: panel.cancel_button.isEnabled(), 5, "cancel enabled", panel)
    QTest.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: panel.jobs.get(job_id).final, 60, "the job to end", panel)
    r = panel.jobs.get(job_id)
    assert r.state == "cancelled", r
    assert not r.path
    assert not list((daemon.home / "gui-cancel").glob("*.wav"))


def test_bad_input_shows_field_error(panel, daemon):
    panel.tabs.setCurrentWidget(panel.score)
    missing = daemon.home / "no-such-clip.mp4"
    panel.score.video.setText(str(missing))
    panel.score.caption.setText("tense")
    panel.output.folder.setText("")
    before = panel.jobs.rowCount()
    panel.generate()
    wait_until(lambda: panel.error_label.isVisible(), 30, "the error", panel)
    text = panel.error_label.text()
    assert "video" in text and "not_found" in text, text
    assert panel.score.video.styleSheet(), "the offending field is outlined"
    assert panel.jobs.rowCount() == before

    # a rejected output folder names the output field
    panel.tabs.setCurrentWidget(panel.music)
    panel.music.caption.setPlainText("x")
    panel.music.seconds.setValue(1.0)
    panel.output.folder.setText("/proc/not-allowed")
    panel.generate()
    wait_until(lambda: "folder" in panel.error_label.text(), 30, "the folder error", panel)
    assert "path_not_allowed" in panel.error_label.text()
    assert panel.output.folder.styleSheet()
    assert not panel.score.video.styleSheet(), "the previous outline is cleared"
    panel.output.folder.setText("")


def test_bars_without_tempo_is_refused_on_the_form(panel):
    panel.tabs.setCurrentWidget(panel.music)
    panel.music.caption.setPlainText("x")
    panel.music.by_bars.setChecked(True)
    panel.music.tempo.setValue(0)
    before = panel.jobs.rowCount()
    panel.generate()
    assert panel.error_label.isVisible() and "tempo_bpm" in panel.error_label.text()
    assert panel.music.tempo.styleSheet()
    panel.music.tempo.setValue(96)
    assert panel.request_fields()["tempo_bpm"] == 96.0 and panel.request_fields()["bars"] == 4
    assert "seconds" not in panel.request_fields()
    QTest.qWait(200)
    assert panel.jobs.rowCount() == before


def test_screenshot(panel, tmp_path):
    """The panel renders (grab) at its size with the job list and status; the PNG is a scratch file."""
    panel.music.caption.setPlainText("warm strings")
    QTest.qWait(100)
    shot = tmp_path / "panel.png"
    pixmap = panel.grab()
    assert pixmap.save(str(shot))
    # the PNG holds the whole panel at its size, and a drawn one (not one flat colour)
    img = QImage(str(shot))
    dpr = pixmap.devicePixelRatio()
    assert (img.width(), img.height()) == (round(panel.width() * dpr), round(panel.height() * dpr))
    colours = {img.pixel(x, y) for x in range(0, img.width(), 5) for y in range(0, img.height(), 5)}
    assert len(colours) > 8, len(colours)
