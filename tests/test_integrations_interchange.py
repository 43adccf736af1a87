"""Every editor's interchange (integrations/interchange.py): a scored edit written as OTIO, CMX 3600 EDL, FCP 7 XML,
FCPXML, AAF, MLT and Kdenlive, read back through the format's reader (OTIO's adapters where they are right, ours
where a measured case showed them wrong), with every original track kept and every score clip at its exact record
range, referencing a WAV of exactly round(frames x 48000 / rate) samples. Cross-checks with a second, independent
reader where one exists (OTIO's cmx_3600 for our EDL, pyaaf2 itself for the AAF).

The cues' results are filled with real WAV files of the right length (what the daemon would have written: the
daemon path is tests/test_integrations_score_timeline.py's)."""
from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest
import soundfile as sf

from unimoe_audio.integrations.interchange import FORMATS, format_of, read_layout, write_layout, write_timeline
from unimoe_audio.integrations.score_cues import plan
from unimoe_audio.integrations.score_readers import edit_from_otio
from unimoe_audio.integrations.timeline import parse_timecode, samples_for_frames, wav_frames

pytestmark = pytest.mark.timeout(600)
ot = otio.opentime
SCRIPT = [sys.executable, "-m", "unimoe_audio.integrations.score_timeline"]
RATES = {"23.976": (Fraction(24000, 1001), "01:00:00:00"), "29.97DF": (Fraction(30000, 1001), "01:00:00;00")}
# the edit: (name, record, frames, src_in) on V1, and an original dialogue track to keep
SHOTS = [("A", 12, 24, 0), ("B", 36, 18, 48), ("C", 64, 12, 24)]
DIALOG = (5, 60)


def make_video(path: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=4:size=96x64:rate=24000/1001",
                    "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    return path


def make_wav(path: Path, samples: int) -> Path:
    t = np.arange(samples) / 48000
    sf.write(path, np.stack([0.2 * np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32), 48000,
             subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("interchange-media")
    make_video(folder / "clip.mp4")
    make_wav(folder / "dialog.wav", 48000 * 4)
    return folder


def source_timeline(media: Path, rate: Fraction, start_tc: str) -> otio.schema.Timeline:
    r = float(rate)
    tl = otio.schema.Timeline(name="reel one", global_start_time=ot.RationalTime(parse_timecode(start_tc, rate), r))
    v = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    pos = 0
    for name, rec, n, src in SHOTS:
        if rec > pos:
            v.append(otio.schema.Gap(source_range=ot.TimeRange(duration=ot.RationalTime(rec - pos, r))))
        ref = otio.schema.ExternalReference(target_url=(media / "clip.mp4").as_uri(),
                                            available_range=ot.TimeRange(ot.RationalTime(0, r), ot.RationalTime(96, r)))
        v.append(otio.schema.Clip(name=name, media_reference=ref,
                                  source_range=ot.TimeRange(ot.RationalTime(src, r), ot.RationalTime(n, r))))
        pos = rec + n
    a = otio.schema.Track(name="dialogue", kind=otio.schema.TrackKind.Audio)
    a.append(otio.schema.Gap(source_range=ot.TimeRange(duration=ot.RationalTime(DIALOG[0], r))))
    a.append(otio.schema.Clip(name="dialog", media_reference=otio.schema.ExternalReference(
        target_url=(media / "dialog.wav").as_uri(), available_range=ot.TimeRange(ot.RationalTime(0, r), ot.RationalTime(96, r))),
        source_range=ot.TimeRange(ot.RationalTime(0, r), ot.RationalTime(DIALOG[1], r))))
    tl.tracks.extend([v, a])
    return tl


def scored(media: Path, tmp: Path, rate: Fraction, start_tc: str):
    edit = edit_from_otio(source_timeline(media, rate, start_tc))
    cues, skipped = plan(edit, prefix="r")
    assert not skipped
    for c in cues:  # what the daemon writes: a WAV of exactly the cue's samples
        wav = make_wav(tmp / f"{c.name}.wav", c.expected_samples)
        c.result = {"status": "done", "path": str(wav), "samples": c.expected_samples, "sample_rate": 48000}
    return edit, cues


def tracks_of(layout) -> dict[str, list[tuple[int, int, str]]]:
    """kind -> [(absolute record frame, frames, media file name)] of every clip, sorted; audio split by track."""
    out: dict[str, list[tuple[int, int, str]]] = {}
    for n, lane in enumerate(layout.lanes):
        key = lane.kind if lane.kind == "video" else f"audio:{sorted(Path(p.path).name for p in lane.items)[0]}"
        out.setdefault(key, [])
        out[key] += [(layout.start + p.record, p.frames, Path(p.path or "?").name) for p in lane.items]
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("rate_key", list(RATES))
@pytest.mark.parametrize("suffix", [".otio", ".edl", ".xml", ".fcpxml", ".aaf", ".mlt", ".kdenlive"])
def test_round_trip_keeps_tracks_and_exact_record_ranges(media, tmp_path, suffix, rate_key):
    rate, start_tc = RATES[rate_key]
    start = parse_timecode(start_tc, rate)
    edit, cues = scored(media, tmp_path, rate, start_tc)
    out = write_timeline(edit, cues, tmp_path / f"scored{suffix}")
    back = read_layout(out, rate if suffix == ".edl" else None)
    assert back.rate == rate, (suffix, back.rate)
    got = tracks_of(back)
    assert got["video"] == [(start + rec, n, "clip.mp4") for _, rec, n, _ in SHOTS]
    assert got["audio:dialog.wav"] == [(start + DIALOG[0], DIALOG[1], "dialog.wav")]
    assert got["audio:r-001.wav"] == [(start + rec, n, f"r-00{i}.wav") for i, (_, rec, n, _) in enumerate(SHOTS, 1)]
    # source offsets of the picture survive, and the score clips reference WAVs of the exact length
    pics = sorted((p for la in back.video_lanes() for p in la.items), key=lambda p: p.record)
    assert [p.src_in for p in pics] == [src for *_, src in SHOTS]
    score = [p for la in back.audio_lanes() for p in la.items if Path(p.path).name.startswith("r-")]
    assert len(score) == 3
    for p in score:
        assert Path(p.path).is_file(), p.path
        assert wav_frames(p.path) == (samples_for_frames(p.frames, rate), 48000, 2)


def test_aaf_reads_back_through_pyaaf2(media, tmp_path):
    # the AAF adapter wrote it; pyaaf2 itself opens it and the composition's slots hold the clips' lengths
    import aaf2

    rate, start_tc = RATES["23.976"]
    edit, cues = scored(media, tmp_path, rate, start_tc)
    out = write_timeline(edit, cues, tmp_path / "scored.aaf")
    with aaf2.open(str(out), "r") as f:
        comp = next(iter(f.content.toplevel()))
        slots = {}
        for slot in comp.slots:
            seg = slot.segment
            if type(seg).__name__ == "OperationGroup":  # a sound slot: the sequence is the group's input
                seg = seg.segments[0]
            comps = [(type(c).__name__, c.length) for c in seg.components] if hasattr(seg, "components") else seg
            slots[slot.name] = (str(slot.edit_rate), str(slot.media_kind), comps)
    assert slots["V1"] == ("24000/1001", "Picture", [("Filler", 12), ("SourceClip", 24), ("SourceClip", 18),
                                                     ("Filler", 10), ("SourceClip", 12)])
    assert slots["dialogue"] == ("24000/1001", "Sound", [("Filler", 5), ("SourceClip", 60)])
    assert slots["unimoe score"] == ("24000/1001", "Sound", slots["V1"][2])
    assert slots["TC"][2].start == 86400  # the timeline's start timecode, 01:00:00:00


def test_our_edl_reads_the_same_through_otios_cmx_3600(media, tmp_path):
    rate, start_tc = RATES["29.97DF"]
    edit, cues = scored(media, tmp_path, rate, start_tc)
    out = write_timeline(edit, cues, tmp_path / "scored.edl")
    assert "FCM: DROP FRAME" in out.read_text() and "01:00:00;12" in out.read_text()
    tl = otio.adapters.read_from_file(str(out), rate=float(rate))
    # the adapter puts each track's first record timecode in its source range (negated)
    by_track = {t.name: [(int(t.range_of_child(c).start_time.value - t.source_range.start_time.value),
                          int(c.duration().value), c.name)
                         for c in t if isinstance(c, otio.schema.Clip)] for t in tl.tracks}
    ours = tracks_of(read_layout(out, rate))
    assert sorted(by_track["V"]) == ours["video"]
    assert sorted(x for k, v in by_track.items() if k != "V" for x in v) == sorted(
        ours["audio:dialog.wav"] + ours["audio:r-001.wav"])


def test_formats_table_and_unsupported_extension():
    assert set(FORMATS) == {".otio", ".otioz", ".otiod", ".edl", ".xml", ".fcpxml", ".aaf", ".mlt", ".kdenlive"}
    with pytest.raises(ValueError, match=r"unsupported timeline format \(extension '\.docx'\).*\.fcpxml"):
        format_of("cut.docx")


def test_write_layout_is_the_public_writer(media, tmp_path):
    # the voiceover verb's way in: any layout of placed clips, to any format by extension
    from unimoe_audio.integrations.layout import Lane, Layout, Placed

    wav = make_wav(tmp_path / "line.wav", samples_for_frames(25, 25))
    lay = Layout("lines", Fraction(25), 90000, False, [Lane("V1", "video", [Placed(0, 50, str(media / "clip.mp4"))]),
                                                        Lane("voice", "audio", [Placed(10, 25, str(wav), name="line 1")])])
    for suffix in (".otio", ".mlt", ".kdenlive"):
        back = read_layout(write_layout(lay, tmp_path / f"lines{suffix}"))
        assert [(p.record, p.frames) for la in back.audio_lanes() for p in la.items] == [(10, 25)]
        assert back.start == 90000


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*SCRIPT, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def test_bad_inputs_are_named(media, tmp_path):
    rate, start_tc = RATES["23.976"]
    good = tmp_path / "cut.otio"
    otio.adapters.write_to_file(source_timeline(media, rate, start_tc), str(good))
    # an unsupported extension, in and out: refused before any work (no daemon needed)
    bad_in = tmp_path / "cut.docx"
    bad_in.write_text("x")
    r = _run([str(bad_in), "-o", str(tmp_path / "x.otio"), "--no-start"], tmp_path)
    assert r.returncode == 2 and "unsupported timeline format (extension '.docx')" in r.stderr, r.stderr
    r = _run([str(good), "-o", str(tmp_path / "x.pdf"), "--no-start"], tmp_path)
    assert r.returncode == 2 and "unsupported timeline format (extension '.pdf')" in r.stderr, r.stderr
    # a timeline without video clips
    tl = source_timeline(media, rate, start_tc)
    del tl.tracks[0]
    audio_only = tmp_path / "audio_only.otio"
    otio.adapters.write_to_file(tl, str(audio_only))
    r = _run([str(audio_only), "--dry-run"], tmp_path)
    assert r.returncode == 2 and "no video clips" in r.stderr, r.stderr
    tl = source_timeline(media, rate, start_tc)
    tl.tracks[0].clear()
    tl.tracks[0].append(otio.schema.Gap(source_range=ot.TimeRange(duration=ot.RationalTime(10, float(rate)))))
    empty = tmp_path / "empty.otio"
    otio.adapters.write_to_file(tl, str(empty))
    r = _run([str(empty), "--dry-run"], tmp_path)
    assert r.returncode == 2 and "no video clips on track 'V1'" in r.stderr, r.stderr
    # media offline: every clip's file is missing: nothing to score, each named
    offline = tmp_path / "offline.otio"
    otio.adapters.write_to_file(source_timeline(tmp_path / "gone", rate, start_tc), str(offline))
    r = _run([str(offline), "-o", str(tmp_path / "x.aaf"), "--no-start"], tmp_path)
    assert r.returncode == 2 and "nothing to score" in r.stderr
    assert r.stderr.count("media offline: ") == 3 and str(tmp_path / "gone" / "clip.mp4") in r.stderr, r.stderr
    r = _run([str(offline), "--dry-run"], tmp_path)
    assert {s["why"].split(":")[0] for s in json.loads(r.stdout)["skipped"]} == {"media offline"}


@pytest.mark.parametrize("suffix", [".xml", ".fcpxml", ".aaf", ".mlt", ".kdenlive", ".edl"])
def test_every_format_is_read_as_an_input(media, tmp_path, suffix):
    # score-timeline reads what it writes: the planned cues of a file in each format match the OTIO source's
    rate, start_tc = RATES["23.976"]
    edit, cues = scored(media, tmp_path, rate, start_tc)
    src = write_layout(read_layout(write_timeline(edit, [], tmp_path / "plain.otio")), tmp_path / f"cut{suffix}")
    args = [str(src), "--dry-run", "--media", str(media)] + (["--rate", "24000/1001", "--source-start", "00:00:00:00"]
                                                              if suffix == ".edl" else [])
    r = _run(args, tmp_path)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [(c["record_in"], c["frames"], c["in_seconds"]) for c in rep["cues"]] == [
        (c.record_in, c.frames, pytest.approx(c.in_seconds)) for c in cues]
