"""The REAPER script run the way REAPER runs it: the file executed as ``__main__`` with the ``RPR_*``
functions in its globals, its ``RPR_defer`` strings evaluated by the host's loop at REAPER's defer rate,
opaque handle strings (tests/_reaper_host.py), against a real daemon on the tiny model."""
from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reaper_host import FakeReaper  # noqa: E402

from unimoe_audio.integrations import reaper_unimoe as rs  # noqa: E402
from unimoe_audio.integrations.timeline import wav_frames  # noqa: E402

SCRIPT = Path(rs.__file__)


@pytest.fixture(scope="module")
def daemon(voice_daemon):
    return voice_daemon


@pytest.fixture
def as_daemon_user(daemon, use_daemon_env):
    """The script finds the daemon as a user's REAPER would: through the environment's settings."""
    use_daemon_env(daemon.env, alone=True)
    return daemon


def test_tempo_at_the_selection_start():
    host = FakeReaper(tempo_map=((0.0, 120.0), (4.0, 90.0), (8.0, 140.0)))
    assert rs.project_tempo(rs.Api(host), 5.0) == 90.0
    assert rs.project_tempo(rs.Api(host), 8.0) == 140.0
    # older REAPER: no TimeMap2_GetDividedBpmAtTime, the time signature call's tempo
    only_sig = {"RPR_TimeMap_GetTimeSigAtTime": host.RPR_TimeMap_GetTimeSigAtTime}
    assert rs.project_tempo(rs.Api(only_sig), 4.5) == 90.0
    assert rs.project_tempo(rs.Api({"RPR_Master_GetTempo": lambda: 100.0}), 9.0) == 100.0


def test_music_fills_the_selection_on_its_own_track(as_daemon_user, tmp_path):
    daemon = as_daemon_user
    media = daemon.home / "song" / "Media"
    host = FakeReaper(selection=(5.0, 6.5), srate=44100.0, tempo_map=((0.0, 120.0), (4.0, 90.0)),
                      media_folder=str(media), answers="music,soft marimba, warm,")
    host.RPR_InsertTrackAtIndex(0, True)  # the user's own track: the item must not land there
    users_track = host.tracks[0]
    ns = host.run_script(SCRIPT)
    s = ns["_SESSION"]
    assert s.state == "running", host.console
    assert s.plan.fields["tempo_bpm"] == 90.0  # the tempo at 5 s, not the project's first tempo
    assert host.deferred == ["unimoe_poll()"]

    t0 = time.monotonic()
    host.run_deferred(timeout=300)
    elapsed = time.monotonic() - t0
    assert s.state == "inserted", "".join(host.console)

    track, item = s.inserted
    assert host.tracks == [users_track, track] and host.track(users_track).items == []
    assert host.track(track).name == "music: soft marimba, warm"
    it = host.item(item)
    assert host.track(track).items == [item] and it.track == track
    assert (it.position, it.length) == (5.0, 1.5)
    (take,) = it.takes
    src = host.take(take).source
    assert Path(src).parent == media.resolve() and src == s.path
    assert wav_frames(src)[:2] == (66150, 44100)  # 1.5 s at the project's 44.1 kHz, sample exact
    assert host.undo == [f"unimoe-audio: insert {Path(src).name}"] and host.undo_depth == 0
    assert host.cursor == 7.5  # the edit cursor is neither used nor moved

    # REAPER's UI thread: the job is looked at once per POLL_EVERY_S (not per defer), and looking costs
    # no request to the daemon except one short resync after a long silence.
    assert s.ticks >= s.polls and s.polls <= elapsed / rs.POLL_EVERY_S + 2
    assert s.job.watch.requests <= 1 + elapsed / s.job.watch.resync_s + 1
    # throttled console: at most one line per stage and 10 % step
    progress = [re.match(r"unimoe-audio: (\S+) (\d+) %", line) for line in host.console]
    steps = [(m.group(1), int(m.group(2)) // 10) for m in progress if m]
    assert len(steps) == len(set(steps)) and len(host.console) == s.lines


def test_speech_outside_the_allowed_roots_is_copied_into_the_project(as_daemon_user, tmp_path):
    media = tmp_path / "elsewhere" / "Media"  # not under the daemon's allowed roots
    host = FakeReaper(selection=(0.5, 2.0), use_srate=0.0, media_folder=str(media),
                      answers="speech,Hello from the timeline.,narrator")
    s = host.run_script(SCRIPT)["_SESSION"]
    assert s.state == "running", host.console
    assert s.copy_to == str(media) and "tempo_bpm" not in s.plan.fields
    host.run_deferred(timeout=300)
    assert s.state == "inserted", "".join(host.console)
    track, item = s.inserted
    src = host.take(host.item(item).takes[0]).source
    assert Path(src).parent == media and Path(src).is_file()
    assert wav_frames(src)[:2] == (72000, 48000)  # the project follows the device: 48 kHz
    assert host.track(track).name == "speech: Hello from the timeline."


def test_unknown_voice_and_no_selection_are_told(as_daemon_user, tmp_path):
    host = FakeReaper(selection=(1.0, 2.0), media_folder=str(as_daemon_user.home / "p"),
                      answers="speech,Hi there.,nobody")
    s = host.run_script(SCRIPT)["_SESSION"]
    assert s.state == "failed" and not host.deferred
    assert "voices ls" in host.boxes[0] and "nobody" in host.boxes[0]
    host = FakeReaper(selection=(3.0, 3.0), answers="music,x,")
    s = host.run_script(SCRIPT)["_SESSION"]
    assert s.state == "failed" and "no time selection" in host.boxes[0]


def test_no_daemon_is_told(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIMOE_AUDIO_HOME", str(tmp_path))
    host = FakeReaper(selection=(1.0, 2.0), answers="music,x,")
    s = host.run_script(SCRIPT)["_SESSION"]
    assert s.state == "failed" and "unimoe-audio serve" in host.boxes[0] and not host.deferred


def test_a_job_outlives_the_reaper_session_that_asked(as_daemon_user, tmp_path):
    """REAPER closes while the job runs (no deferred call ever runs): the job's id is in the project's
    extended state; running the script again in that project follows it and inserts the result, without
    asking anything, and the project forgets the job."""
    daemon = as_daemon_user
    media = daemon.home / "later" / "Media"
    first = FakeReaper(selection=(2.0, 3.0), media_folder=str(media), answers="music,slow pads,")
    s1 = first.run_script(SCRIPT)["_SESSION"]
    assert s1.state == "running", first.console
    job_id = s1.job.job_id
    kept = json.loads(first.ext_state[rs.EXT_SECTION][job_id])
    assert (kept["position"], kept["length"], kept["kind"]) == (2.0, 1.0, "music")
    s1.close()  # REAPER quits: the session goes, the project (its extended state) is saved

    reopened = FakeReaper(selection=(0.0, 0.0), media_folder=str(media), answers=None,
                          ext_state=first.ext_state)  # no selection, no answers: nothing is asked
    s2 = reopened.run_script(SCRIPT)["_SESSION"]
    assert s2.state == "running" and s2.job.job_id == job_id, reopened.console
    assert any("queued before this project was closed" in line for line in reopened.console)
    reopened.run_deferred(timeout=300)
    assert s2.state == "inserted", "".join(reopened.console)
    track, item = s2.inserted
    assert (reopened.item(item).position, reopened.item(item).length) == (2.0, 1.0)
    assert Path(s2.path).parent == media.resolve()
    assert reopened.ext_state[rs.EXT_SECTION] == {}
    # a job the daemon does not know is dropped from the project with a line, and the script asks anew
    gone = FakeReaper(selection=(0.0, 0.0), answers=None,
                      ext_state={rs.EXT_SECTION: {"0" * 32: json.dumps({**kept, "copy_to": ""})}})
    s3 = gone.run_script(SCRIPT)["_SESSION"]
    assert any("dropped" in line for line in gone.console) and gone.ext_state[rs.EXT_SECTION] == {}
    assert s3.state in ("failed", "cancelled")  # then the usual path: no time selection here


EXTEND = Path(rs.__file__).with_name("reaper_extend.py")


def test_extend_selected_item_butts_the_new_part_on_its_track(as_daemon_user):
    """'Extend selected item': the item's source continues from where the item ends in it to the end of
    the time selection; the new item sits right after it on the same track."""
    import numpy as np
    import soundfile as sf

    from test_music_continue import music_clip

    daemon = as_daemon_user
    media = daemon.home / "song2" / "Media"
    media.mkdir(parents=True)
    source = media / "take.wav"
    original = music_clip(source, 3.0, 48000, 2, "PCM_24")
    host = FakeReaper(selection=(2.0, 5.0), srate=48000.0, media_folder=str(media), answers="same groove, brighter")
    host.RPR_InsertTrackAtIndex(0, True)
    track = host.tracks[0]
    item = host.RPR_AddMediaItemToTrack(track)
    take = host.RPR_AddTakeToMediaItem(item)
    host.RPR_SetMediaItemTake_Source(take, host.RPR_PCM_Source_CreateFromFile(str(source)))
    host.take(take).offset = 0.5  # the item plays 0.5 .. 3.0 s of its source
    host.RPR_SetMediaItemInfo_Value(item, "D_POSITION", 1.5)
    host.RPR_SetMediaItemInfo_Value(item, "D_LENGTH", 2.5)
    host.item(item).selected = True
    host.tempo_map = [(0.0, 0.0)]  # no tempo: the join stays where the item ends

    s = host.run_script(EXTEND)["_SESSION"]
    assert s.state == "running", host.console
    assert s.plan.fields["continue_from"] == 3.0 and s.plan.fields["new_only"] is True
    host.run_deferred(timeout=600)
    assert s.state == "inserted", "".join(host.console)

    _, new_item = s.inserted
    assert host.tracks == [track] and host.track(track).items == [item, new_item]  # same track, no new one
    it = host.item(new_item)
    assert (it.position, it.length) == (4.0, 1.0)  # butted: the old item ends at 4.0, the selection at 5.0
    src = host.take(it.takes[0]).source
    new = sf.read(src, dtype="int32", always_2d=True)[0]
    assert new.shape == (48000, 2)
    assert host.undo[-1].startswith("unimoe-audio: extend with") and host.undo_depth == 0
    # What REAPER plays over the seam: the source up to 3.0 s, then the new part: the daemon's own full
    # continuation, made with the same seed, is exactly that.
    full = daemon.home / "song2" / "full.wav"
    from unimoe_audio.client.client import Client

    fields = {k: v for k, v in s.plan.fields.items() if k not in ("new_only", "folder")}
    with Client(daemon.settings, auto_start=False) as c:
        seed = json_seed(src)
        res = c.submit("music", **fields, seed=seed, output=str(full)).wait(timeout=600)
    both = sf.read(res.path, dtype="int32", always_2d=True)[0]
    np.testing.assert_array_equal(both[:144000], original[:144000])
    np.testing.assert_array_equal(both[144000:], new)


def json_seed(wav: str) -> int:
    import json

    return int(json.loads(Path(wav).with_suffix(".json").read_text())["seed"])


def test_extend_plans_a_bar_line_join_and_refuses_what_it_cannot_do(tmp_path):
    import soundfile as sf

    src = tmp_path / "a.wav"
    sf.write(str(src), [[0.0, 0.0]] * 48000 * 4, 48000)
    p = rs_extend().plan_extend(source=str(src), item_pos=10.0, item_len=2.9, take_offset=0.0, playrate=1.0,
                                sel_end=16.0, caption="x", rate=48000, tempo=120.0)
    assert p.trim_to == 2.0 and p.position == 12.0 and p.samples == 4 * 48000  # the join on the bar at 2 s
    with pytest.raises(ValueError, match="must end after"):
        rs_extend().plan_extend(source=str(src), item_pos=10.0, item_len=2.0, take_offset=0.0, playrate=1.0,
                                sel_end=11.0, caption="x", rate=48000)
    with pytest.raises(ValueError, match="playrate"):
        rs_extend().plan_extend(source=str(src), item_pos=0.0, item_len=2.0, take_offset=0.0, playrate=2.0,
                                sel_end=5.0, caption="x", rate=48000)


def rs_extend():
    from unimoe_audio.integrations import reaper_extend

    return reaper_extend
