"""The panel's Continue this take / Extend to... / Make loop, on a take and on a dropped file (offscreen,
pytest-qt) against a real daemon on the tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from _gui_harness import connected_panel, generate_music, new_job, wait_done

from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from test_music_continue import music_clip


@pytest.fixture()
def panel(qtbot, daemon):
    p = connected_panel(qtbot, daemon.settings)
    yield p
    p.close()


def test_continue_extend_and_loop_a_take(panel, daemon):
    assert not panel.continue_button.isEnabled()  # nothing to continue yet
    take = generate_music(panel, "warm strings", seconds=1.5, seed=3, folder=daemon.home / "takes")
    row = wait_done(panel, take, timeout=900)
    panel.select_job(take)
    assert panel.continue_button.isEnabled() and panel.extend_button.isEnabled()
    assert [a.text() for a in panel.continue_menu().actions()] == ["Continue this take…", "Extend to…", "Make loop…"]
    original = sf.read(row.path, dtype="int32", always_2d=True)[0]

    before = {r.job_id for r in panel.jobs.rows()}
    assert panel.continue_take(1.0)
    cont = wait_done(panel, new_job(panel, before), timeout=900)
    assert cont.fields["continue_audio"] == row.path and cont.fields["caption"] == "warm strings"
    out = sf.read(cont.path, dtype="int32", always_2d=True)[0]
    assert out.shape[0] == original.shape[0] + 48000
    np.testing.assert_array_equal(out[:original.shape[0]], original)  # the take itself, untouched

    panel.select_job(take)
    before = {r.job_id for r in panel.jobs.rows()}
    assert panel.extend_to(3.0)
    ext = wait_done(panel, new_job(panel, before), timeout=900)
    assert sf.info(ext.path).frames == 3 * 48000

    panel.select_job(take)
    before = {r.job_id for r in panel.jobs.rows()}
    assert panel.make_loop(bars=2, tempo_bpm=200.0)  # bars of 1.2 s: the 1.5 s take joins at its first bar line
    loop = wait_done(panel, new_job(panel, before), timeout=900)
    assert sf.info(loop.path).frames == int(2.4 * 48000) and loop.fields["loop"] is True


def test_a_dropped_file_is_continued(panel, daemon):
    clip = daemon.home / "dropped.wav"
    music_clip(clip, 1.5, 44100, 1, "PCM_16")
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(clip))])
    ev = QDropEvent(QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    panel.dropEvent(ev)
    assert panel.dropped_file == str(clip) and panel.continue_button.isEnabled()
    assert "dropped.wav" in panel.notice_label.text()
    before = {r.job_id for r in panel.jobs.rows()}
    panel.music.caption.setPlainText("bright synth arp")
    assert panel.continue_take(0.5)
    row = wait_done(panel, new_job(panel, before), timeout=900)
    assert row.fields["continue_audio"] == str(clip) and row.fields["caption"] == "bright synth arp"
    assert sf.info(row.path).frames == int(2.0 * 48000)
    # a file that is not audio is not taken
    (daemon.home / "notes.txt").write_text("x")
    assert not panel.accept_drop([str(daemon.home / "notes.txt")])
