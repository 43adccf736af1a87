"""``unimoe-audio voiceover`` against a real daemon on the tiny model: SRT, WebVTT and ASS fixtures
(tests/fixtures/voiceover), each cue's audio inside its slot and starting at its sample, silence between,
the stretch within its bound, the report and the spoken SRT matching the stem, speakers mapped, ``--only``
regenerating only its cues, OTIO and MLT outputs, BWF/iXML spotting, cancel keeping
the finished cues, and a killed daemon resumed. Nothing is mocked."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pysubs2
import pytest
import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _daemon_harness import DaemonProc, start_with_voice  # noqa: E402
from _progress import STALL_S  # noqa: E402

from unimoe_audio.client import bwf  # noqa: E402
from unimoe_audio.client.client import Client  # noqa: E402
from unimoe_audio.client.voiceover import Voiceover, VoiceoverOptions, read_script  # noqa: E402

FIX = HERE / "fixtures" / "voiceover"
VOICE_TEXT = "Hello there, this is my voice."
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = start_with_voice(tmp_path_factory.mktemp("vo-home"))
    with Client(d.settings, auto_start=False) as c:
        c.voice_add("alice", d.home / "ref.wav", VOICE_TEXT)
    yield d
    d.close()


@pytest.fixture
def work(daemon, request):
    w = daemon.home / request.node.name.replace("[", "_").replace("]", "")
    w.mkdir()
    for f in FIX.iterdir():
        shutil.copy(f, w / f.name)
    return w


def voiceover(d: DaemonProc, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unimoe_audio.client", "voiceover", *args, "--no-start",
                           "--progress", "never"], env=d.env, capture_output=True, text=True, timeout=STALL_S * 4)


def ok_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout)


def check_stem(rep: dict, max_stretch: float = 1.15) -> np.ndarray:
    """Every done cue's file lies in the stem at its placed sample, bit for bit; silence elsewhere; the
    report and the spoken SRT say the same times."""
    stem, sr = sf.read(rep["output"], dtype="int32")
    assert sr == rep["sample_rate"] == 48000 and len(stem) == rep["length_samples"]
    last_end = max(round(c["end"] * sr) for c in rep["cues"] if c["end"] is not None)
    assert len(stem) >= last_end
    covered = np.zeros(len(stem), bool)
    done = [c for c in rep["cues"] if c["state"] == "done"]
    for c in done:
        cue, csr = sf.read(c["file"], dtype="int32")
        start = round(c["placed_start"] * sr)
        assert csr == sr and len(cue) == c["placed_samples"]
        assert start == c["start_sample"] + round(c["shifted_seconds"] * sr)
        assert np.array_equal(stem[start:start + len(cue)], cue), f"cue {c['index']} is not at sample {start}"
        assert not covered[start:start + len(cue)].any(), "cues overlap"
        covered[start:start + len(cue)] = True
        assert 1.0 <= c["stretch"] <= max_stretch + 1e-6
        if rep["overflow"] == "trim":  # inside its slot
            assert c["start_sample"] == start and len(cue) <= round(c["slot_seconds"] * sr)
        if c["fitted"]:
            assert c["overflow_seconds"] == 0 and c["raw_seconds"] <= c["slot_seconds"] * c["stretch"] + 1e-3
        assert np.abs(cue).max() > 0
    assert not stem[~covered].any(), "sound outside the cues"
    spoken = pysubs2.load(rep["subtitles"][0])
    assert [(e.start, e.end) for e in spoken] == [(round(c["placed_start"] * 1000), round(c["placed_end"] * 1000))
                                                  for c in sorted(done, key=lambda c: c["placed_start"])]
    return stem


def test_srt_to_a_stem_then_only_one_cue_again(daemon, work):
    out = work / "dlg.wav"
    rep = ok_json(voiceover(daemon, str(work / "scene.srt"), "--voice", "narrator", "--voice-map", "ALICE=alice",
                            "-o", str(out), "--seed", "7", "--json"))
    assert rep["state"] == "done" and rep["output"] == str(out) and rep["skipped"] == [
        {"index": 3, "reason": "empty cue (nothing to speak)"}]
    by = {c["index"]: c for c in rep["cues"]}
    assert sorted(by) == [1, 2, 4]
    assert (by[1]["speaker"], by[1]["voice"]) == ("NARRATOR", "narrator")  # a NAME: prefix naming a saved voice
    assert (by[2]["speaker"], by[2]["voice"]) == (None, "narrator")  # no speaker: --voice
    assert (by[4]["speaker"], by[4]["voice"]) == ("ALICE", "alice")  # --voice-map
    assert [by[i]["seed"] for i in (1, 2, 4)] == [8, 9, 11]  # --seed + cue number
    assert rep["length_samples"] == round(6.6 * 48000)  # as long as the last cue's end
    for c in by.values():  # the model was asked for no more than the slot can take after the stretch
        assert c["asked"]["max_seconds"] <= c["slot_seconds"] * 1.15 + 1e-6
        assert c["start_sample"] == round(c["start"] * 48000)
    stem = check_stem(rep)
    assert Path(rep["report"]).is_file() and json.loads(Path(rep["report"]).read_text())["cues"][0]["index"] == 1
    # the WebVTT says what was spoken, by whom, at the SRT's (the stem's) times
    vtt = pysubs2.load(str(work / "dlg.spoken.vtt"))
    assert [e.plaintext for e in vtt] == ["NARRATOR: It was a quiet night.", "Then the phone rang.",
                                          "ALICE: Hello? Who is this?"]
    assert [(e.start, e.end) for e in vtt] == [(e.start, e.end) for e in pysubs2.load(rep["subtitles"][0])]

    # --only 2: a new take of cue 2 only (new seed, new job); the others' files stay byte for byte
    before = {i: Path(by[i]["file"]).read_bytes() for i in (1, 4)}
    again = ok_json(voiceover(daemon, str(work / "scene.srt"), "--voice", "narrator", "--voice-map", "ALICE=alice",
                              "-o", str(out), "--only", "2", "--json"))
    by2 = {c["index"]: c for c in again["cues"]}
    assert by2[2]["seed"] != by[2]["seed"] and by2[2]["job_id"] != by[2]["job_id"]
    for i in (1, 4):
        assert by2[i]["job_id"] == by[i]["job_id"] and Path(by2[i]["file"]).read_bytes() == before[i]
    stem2 = check_stem(again)
    s2, e2 = by[2]["start_sample"], by[2]["start_sample"] + round(by[2]["slot_seconds"] * 48000)
    assert np.array_equal(stem2[:s2], stem[:s2]) and np.array_equal(stem2[e2:], stem[e2:])
    assert not (work / "dlg.cues" / "raw" / f"{Path(by[2]['raw_file']).name}").exists()  # the old take is gone

    # the same command again: everything is there, nothing is rendered
    third = ok_json(voiceover(daemon, str(work / "scene.srt"), "--voice", "narrator", "--voice-map", "ALICE=alice",
                              "-o", str(out), "--json"))
    assert [c["job_id"] for c in third["cues"]] == [c["job_id"] for c in again["cues"]]


def test_ass_speakers_shift_and_otio_with_spotting(daemon, work):
    import opentimelineio as otio

    out = work / "dub.otio"
    rep = ok_json(voiceover(daemon, str(work / "scene.ass"), "--voice", "narrator", "--voice-map", "Italics=alice",
                            "-o", str(out), "--overflow", "shift", "--record-in", "01:00:00:00", "--fps", "25",
                            "--max-stretch", "1.1", "--json"))
    by = {c["index"]: c for c in rep["cues"]}
    assert by[1]["voice"] == "narrator" and by[2]["voice"] == "alice" and by[3]["voice"] == "alice"  # actor, style
    assert rep["written"] == [str(out), str(work / "dub.wav")]
    check_stem(rep, max_stretch=1.1)
    # the stem and every cue file spot to their record time: samples since midnight at 48 kHz
    assert bwf.read_bext(work / "dub.wav").time_reference == 3600 * 48000
    ix = bwf.read_ixml(work / "dub.wav")
    assert ix["SPEED"]["TIMECODE_RATE"] == "25/1"
    for c in by.values():
        assert bwf.read_bext(c["file"]).time_reference == 3600 * 48000 + round(c["placed_start"] * 48000)
    # the timeline: one clip per cue on a new audio track at the cue's frame, pointing at its file
    tl = otio.adapters.read_from_file(str(out))
    (track,) = [t for t in tl.tracks if t.kind == otio.schema.TrackKind.Audio]
    assert track.name == "unimoe voiceover"
    clips = [c for c in track if isinstance(c, otio.schema.Clip)]
    assert len(clips) == 3
    for clip, c in zip(clips, sorted(by.values(), key=lambda c: c["placed_start"])):
        assert track.range_of_child(clip).start_time.value == round(c["placed_start"] * 25)
        assert Path(otio.url_utils.filepath_from_url(clip.media_reference.target_url)) == Path(c["file"])


def test_vtt_to_mlt_with_one_entry_per_cue(daemon, work):
    import xml.etree.ElementTree as ET

    out = work / "vo.mlt"
    rep = ok_json(voiceover(daemon, str(work / "scene.vtt"), "--voice", "narrator", "--voice-map", "ALICE=alice",
                            "-o", str(out), "--overflow", "report", "--json"))
    assert [c["voice"] for c in rep["cues"]] == ["narrator", "narrator", "alice"]  # <v ALICE> speaks
    check_stem(rep)
    # the MLT (interchange's writer): an audio playlist with each cue file at its frame, blanks between
    root = ET.parse(out).getroot()
    files = {p.get("id"): p.findtext("property[@name='resource']") for p in root.iter("producer")}
    (pl,) = [p for p in root.iter("playlist") if p.findtext("property[@name='shotcut:name']") == "unimoe voiceover"]
    pos, placed = 0, []
    for el in pl:
        if el.tag == "blank":
            pos += int(el.get("length"))
        elif el.tag == "entry":
            placed.append((pos, files[el.get("producer")]))
            pos += int(el.get("out")) - int(el.get("in")) + 1
    assert placed == [(round(c["placed_start"] * 25), c["file"]) for c in rep["cues"]]


def test_bad_inputs_are_named(daemon, work):
    bad = work / "who.srt"
    bad.write_text("1\n00:00:01,000 --> 00:00:02,000\nBOB: hi\n\n2\n00:00:03,000 --> 00:00:04,000\nBOB: again\n")
    p = voiceover(daemon, str(bad), "--voice", "narrator", "-o", str(work / "x.wav"))
    assert p.returncode == 2 and "unknown speaker 'BOB' (cue 1, 2)" in p.stderr and "--voice-map" in p.stderr
    p = voiceover(daemon, str(work / "missing.srt"), "--voice", "narrator", "-o", str(work / "x.wav"))
    assert p.returncode == 2 and "missing.srt: cannot read it" in p.stderr
    p = voiceover(daemon, str(work / "scene.srt"), "--voice", "narrator", "--voice-map", "ALICE=alice",
                  "-o", str(work / "x.wav"), "--only", "2")
    assert p.returncode == 2 and "there is no report" in p.stderr
    p = voiceover(daemon, str(work / "scene.srt"), "--voice", "nobody", "-o", str(work / "x.wav"))
    assert p.returncode == 2 and "'nobody' is not a saved voice" in p.stderr
    p = voiceover(daemon, str(work / "scene.srt"), "--voice", "narrator", "--voice-map", "ALICE=alice",
                  "-o", str(work / "x.wav"), "--only", "3")
    assert p.returncode == 2 and "cue 3 is empty (skipped)" in p.stderr
    p = voiceover(daemon, str(work / "scene.srt"), "--voice", "narrator", "-o", str(work / "x.mp3"))
    assert p.returncode == 2 and "wanted a .wav stem" in p.stderr
    # a dry run plans without rendering: voices, slots and the length asked of the model
    p = voiceover(daemon, str(work / "scene.srt"), "--voice", "narrator", "--voice-map", "ALICE=alice",
                  "-o", str(work / "x.wav"), "--dry-run")
    assert p.returncode == 0 and "cue    4" in p.stdout and "alice" in p.stdout and "skipped: empty cue" in p.stderr


def _script(path: Path) -> Path:
    # one short cue first, then longer ones: the short one ends first
    path.write_text("0.0 --> 0.3 Hi.\n1.0 --> 4.0 This line takes a good while to say, slowly.\n"
                    "4.5 --> 7.5 And so does this one, at the very same pace.\n", encoding="utf-8")
    return path


def _drive_until_one_done(vo: Voiceover) -> None:
    deadline = time.monotonic() + STALL_S * 4
    while not any(c.state == "done" for c in vo.report.cues):
        assert vo.poll(0.2) or any(c.state == "done" for c in vo.report.cues), "every cue ended before one was done"
        assert time.monotonic() < deadline, "no cue finished"


def test_cancel_keeps_the_finished_cues(daemon, work):
    script = read_script(_script(work / "s.txt"))
    updates: list[tuple[int, float, str]] = []
    with Client(daemon.settings, auto_start=False) as c:
        vo = Voiceover(c, script, VoiceoverOptions(voice="narrator"), work / "cut.wav",
                       on_update=lambda i, f, s: updates.append((i, f, s)))
        vo.plan()
        vo.submit()
        _drive_until_one_done(vo)
        vo.cancel()
        rep = vo.finish()
    states = {c.index: c.state for c in rep.cues}
    assert states[1] == "done" and "cancelled" in states.values() and rep.state == "incomplete"
    assert (1, 1.0, "done") in updates and any(s == "cancelled" for _, _, s in updates)
    stem, sr = sf.read(rep.output, dtype="int32")
    assert len(stem) == 7.5 * sr  # still as long as the script
    assert np.abs(stem[:round(0.3 * sr)]).max() > 0  # the finished cue is in the stem
    for c in rep.cues:
        if c.state != "done":  # the cancelled ones left silence
            assert not stem[c.start_sample:round(c.end * sr)].any()
    assert json.loads(Path(vo.paths["report"]).read_text())["cues"][1]["state"] in ("cancelled", "done")

    # the same run again resumes: the finished cue is kept, the cancelled ones are made (same seeds, new keys)
    with Client(daemon.settings, auto_start=False) as c:
        again = Voiceover(c, script, VoiceoverOptions(voice="narrator"), work / "cut.wav")
        plan = again.plan()
        assert [r.index for r in again.to_render()] == [r.index for r in rep.cues if r.state != "done"]
        for old, new in zip(rep.cues, plan.cues):
            assert new.seed == old.seed and (new.request_id != old.request_id) == (old.state != "done")
        again.submit()
        while again.poll(0.2):
            pass
        rep2 = again.finish()
    assert rep2.state == "done" and rep2.cue(1).job_id == rep.cue(1).job_id


def test_a_killed_daemon_resumes_where_it_was(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    d = start_with_voice(home)
    work = home / "work"
    script = read_script(_script(work.parent / "s.txt"))
    started: list[DaemonProc] = [d]

    def restart() -> Client:
        nd = DaemonProc(home).start()
        started.append(nd)
        return Client(nd.settings, auto_start=False)

    notes: list[str] = []
    try:
        c = Client(d.settings, auto_start=False)
        vo = Voiceover(c, script, VoiceoverOptions(voice="narrator", seed=3), work / "r.wav", reconnect=restart,
                       on_note=notes.append)
        vo.plan()
        vo.submit()
        jobs = {r.index: r.job_id for r in vo.report.cues}
        _drive_until_one_done(vo)
        first = {r.index: r.state for r in vo.report.cues}
        d.kill9()
        deadline = time.monotonic() + STALL_S * 6
        while vo.poll(0.2):
            assert time.monotonic() < deadline, "the run did not resume"
        rep = vo.finish()
        vo.client.close()
        assert any("went away" in n for n in notes) and len(started) == 2
        assert rep.state == "done", [(r.index, r.state, r.error) for r in rep.cues]
        # the same jobs (found again by their keys), the finished ones not made again
        assert {r.index: r.job_id for r in rep.cues} == jobs
        assert any(s == "done" for s in first.values())
        check_stem(json.loads(Path(vo.paths["report"]).read_text()))
    finally:
        for p in started:
            p.close()
