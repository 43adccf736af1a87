"""Takes you can hear, see, compare and drag: the panel (offscreen, pytest-qt) against a real daemon on
the tiny model. Waveforms hold the real file's peaks; the player is QtMultimedia's (its position moves
without an audio device too)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from _gui_harness import connected_panel, generate_music, new_job, wait_done, wait_until

from PySide6.QtCore import QPoint, Qt
from PySide6.QtTest import QTest

from unimoe_audio.gui.jobs_model import group_key
from unimoe_audio.gui.store import PanelStore


@pytest.fixture()
def panel(qtbot, daemon):
    p = connected_panel(qtbot, daemon.settings)
    yield p
    p.close()


def test_waveform_holds_the_files_peaks_and_play_seek_loop_drag(panel, daemon):
    job = generate_music(panel, "soft marimba loop", seconds=1.5, seed=11, folder=daemon.home / "takes")
    row = wait_done(panel, job)
    panel.select_job(job)
    wave = panel.waveform
    wait_until(lambda: wave.peaks is not None and wave.path == row.path, 10, "the waveform of the take", panel)

    # the peaks are the real file's: extremes match, one min/max pair per bucket
    data, rate = sf.read(row.path, dtype="float32", always_2d=True)
    assert len(wave.peaks) == min(600, len(data))
    assert wave.peaks.maxs.max() == pytest.approx(float(data.max()), abs=1e-6)
    assert wave.peaks.mins.min() == pytest.approx(float(data.min()), abs=1e-6)
    assert wave.peaks.seconds == pytest.approx(len(data) / rate)
    assert not wave.partial and float(np.abs(wave.peaks.maxs).max()) > 0

    # play toggles the player (QtMultimedia where there is an audio output, else the silent playback
    # model); the playhead follows its position; Space on the list stops it
    assert panel.play_button.isEnabled()
    QTest.mouseClick(panel.play_button, Qt.MouseButton.LeftButton)
    wait_until(lambda: panel.player.is_playing(), 10, "the player to play", panel)
    assert panel.player.path == row.path and panel.play_button.text().endswith("Stop")
    wait_until(lambda: (wave.playhead or 0) > 0, 20, "the playhead to move", panel)
    panel.table.setFocus()
    QTest.keyClick(panel.table, Qt.Key.Key_Space)
    wait_until(lambda: not panel.player.is_playing(), 10, "Space to stop it", panel)
    QTest.keyClick(panel.table, Qt.Key.Key_Space)
    wait_until(lambda: panel.player.is_playing(), 10, "Space to play it again", panel)
    panel.toggle_play()
    wait_until(lambda: not panel.player.is_playing(), 10, "stop", panel)

    # click-to-seek: three quarters along the waveform
    QTest.mouseClick(wave, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     QPoint(int(4 + 0.75 * (wave.width() - 8)), wave.height() // 2))
    wait_until(lambda: abs(panel.player.fraction() - 0.75) < 0.05, 10, "the seek", panel)
    assert wave.playhead == pytest.approx(0.75, abs=0.05)
    assert wave.hasFocus()  # the click focused it: Space there plays from the seek point
    QTest.keyClick(wave, Qt.Key.Key_Space)
    wait_until(lambda: panel.player.is_playing(), 10, "Space on the waveform", panel)
    assert panel.player.fraction() >= 0.7
    panel.toggle_play()
    wait_until(lambda: not panel.player.is_playing(), 10, "stop", panel)

    # loop: from near the end it wraps to the start and keeps playing
    QTest.mouseClick(panel.loop_button, Qt.MouseButton.LeftButton)
    assert panel.player.loop()
    panel.seek(0.9)
    panel.toggle_play()
    wait_until(lambda: panel.player.is_playing() and panel.player.fraction() < 0.5, 20, "the loop to wrap", panel)
    assert panel.player.is_playing()
    panel.toggle_play()
    QTest.mouseClick(panel.loop_button, Qt.MouseButton.LeftButton)
    assert not panel.player.loop()
    # without loop it stops at the end by itself
    panel.seek(0.9)
    panel.toggle_play()
    wait_until(lambda: not panel.player.is_playing(), 20, "the end of the take", panel)

    # dragging a take (from the list or the waveform) carries the WAV as a file URL
    i = panel.jobs.row_of(job)
    mime = panel.jobs.mimeData([panel.jobs.index(i, 0)])
    assert [u.toLocalFile() for u in mime.urls()] == [row.path]
    assert mime.urls()[0].toString().startswith("file://")
    assert panel.jobs.flags(panel.jobs.index(i, 0)) & Qt.ItemFlag.ItemIsDragEnabled
    assert [u.toLocalFile() for u in wave.mime_data().urls()] == [row.path]
    # Copy path stays; Reveal opens the folder or, where no file manager answers, shows its path
    assert panel.copy_selected_path() == row.path
    opened = panel.reveal_selected()
    folder = str(daemon.home.resolve() / "takes")
    assert (f"opened {folder}" if opened else f"The file is in: {folder}") in panel.notice_label.text()


def test_partial_preview_appears_and_plays_before_done(panel, daemon):
    previews: list[tuple[str, bool, int, float]] = []
    first_play: dict[str, object] = {}

    def on_preview(job_id: str, path: str) -> None:
        row = panel.jobs.get(job_id)
        previews.append((path, row.final, len(row.peaks or []), row.peaks.seconds if row.peaks else 0.0))
        if len(previews) == 1 and panel.selected_row() is row:
            panel.toggle_play()  # a running take can be heard: what plays and shows right now
            first_play.update(path=panel.player.path, playing=panel.player.is_playing(),
                              partial=panel.waveform.partial, wave=panel.waveform.path)

    panel.preview_shown.connect(on_preview)
    job = generate_music(panel, "slow evolving pad", seconds=6.0, seed=5, folder=daemon.home / "previews")
    wait_until(lambda: panel.jobs.get(job).final, 300, "the job to finish", panel)
    row = wait_done(panel, job)
    assert previews, "no preview before done"
    assert all(not final for _, final, _, _ in previews), "previews come while the job runs"
    assert all(n > 0 for _, _, n, _ in previews)
    assert all("partial-" in p for p, _, _, _ in previews)
    secs = [s for _, _, _, s in previews]
    assert secs == sorted(secs) and secs[0] > 0
    assert first_play["partial"] is True and first_play["playing"] is True
    assert first_play["path"] == first_play["wave"] == previews[0][0]
    # after done the row shows the final file
    wait_until(lambda: panel.waveform.path == row.path, 10, "the final waveform", panel)
    assert not panel.waveform.partial
    panel.player.stop()


def test_takes_grouped_regenerated_compared_and_kept(panel, daemon):
    first = generate_music(panel, "brass fanfare", seconds=3.0, seed=21, folder=daemon.home / "group")
    a = wait_done(panel, first)
    assert a.seed == 21 and a.take == 1
    panel.select_job(first)
    assert panel.same_seed_button.isEnabled() and panel.new_seed_button.isEnabled()

    before = {r.job_id for r in panel.jobs.rows()}
    QTest.mouseClick(panel.same_seed_button, Qt.MouseButton.LeftButton)
    b = wait_done(panel, new_job(panel, before))
    before = {r.job_id for r in panel.jobs.rows()}
    panel.select_job(first)
    QTest.mouseClick(panel.new_seed_button, Qt.MouseButton.LeftButton)
    c = wait_done(panel, new_job(panel, before))

    # one group, numbered takes listed together under the request
    assert a.group == b.group == c.group and [a.take, b.take, c.take] == [1, 2, 3]
    rows = panel.jobs.rows()
    i = rows.index(a)
    assert rows[i + 1] is b and rows[i + 2] is c
    assert panel.jobs.data(panel.jobs.index(i + 1, 7)) == "#2"
    # same seed: the same audio; new seed: another seed and other audio
    assert b.seed == 21 and c.seed != 21
    audio = {r.take: sf.read(r.path, dtype="float32")[0] for r in (a, b, c)}
    assert np.array_equal(audio[1], audio[2])
    assert not np.array_equal(audio[1], audio[3])

    # A/B: play take 1, go to take 3, A/B returns to take 1 at the same position, still playing (looped,
    # so a slow machine cannot reach the end of these short takes meanwhile)
    panel.loop_button.setChecked(True)
    panel.select_job(a.job_id)
    panel.toggle_play()
    wait_until(lambda: panel.player.fraction() > 0.05, 20, "take 1 to play", panel)
    panel.select_job(c.job_id)
    assert panel.ab_button.isEnabled() and panel.ab_target() is a
    wait_until(lambda: panel.player.path == c.path and panel.player.position_ms() > 300, 20, "take 3 to play", panel)
    pos = panel.player.position_ms()
    QTest.mouseClick(panel.ab_button, Qt.MouseButton.LeftButton)
    assert panel.selected_row() is a and panel.player.path == a.path
    wait_until(lambda: abs(panel.player.position_ms() - pos) < 400, 2, "A/B to keep the position", panel)
    assert panel.player.is_playing()
    panel.player.stop()
    panel.loop_button.setChecked(False)

    # keep marks: shown, persisted, and kept takes survive Clear finished
    panel.select_job(b.job_id)
    QTest.mouseClick(panel.keep_button, Qt.MouseButton.LeftButton)
    assert b.kept and panel.jobs.data(panel.jobs.index(panel.jobs.row_of(b.job_id), 7)).startswith("★")
    assert PanelStore.for_settings(daemon.settings).is_kept(b.job_id)
    QTest.mouseClick(panel.clear_button, Qt.MouseButton.LeftButton)
    assert panel.jobs.get(b.job_id) is b and panel.jobs.get(a.job_id) is None


def test_history_presets_and_earlier_jobs_come_back(qtbot, panel, daemon):
    job = generate_music(panel, "rainy lo-fi beat", seconds=1.0, seed=3)
    wait_done(panel, job)
    panel.music.tempo.setValue(84)
    panel.music.key.setCurrentText("A minor")
    panel.save_preset("lofi 84")
    kept = panel.jobs.rows()[0].job_id
    panel.select_job(kept)
    panel.set_kept(True)
    panel.close()

    # a new panel (a new session): history, presets and keep marks from disk, the takes from the daemon
    again = connected_panel(qtbot, daemon.settings)
    assert again.store.history("music")[0] == "rainy lo-fi beat"
    again.history_button.menu().aboutToShow.emit()
    assert any(a.text() == "rainy lo-fi beat" for a in again.history_button.menu().actions())
    again.music.caption.setPlainText("")
    again.history_button.menu().actions()[0].trigger()
    assert again.music.caption.toPlainText() == "rainy lo-fi beat"
    again.music.tempo.setValue(0)
    assert again.apply_preset("lofi 84")
    assert again.music.tempo.value() == 84 and again.music.key.currentText() == "A minor"
    assert again.music.caption.toPlainText() == "rainy lo-fi beat"

    earlier = again.jobs.get(job)
    assert earlier is not None and earlier.state == "done" and earlier.kind == "music"
    assert earlier.description == "rainy lo-fi beat" and earlier.seed == 3
    # the stored request groups with the same request filled in on the form today
    again.music.set_fields({"caption": "rainy lo-fi beat", "seconds": 1.0, "seed": 9})
    again.output.set_fields({})
    assert group_key("music", again.request_fields("music")) == earlier.group
    assert again.jobs.get(kept).kept
    wait_until(lambda: earlier.peaks is not None, 30, "the earlier take's waveform", again)
    again.select_job(job)
    assert again.waveform.path == earlier.path and again.same_seed_button.isEnabled()
    before = {r.job_id for r in again.jobs.rows()}
    assert again.regenerate(same_seed=True)
    redo = wait_done(again, new_job(again, before))
    assert redo.group == earlier.group and redo.seed == 3
    again.close()
