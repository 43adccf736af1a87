"""No dead ends: the panel without a daemon, across a daemon restart, and with a make-tiny model served by
path (real daemons on the tiny model, Qt offscreen through pytest-qt)."""
from __future__ import annotations

import subprocess
import sys

from _content import check_audio, check_peaks
from _daemon_harness import DaemonProc, daemon_env
from _gui_harness import connected_panel, generate_music, open_panel, wait_done, wait_until

from PySide6.QtCore import Qt
from PySide6.QtTest import QTest

from unimoe_audio.gui.app import XCB_CURSOR_HELP, xcb_problem


def settings_for(home):
    """Settings of an empty home (no daemon), resolved like DaemonProc does."""
    return DaemonProc(home).settings


def test_generate_without_a_daemon_says_why(qtbot, tmp_path):
    panel = open_panel(qtbot, settings_for(tmp_path / "nobody-home"))
    wait_until(lambda: panel.offline_label.isVisible(), 60, "the offline reason", panel)
    assert not panel.generate_button.isEnabled()
    assert "no daemon" in panel.offline_label.text() and "unimoe-audio serve" in panel.offline_label.text()
    assert panel.connect_button.isVisible()
    assert "No daemon" in panel.status_label.text()
    # a click that cannot be sent (Ctrl+Return here: the button itself is disabled) shows the error
    panel.music.caption.setPlainText("anything")
    panel.music.caption.setFocus()
    QTest.keyClick(panel.music.caption, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    assert panel.error_label.isVisible()
    assert "Not sent: no daemon is connected" in panel.error_label.text()
    assert panel.jobs.rowCount() == 0
    panel.close()


def test_reconnects_by_itself_to_a_new_daemon_and_a_job_completes(qtbot, tmp_path):
    home = tmp_path / "restart-home"
    home.mkdir()
    first = DaemonProc(home).start()
    try:
        panel = connected_panel(qtbot, first.settings)
        assert panel.backend.client.pid == first.proc.pid
        first.terminate()
        wait_until(lambda: not panel.online, 60, "the panel to notice the daemon left", panel)
        assert not panel.generate_button.isEnabled() and panel.offline_label.isVisible()
        assert "not answering" in panel.status_label.text() or "No daemon" in panel.status_label.text()
        panel.generate()
        assert "Not sent" in panel.error_label.text()

        second = DaemonProc(home).start()
        try:
            # no click: the quiet retries find the new daemon (new pid, new ports, new keys)
            wait_until(lambda: panel.online, 60, "the panel to reconnect", panel)
            assert panel.backend.client.pid == second.proc.pid != first.proc.pid
            assert panel.generate_button.isEnabled() and not panel.offline_label.isVisible()
            row = wait_done(panel, generate_music(panel, "after the restart", seconds=1.0, seed=4))
            check_audio(row.path, seconds=1.0)
            check_peaks(row.peaks, row.path, 1.0)
            # Connect makes a fresh client too (the button is there whenever the daemon is not)
            old = panel.backend.client
            panel.connect_daemon()
            wait_until(lambda: panel.backend.client is not None and panel.backend.client is not old, 60,
                       "a fresh client", panel)
            panel.close()
        finally:
            second.close()
    finally:
        first.close()


def test_a_make_tiny_model_served_by_path_shows_the_banner(qtbot, tmp_path):
    home = tmp_path / "tiny-home"
    home.mkdir()
    model_dir = tmp_path / "my-tiny"
    env = daemon_env(home)
    subprocess.run([sys.executable, "-m", "unimoe_audio.client", "models", "make-tiny", str(model_dir)], env=env,
                   check=True, capture_output=True, timeout=600)
    d = DaemonProc(home, model=str(model_dir)).start()
    try:
        panel = connected_panel(qtbot, d.settings)
        wait_until(lambda: panel.status is not None, 30, "a status", panel)
        assert panel.status.tiny is True and "unimoe_audio_tiny" in (panel.status.tiny_reason or "")
        assert panel.tiny_warning.isVisible() and "noise" in panel.tiny_warning.text()
        assert "my-tiny" in panel.status_label.text()
        panel.close()
    finally:
        d.close()


def test_x11_without_libxcb_cursor_gets_a_clear_message():
    def none(_name):
        return None

    x11 = {"DISPLAY": ":0"}
    assert xcb_problem(x11, "linux", none) == XCB_CURSOR_HELP
    assert "libxcb-cursor0" in XCB_CURSOR_HELP
    assert xcb_problem({**x11, "QT_QPA_PLATFORM": "xcb"}, "linux", none) == XCB_CURSOR_HELP
    assert xcb_problem({**x11, "QT_QPA_PLATFORM": "offscreen"}, "linux", none) is None
    assert xcb_problem({**x11, "WAYLAND_DISPLAY": "wayland-0"}, "linux", none) is None
    assert xcb_problem(x11, "darwin", none) is None
    assert xcb_problem(x11, "linux", lambda n: "libxcb-cursor.so.0") is None
    # and on this machine (Debian with libxcb-cursor0 installed) the real lookup finds it
    assert xcb_problem(x11, "linux") is None


def test_the_panel_app_refuses_x11_without_the_library_with_that_message(tmp_path):
    """The app checks before Qt would abort. This machine has the library, so the child hides it from the
    library lookup (the one thing it cannot uninstall) and runs the real entry point."""
    code = ("import ctypes.util, sys; ctypes.util.find_library = lambda n: None; "
            "from unimoe_audio.gui import app; sys.exit(app.main(['--no-start']))")
    env = {"PATH": "/usr/bin:/bin", "DISPLAY": ":99", "QT_QPA_PLATFORM": "xcb", "HOME": str(tmp_path),
           "UNIMOE_AUDIO_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r
    assert "libxcb-cursor0" in r.stderr


def test_the_panel_never_imports_the_model_or_the_daemon():
    code = ("import sys, unimoe_audio.gui.panel, unimoe_audio.gui.app\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('unimoe_audio.model', 'unimoe_audio.daemon', 'torch')))\n"
            "print(bad)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_the_selected_rows_progress_bar_is_readable(qtbot):
    """The bar's text is dark on a light fill on a selected (highlighted) row, where the platform style
    drew highlighted text on the highlight colour."""
    from PySide6.QtGui import QColor, QImage, QPainter
    from PySide6.QtWidgets import QStyle, QStyleOptionViewItem

    from unimoe_audio.gui.jobs_model import COL_PROGRESS, JobRow, JobsModel
    from unimoe_audio.gui.widgets import ProgressDelegate

    model = JobsModel()
    model.add(JobRow(job_id="j1", task="music", state="running", fraction=0.42))
    img = QImage(120, 26, QImage.Format.Format_RGB32)
    img.fill(QColor("#000080"))
    opt = QStyleOptionViewItem()
    opt.rect = img.rect()
    opt.state = QStyle.StateFlag.State_Selected | QStyle.StateFlag.State_Enabled
    opt.palette.setColor(opt.palette.ColorRole.Highlight, QColor("#000080"))
    painter = QPainter(img)
    ProgressDelegate().paint(painter, opt, model.index(0, COL_PROGRESS))
    painter.end()
    # the middle band of the bar (where the "42 %" text sits): light background, dark text
    lum = [QColor(img.pixel(x, y)).lightness() for x in range(20, 100) for y in range(8, 18)]
    light = sum(1 for v in lum if v > 180)
    dark = sum(1 for v in lum if v < 90)
    assert light > len(lum) * 0.5, "the bar is light under the text"
    assert dark > 10, "the text is dark"
