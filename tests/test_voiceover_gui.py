"""The panel's Script tab offscreen against a real daemon on the tiny model: open a subtitle file, see its
cues, pick voices, voice them all, audition one (the panel's player loads its file), regenerate one (a new
take of that cue only), and refuse a bad file with its name."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _content import check_audio
from _daemon_harness import start_with_voice
from _gui_harness import connected_panel, wait_until

pytestmark = pytest.mark.timeout(2400)
FIX = Path(__file__).resolve().parent / "fixtures" / "voiceover"
WAIT = 900.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_with_voice(tmp_path_factory.mktemp("gui-script-home"))
    yield d
    d.close()


def test_script_tab_voices_auditions_and_regenerates(qtbot, daemon):
    panel = connected_panel(qtbot, daemon.settings)
    tab = panel.script_tab
    panel.tabs.setCurrentWidget(tab)
    assert panel.tabs.tabText(panel.tabs.currentIndex()) == "Script"
    wait_until(lambda: tab.voice.findText("narrator") >= 0, 60, "the saved voices in the Script tab", panel)

    work = daemon.home / "work"
    work.mkdir()
    (work / "bad.srt").write_bytes(b"\xff\xfe\x00 not text")
    assert not tab.open_script(work / "bad.srt") and "bad.srt" in tab.notes.text()
    shutil.copy(FIX / "scene.srt", work / "scene.srt")
    assert tab.open_script(work / "scene.srt")
    assert tab.table.rowCount() == 3 and "skipped (empty): 3" in tab.notes.text()
    assert [tab.table.item(r, 4).text() for r in range(3)] == ["It was a quiet night.", "Then the phone rang.",
                                                             "Hello? Who is this?"]
    assert tab.output_path() == str(work / "scene-voiceover.wav")
    assert not tab.regenerate_button.isEnabled() and not tab.audition_button.isEnabled()

    tab.voice.setCurrentText("narrator")
    tab.voice_map.setText("ALICE=narrator")
    with qtbot.waitSignal(tab.run_finished, timeout=int(WAIT * 1000)) as first:
        assert tab.voice_all()
        assert tab.cancel_button.isEnabled() and not tab.voice_all_button.isEnabled()
    rep = first.args[0]
    assert rep is not None and rep.state == "done", tab.notes.text()
    assert [tab.table.item(r, 5).text() for r in range(3)] == ["done"] * 3
    assert tab.progress.value() == 1000
    check_audio(rep.output, seconds=6.6, sample_rate=48000)  # the stem runs to the last cue's end (6.6 s)
    assert "3/3 cues" in tab.notes.text()

    tab.table.selectRow(1)  # cue 2
    assert tab.selected_cues() == [2] and tab.audition_button.isEnabled() and tab.regenerate_button.isEnabled()
    played = tab.audition()
    assert played == rep.cue(2).file and panel.player.path == played and panel.player.is_playing()

    before = {c.index: (c.seed, c.job_id) for c in rep.cues}
    with qtbot.waitSignal(tab.run_finished, timeout=int(WAIT * 1000)) as second:
        assert tab.regenerate()
    rep2 = second.args[0]
    assert rep2 is not None and rep2.state == "done"
    after = {c.index: (c.seed, c.job_id) for c in rep2.cues}
    assert after[1] == before[1] and after[4] == before[4] and after[2] != before[2]
