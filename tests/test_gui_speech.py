"""Speech on the panel: drop a reference recording on the form, save it as a voice through the daemon, then
speak with it (real espeak-ng recording, real daemon on the tiny model, Qt offscreen)."""
from __future__ import annotations

import subprocess
import sys

from _client_harness import make_reference_speech
from _content import check_audio, check_peaks
from _gui_harness import connected_panel, new_job, wait_done, wait_until

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QApplication


def drop_on(widget, mime: QMimeData) -> bool:
    """Deliver a real drag-enter and drop of ``mime`` to ``widget`` (what a file manager's drag does)."""
    pos = QPointF(widget.width() / 2, widget.height() / 2)
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    try:  # Qt 6.12 takes a QPointF (the QPoint form is deprecated there); 6.11 only a QPoint
        enter = QDragEnterEvent(pos, *args)
    except TypeError:
        enter = QDragEnterEvent(pos.toPoint(), *args)
    QApplication.sendEvent(widget, enter)
    if not enter.isAccepted():
        return False
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, drop)
    return drop.isAccepted()


def test_drop_a_reference_save_it_as_a_voice_and_speak_with_it(qtbot, daemon):
    ref = make_reference_speech(daemon.home / "narrator.wav", "Good evening, and welcome back.")
    panel = connected_panel(qtbot, daemon.settings)
    panel.tabs.setCurrentWidget(panel.speech)
    form = panel.speech

    text_only = QMimeData()
    text_only.setText("not a file")
    assert not drop_on(form, text_only)
    not_audio = QMimeData()
    not_audio.setUrls([QUrl.fromLocalFile(str(daemon.home / "notes.txt"))])
    assert not drop_on(form, not_audio)
    assert form.reference.text() == ""

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(ref))])
    assert drop_on(form, mime)
    assert form.reference.text() == str(ref)
    assert not form.save_voice_button.isEnabled(), "a voice needs its transcript too"
    form.transcript.setText("Good evening, and welcome back.")
    assert form.save_voice_button.isEnabled()

    panel.save_voice("narrator", form.reference.text(), form.transcript.text())
    wait_until(lambda: form.voice.findData("narrator") >= 0, 300, "the saved voice in the list", panel)
    assert "voice 'narrator' saved" in panel.notice_label.text()
    form.voice.setCurrentIndex(form.voice.findData("narrator"))
    form.text.setPlainText("Hello.")
    form.seconds.setValue(1.0)
    assert panel.request_fields()["voice"] == "narrator" and "reference_audio" not in panel.request_fields()

    before = {r.job_id for r in panel.jobs.rows()}
    panel.generate()
    row = wait_done(panel, new_job(panel, before))
    assert row.kind == "speech"
    check_audio(row.path, seconds=row.seconds)
    check_peaks(row.peaks, row.path, row.seconds)

    # a voice name that exists is refused with the reason, under the form
    panel.save_voice("narrator", str(ref), "Good evening, and welcome back.")
    wait_until(lambda: panel.error_label.isVisible(), 60, "the error", panel)
    assert "already exists" in panel.error_label.text()
    panel.close()


def test_void_qt_calls_do_not_wear_out_none():
    """PySide6 6.12.0 drops a reference to None per void call (fatal on Python < 3.12); importing the panel
    guards against it. 300 000 calls is well past None's own reference count."""
    code = ("import os; os.environ['QT_QPA_PLATFORM'] = 'offscreen'\n"
            "import unimoe_audio.gui.panel\n"
            "from PySide6.QtWidgets import QApplication, QLabel\n"
            "app = QApplication([]); label = QLabel()\n"
            "for _ in range(300000): label.setText('x')\n"
            "print('ok')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
