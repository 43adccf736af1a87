"""Voiceover without a daemon: reading SRT / WebVTT / ASS / plain scripts, the length asked of the model,
the pitch-preserving stretch through the real ffmpeg, cue files and the stem at the byte level, and the
spoken subtitles. The daemon runs are in tests/test_voiceover_daemon.py."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unimoe_audio.client import bwf
from unimoe_audio.client.voiceover import fit, wav
from unimoe_audio.client.voiceover.report import CueRecord, Report, write_spoken_subtitles
from unimoe_audio.client.voiceover.script import ScriptError, parse_time, read_script, split_speaker
from unimoe_audio.client.voiceover.session import (VoiceoverError, VoiceoverOptions, output_paths, parse_only,
                                                   parse_voice_map)

FIX = Path(__file__).resolve().parent / "fixtures" / "voiceover"
EXPECTED = [(1, Fraction(1, 2), Fraction(2), "NARRATOR", "It was a quiet night."),
            (2, Fraction(12, 5), Fraction(4), None, "Then the phone rang."),
            (None, Fraction(5), Fraction(33, 5), "ALICE", "Hello? Who is this?")]


@pytest.mark.parametrize("name", ["scene.srt", "scene.vtt", "scene.ass", "scene.txt"])
def test_every_format_gives_the_same_cues(name):
    s = read_script(FIX / name)
    got = [(c.start, c.end, c.speaker, c.text) for c in s.cues]
    assert got == [(a, b, spk, t) for _, a, b, spk, t in EXPECTED]
    assert s.format == {"srt": "srt", "vtt": "vtt", "ass": "ass", "txt": "plain"}[name.split(".")[1]]
    if name == "scene.srt":  # the music-note cue is skipped, said so, and keeps its number out of the others
        assert s.skipped == [{"index": 3, "reason": "empty cue (nothing to speak)"}]
        assert [c.index for c in s.cues] == [1, 2, 4]
    if name == "scene.ass":  # the comment is not a cue; the style is kept (a speaker if a voice has its name)
        assert [c.style for c in s.cues] == [None, "Italics", None]


def test_plain_script_times_and_errors(tmp_path):
    assert parse_time("01:02:03.250") == 3723 + Fraction(1, 4)
    assert parse_time("2:03,5") == 123 + Fraction(1, 2)
    assert parse_time("12.5") == Fraction(25, 2)
    assert parse_time("00:00:01:12", 24) == Fraction(3, 2)
    assert parse_time("00:01:00;02", "30000/1001") == Fraction(1800 * 1001, 30000)  # drop frame
    with pytest.raises(ValueError, match="--fps"):
        parse_time("00:00:01:12")
    p = tmp_path / "s.txt"
    p.write_text("00:00:01:00 BOB: one\n00:00:02:12 - 00:00:03:00 two\n", encoding="utf-8")
    s = read_script(p, fps=25)
    assert [(c.start, c.end, c.speaker) for c in s.cues] == [(1, Fraction(62, 25), "BOB"), (Fraction(62, 25), 3, None)]
    p.write_text("1.0 fine\nno time here\n")
    with pytest.raises(ScriptError, match=r"line 2: no timecode"):
        read_script(p)
    p.write_text("3.0 --> 2.0 backwards\n")
    with pytest.raises(ScriptError, match=r"line 1: the end 2.0 is not after"):
        read_script(p)
    with pytest.raises(ScriptError, match="cannot read"):
        read_script(tmp_path / "missing.srt")
    (tmp_path / "bad.srt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ScriptError, match="bad.srt"):
        read_script(tmp_path / "bad.srt")
    (tmp_path / "empty.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\n\n")
    with pytest.raises(ScriptError, match="no cue to speak"):
        read_script(tmp_path / "empty.srt")


def test_overlapping_cues_warn_and_speakers_split():
    assert split_speaker("DR. WHO: hi there") == ("DR. WHO", "hi there")
    assert split_speaker("Time: 10:30 sharp") == ("Time", "10:30 sharp")  # a prefix is a speaker; unknown ones are named
    assert split_speaker("no speaker here") == (None, "no speaker here")
    assert split_speaker("http://x.y") == (None, "http://x.y")  # no space after the colon


def test_overlap_warning(tmp_path):
    p = tmp_path / "o.srt"
    p.write_text("1\n00:00:01,000 --> 00:00:03,000\none\n\n2\n00:00:02,500 --> 00:00:04,000\ntwo\n")
    s = read_script(p)
    assert s.warnings == ["cue 1 overlaps cue 2 by 0.500 s: cue 1 is fitted to end when cue 2 starts"]


def test_only_and_voice_map_parsing(tmp_path):
    assert parse_only("12,15-18", set(range(1, 30))) == {12, 15, 16, 17, 18}
    with pytest.raises(VoiceoverError, match="no cue 40"):
        parse_only("3,40", set(range(1, 30)))
    with pytest.raises(VoiceoverError, match="not a cue number"):
        parse_only("a-b", {1})
    m = tmp_path / "map.json"
    m.write_text('{"ALICE": "alice_v"}')
    assert parse_voice_map(["BOB=narrator", str(m)]) == {"BOB": "narrator", "ALICE": "alice_v"}
    with pytest.raises(VoiceoverError, match="SPEAKER=VOICE"):
        parse_voice_map(["nonsense"])
    with pytest.raises(VoiceoverError, match="outside 1..1.5"):
        VoiceoverOptions(voice="v", max_stretch=2.0).check()
    with pytest.raises(VoiceoverError, match="--overflow"):
        VoiceoverOptions(voice="v", overflow="squeeze").check()
    paths = output_paths(tmp_path / "dlg.otio")
    assert paths["stem"] == tmp_path / "dlg.wav" and paths["report"] == tmp_path / "dlg.voiceover.json"
    assert paths["srt"] == tmp_path / "dlg.spoken.srt" and paths["cues"] == tmp_path / "dlg.cues"


def test_length_request_policy():
    rate = 0.08  # s per character
    text = "x" * 20  # ~1.6 s
    a = fit.length_request(text, 3.0, rate)  # fits: the model's own cap, under slot x bound
    assert a.estimate_s == pytest.approx(1.6) and not a.too_long
    assert a.max_seconds == pytest.approx(min(3.0 * 1.15, 1.6 * 1.5 + 1.0))
    b = fit.length_request(text, 1.5, rate)  # tight: capped at slot x bound, so the stretch can always fit it
    assert b.max_seconds == pytest.approx(1.5 * 1.15) and not b.too_long and b.min_seconds <= 0.75
    c = fit.length_request("x" * 60, 1.5, rate)  # too long even for the bound: the words are not cut
    assert c.too_long and c.max_seconds == pytest.approx(60 * rate * 1.5 + 1.0)
    d = fit.length_request(text, None, rate)  # open slot
    assert d.max_seconds == pytest.approx(1.6 * 1.5 + 1.0)
    assert fit.speaking_rate("Hello there,  this is my voice.", 2.0) == pytest.approx(2.0 / 30)
    assert fit.stretch_factor(1150, 1000, 1.15) == pytest.approx(1.15)
    assert fit.stretch_factor(1300, 1000, 1.15) == 1.15 and fit.stretch_factor(900, 1000, 1.15) == 1.0


def _tone(path: Path, seconds: float, freq: float = 220.0, sr: int = 48000, subtype: str = "PCM_24") -> Path:
    t = np.arange(int(round(seconds * sr))) / sr
    sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, subtype=subtype)
    return path


def _pitch(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


@pytest.mark.parametrize("engine", ["rubberband", "atempo"])
def test_stretch_keeps_pitch_and_lands_sample_exact(tmp_path, engine, monkeypatch):
    if engine == "atempo":  # the fallback where ffmpeg has no rubberband
        monkeypatch.setattr(fit, "_filters", lambda: frozenset({"atempo"}))
    src = _tone(tmp_path / "raw.wav", 1.1)
    slot = 48000  # 1.0 s
    tempo = fit.stretch_factor(52800, slot, 1.15)
    assert tempo == pytest.approx(1.1)
    out = fit.render_fitted(src, tmp_path / "fit.wav", tempo=tempo, keep_samples=slot)
    y, sr = sf.read(tmp_path / "fit.wav", dtype="float32")
    info = sf.info(tmp_path / "fit.wav")
    assert out.frames == len(y) == 48000 and sr == 48000 and info.subtype == "PCM_24"
    assert abs(_pitch(y[4800:43200], sr) - 220.0) < 4.0  # pitch kept (a resample would give 242 Hz)
    assert np.abs(y[4800:43200]).max() > 0.3  # not silence


def test_trim_fades_and_copy_is_bit_exact(tmp_path):
    src = _tone(tmp_path / "raw.wav", 1.0)
    out = fit.render_fitted(src, tmp_path / "cut.wav", tempo=1.0, keep_samples=24000)
    y, _ = sf.read(tmp_path / "cut.wav", dtype="float32")
    assert out.frames == 24000 and np.abs(y[-20:]).max() < 0.01 and np.abs(y[:20000]).max() > 0.4
    same = fit.render_fitted(src, tmp_path / "same.wav", tempo=1.0, keep_samples=10**9,
                             chunks=[(b"bext", bwf.bext_chunk(bwf.Bext(time_reference=123)))])
    assert same.frames == 48000 and wav.read_pcm(tmp_path / "same.wav") == wav.read_pcm(src)
    assert bwf.read_bext(tmp_path / "same.wav").time_reference == 123
    assert sf.info(tmp_path / "same.wav").frames == 48000  # libsndfile reads what we wrote


def test_stem_places_cues_sample_exact_with_silence_between(tmp_path):
    a = _tone(tmp_path / "a.wav", 0.5, 300)
    b = _tone(tmp_path / "b.wav", 0.25, 500)
    fmt = wav.read_info(a)
    chunks = [(b"bext", bwf.bext_chunk(bwf.Bext(time_reference=48000 * 3600))),
              (b"iXML", bwf.ixml_chunk(sample_rate=48000, bit_depth=24, channels=1, time_reference=48000 * 3600))]
    stem = wav.write_stem(tmp_path / "stem.wav", fmt, 96000, [(1001, a, 24000), (60000, b, 12000)], chunks)
    y, sr = sf.read(tmp_path / "stem.wav", dtype="int32")
    ya, _ = sf.read(a, dtype="int32")
    yb, _ = sf.read(b, dtype="int32")
    assert stem.frames == len(y) == 96000
    assert not y[:1001].any() and not y[25001:60000].any() and not y[72000:].any()
    assert np.array_equal(y[1001:25001], ya) and np.array_equal(y[60000:72000], yb)  # bit exact, at its sample
    assert bwf.read_bext(tmp_path / "stem.wav").time_reference == 48000 * 3600
    with pytest.raises(wav.WavError, match="overlaps"):
        wav.write_stem(tmp_path / "bad.wav", fmt, 96000, [(0, a, 24000), (20000, b, 12000)])
    stereo = tmp_path / "st.wav"
    sf.write(stereo, np.zeros((10, 2), np.float32), 48000, subtype="PCM_24")
    with pytest.raises(wav.WavError, match="differs"):
        wav.write_stem(tmp_path / "bad.wav", fmt, 96000, [(0, stereo, 10)])
    assert not (tmp_path / "bad.wav").exists()


def test_spoken_subtitles_follow_the_placed_audio(tmp_path):
    import pysubs2

    rep = Report(script="s.srt", script_format="srt", output="o.wav", sample_rate=48000, channels=1, bit_depth=24,
                 max_stretch=1.15, overflow="trim",
                 cues=[CueRecord(index=1, text="one", speaker="ALICE", start=0.5, state="done", placed_start=0.5,
                                 placed_end=1.2345),
                       CueRecord(index=2, text="two", start=2.0, state="failed")])
    out = write_spoken_subtitles(rep, [tmp_path / "o.srt", tmp_path / "o.vtt"])
    for p in out:
        subs = pysubs2.load(str(p))
        assert [(e.start, e.end, e.plaintext) for e in subs] == [(500, 1234, "ALICE: one")]


def test_text_strips_become_cues_and_a_report_becomes_a_timeline(tmp_path):
    from unimoe_audio.integrations.blender_voiceover import output_for, script_from_strips
    from unimoe_audio.integrations.voiceover_timeline import layout_of, write_timeline

    rate = Fraction(24000, 1001)
    s = script_from_strips([("b", "BOB: later", 48, 96), ("a", "first", 0, 24), ("c", "  ", 100, 110)], rate)
    assert [(c.index, c.start, c.end, c.speaker, c.text) for c in s.cues] == [
        (1, 0, Fraction(24 * 1001, 24000), None, "first"), (2, Fraction(48 * 1001, 24000), Fraction(96 * 1001, 24000),
                                                          "BOB", "later")]
    assert s.skipped == [{"index": 3, "reason": "text strip 'c' has no text"}]
    assert output_for("/p/unimoe", "Scene 1", "strips", "/out") == "/p/unimoe/Scene_1-strips-voiceover.wav"
    assert output_for(None, "S", "film", "/out") == "/out/S-film-voiceover.wav"

    cue = tmp_path / "c1.wav"
    sf.write(cue, np.zeros(24000, np.float32), 48000, subtype="PCM_24")
    rep = Report(script="s.srt", script_format="srt", output=str(tmp_path / "o.wav"), sample_rate=48000, channels=1,
                 bit_depth=24, max_stretch=1.15, overflow="trim", record_in="01:00:00:00", fps="25",
                 cues=[CueRecord(index=7, text="hi", speaker="ALICE", start=1.0, state="done", file=str(cue),
                                 placed_start=1.02, placed_end=1.52, placed_samples=24000),
                       CueRecord(index=8, text="no", start=2.0, state="failed")])
    lay = layout_of(rep)
    (lane,) = lay.lanes
    assert lay.start == 90000 and lane.kind == "audio" and lane.name == "unimoe voiceover"
    assert [(p.record, p.frames, p.name, p.path) for p in lane.items] == [(26, 13, "cue 7 ALICE", str(cue))]
    mlt = write_timeline(rep, tmp_path / "o.mlt")
    assert 'frame_rate_num="25"' in mlt.read_text() and str(cue) in mlt.read_text()
    edl = write_timeline(rep, tmp_path / "o.edl").read_text()  # every editor's format, by extension
    assert "01:00:01:01" in edl and "c1.wav" in edl
