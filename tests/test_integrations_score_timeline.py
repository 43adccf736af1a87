"""score-timeline: an OTIO edit and CMX3600 EDLs of real ffmpeg testsrc clips, scored by a real daemon (tiny
model), written back as OTIO (exact record ranges) and as MLT XML rendered by Debian's melt, with
ffmpeg measuring that the render has sound where the score clips are and silence elsewhere."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from unimoe_audio.client import bwf  # noqa: E402
from unimoe_audio.integrations.score_cues import plan  # noqa: E402
from unimoe_audio.integrations.score_readers import edit_from_otio  # noqa: E402
from unimoe_audio.integrations.timeline import parse_timecode, wav_frames, write_edl  # noqa: E402

pytestmark = pytest.mark.timeout(900)

R23 = 24000 / 1001
SCRIPT = [sys.executable, "-m", "unimoe_audio.integrations.score_timeline"]
EDL_SCRIPT = [sys.executable, "-m", "unimoe_audio.integrations.edl_score"]
ot = otio.opentime


def make_video(path: Path, seconds: float = 4.0, rate: str = "24000/1001") -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=96x64:rate={rate}",
                    "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    return path


def max_volume(path: Path, start: float, end: float) -> float:
    """ffmpeg volumedetect's max_volume (dB) of [start, end) seconds of a file."""
    out = subprocess.run(["ffmpeg", "-v", "info", "-nostats", "-i", str(path), "-af",
                          f"atrim=start={start:.6f}:end={end:.6f},volumedetect", "-f", "null", "-"],
                         capture_output=True, text=True, check=True).stderr
    m = re.search(r"max_volume: (-?[\d.]+|-inf) dB", out)
    assert m, out[-2000:]
    return float("-inf") if m.group(1) == "-inf" else float(m.group(1))


@pytest.fixture(scope="module")
def media(daemon):
    folder = daemon.home / "media"
    folder.mkdir()
    make_video(folder / "clip.mp4")
    make_video(folder / "clip30.mp4", rate="30000/1001")
    return folder


def otio_edit(media: Path) -> otio.schema.Timeline:
    """01:00:00:00 at 23.976: gap 12, A (24 frames, marker 'hit'), B (18), gap 10, C (12)."""
    tl = otio.schema.Timeline(name="reel one", global_start_time=ot.RationalTime(86400, R23))
    v = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    ref = otio.schema.ExternalReference(target_url=(media / "clip.mp4").as_uri(),
                                        available_range=ot.TimeRange(ot.RationalTime(0, R23), ot.RationalTime(96, R23)))

    def clip(name: str, src: int, n: int) -> otio.schema.Clip:
        return otio.schema.Clip(name=name, media_reference=ref.clone(),
                                source_range=ot.TimeRange(ot.RationalTime(src, R23), ot.RationalTime(n, R23)))

    a = clip("A", 0, 24)
    a.markers.append(otio.schema.Marker(name="hit here", marked_range=ot.TimeRange(ot.RationalTime(6, R23))))
    v.append(otio.schema.Gap(source_range=ot.TimeRange(duration=ot.RationalTime(12, R23))))
    v.extend([a, clip("B", 48, 18)])
    v.append(otio.schema.Gap(source_range=ot.TimeRange(duration=ot.RationalTime(10, R23))))
    v.append(clip("C", 24, 12))
    tl.tracks.append(v)
    return tl


def test_plan_from_otio_and_markers(media):
    edit = edit_from_otio(otio_edit(media))
    assert edit.rate == Fraction(24000, 1001) and edit.start == 86400 and not edit.drop
    assert [(s.name, s.record, s.frames, s.src_in) for s in edit.shots] == [
        ("A", 12, 24, 0), ("B", 36, 18, 48), ("C", 64, 12, 24)]
    cues, skipped = plan(edit, prefix="r")
    assert [c.record_in for c in cues] == ["01:00:00:12", "01:00:01:12", "01:00:02:16"]
    assert [c.expected_samples for c in cues] == [48048, 36036, 24024]
    assert cues[1].in_seconds == pytest.approx(48 * 1001 / 24000) and not skipped
    cues, skipped = plan(edit, marker="hit", marker_captions=True)
    assert [c.scene for c in cues] == ["A"] and cues[0].caption == "hit here"
    assert [s["event"] for s in skipped] == [2, 3]
    with pytest.raises(ValueError, match="no video track"):
        edit_from_otio(otio_edit(media), track="Nope")


def test_otio_round_trip_and_melt_render(daemon, media, tmp_path):
    src = daemon.home / "in.otio"
    otio.adapters.write_to_file(otio_edit(media), str(src))
    out, mlt, rep_path = tmp_path / "scored.otio", tmp_path / "scored.mlt", tmp_path / "rep.json"
    proc = subprocess.run([*SCRIPT, str(src), "-o", str(out), "--mlt", str(mlt), "--report", str(rep_path),
                           "--caption", "tense strings", "--folder", str(daemon.home / "score"), "--seed", "5",
                           "--no-start"], env=daemon.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rep = json.loads(rep_path.read_text())
    assert rep["ok"] and rep["start"] == "01:00:00:00" and rep["outputs"] == {"otio": str(out), "mlt": str(mlt)}

    # the OTIO: the picture track untouched, a score track whose clips sit exactly on the picture's clips
    tl = otio.adapters.read_from_file(str(out))
    video, score = tl.tracks[0], tl.tracks[1]
    assert score.kind == otio.schema.TrackKind.Audio and score.name == "unimoe score"
    pics = [c for c in video if isinstance(c, otio.schema.Clip)]
    cues = [c for c in score if isinstance(c, otio.schema.Clip)]
    assert len(pics) == len(cues) == 3
    for pic, cue, frames, samples in zip(pics, cues, (24, 18, 12), (48048, 36036, 24024)):
        assert score.range_of_child(cue) == video.range_of_child(pic)
        assert cue.source_range.duration.value == frames
        path = Path(otio.url_utils.filepath_from_url(cue.media_reference.target_url))
        assert wav_frames(path) == (samples, 48000, 2)
        assert cue.metadata["unimoe_audio"]["samples"] == samples
        # the file spots to its record-in: samples since midnight at 48 kHz
        rec = 86400 + int(video.range_of_child(pic).start_time.value)
        assert bwf.read_bext(path).time_reference == round(Fraction(rec * 1001, 24000) * 48000)
        ix = bwf.read_ixml(path)
        assert ix["PROJECT"] == "reel one" and ix["SCENE"] == pic.name and ix["NOTE"] == "tense strings"

    # the MLT: melt renders sound where the score clips are, silence elsewhere
    doc = mlt.read_text()
    assert 'frame_rate_num="24000"' in doc and 'frame_rate_den="1001"' in doc
    render = tmp_path / "render.wav"
    total = 76  # frames: the last clip ends at 64 + 12
    run = subprocess.run(["melt", "-silent", str(mlt), f"out={total - 1}", "-consumer", f"avformat:{render}",
                          "ar=48000", "ac=2", "acodec=pcm_s16le"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and render.is_file(), run.stderr[-3000:]
    spf = 1001 / 24000  # seconds per frame
    assert wav_frames(render)[0] == pytest.approx(total * 2002, abs=2002)
    sounding = [(12, 36), (36, 54), (64, 76)]
    silent = [(0, 12), (54, 64)]
    for a, b in sounding:
        assert max_volume(render, (a + 1) * spf, (b - 1) * spf) > -40, (a, b)
    for a, b in silent:
        assert max_volume(render, (a + 0.5) * spf, (b - 0.5) * spf) < -80, (a, b)
    # and to the sample: at 23.976 a frame is exactly 2002 samples at 48 kHz
    import numpy as np
    import soundfile as sf

    x, sr = sf.read(render, dtype="float32", always_2d=True)
    loud = np.flatnonzero(np.abs(x).max(axis=1) > 1e-3)
    breaks = np.flatnonzero(np.diff(loud) > 2002) + 1
    runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(loud, breaks)]
    assert sr == 48000 and len(runs) == 2, runs
    for (a, b), (fa, fb) in zip(runs, [(12, 54), (64, 76)]):
        assert abs(a - fa * 2002) <= 48 and fb * 2002 - 2002 <= b <= fb * 2002, (runs, fa, fb)


EDL_DF = """TITLE: df reel
FCM: DROP FRAME

001  AX       V     C        00:00:00;10 00:00:00;15 00:59:59;28 01:00:00;03
* FROM CLIP NAME: clip30.mp4
002  BL       V     C        00:00:00;00 00:00:00;05 01:00:00;03 01:00:00;08
003  AX       V     C        00:00:01;00 00:00:01;03 01:00:00;08 01:00:00;11
* FROM CLIP NAME: clip30.mp4
* LOC: 01:00:00;09 RED     sting
"""


def test_edl_29_97_drop_frame_to_otio(daemon, media, tmp_path):
    # 29.97 DF across the minute boundary 00:59:59;28 -> 01:00:00;03 (5 frames = 8008 samples), then
    # 3 frames = 4804.8 -> 4805 samples; the EDL front end writes OTIO + MLT too
    edl = daemon.home / "df.edl"
    edl.write_text(EDL_DF)
    out, rep_path = tmp_path / "df.otio", tmp_path / "df.json"
    proc = subprocess.run([*EDL_SCRIPT, str(edl), "--rate", "29.97", "--source-start", "00:00:00;00",
                           "--media", str(media), "--otio", str(out), "--mlt", str(tmp_path / "df.mlt"), "--report", str(rep_path),
                           "--folder", str(daemon.home / "df"), "--no-start"],
                          env=daemon.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    rep = json.loads(rep_path.read_text())
    assert [c["expected_samples"] for c in rep["cues"]] == [8008, 4805]
    assert all(c["result"]["exact"] for c in rep["cues"]) and [s["why"] for s in rep["skipped"]] == ["black"]
    tl = otio.adapters.read_from_file(str(out))
    start = parse_timecode("00:59:59;28", Fraction(30000, 1001))
    assert tl.global_start_time.value == start
    score = [t for t in tl.tracks if t.name == "unimoe score"][0]
    ranges = [(score.range_of_child(c).start_time.value, c.source_range.duration.value)
              for c in score if isinstance(c, otio.schema.Clip)]
    assert ranges == [(0, 5), (10, 3)]
    first = Path(rep["cues"][0]["result"]["path"])
    assert bwf.read_ixml(first)["SPEED"]["TIMECODE_FLAG"] == "DF"
    assert bwf.read_bext(first).time_reference == round(Fraction(start * 1001, 30000) * 48000)
    import xml.etree.ElementTree as ET

    doc = ET.parse(tmp_path / "df.mlt").getroot()
    score_pl = next(pl for pl in doc.iter("playlist") if pl.findtext("property[@name='shotcut:name']") == "unimoe score")
    assert [(e.tag, e.get("length") or e.get("out")) for e in score_pl if e.tag in ("blank", "entry")] == [
        ("entry", "4"), ("blank", "5"), ("entry", "2")]
    assert doc.find("profile").get("frame_rate_num") == "30000"


def test_23976_drop_frame_edl_warns_and_scores(daemon, media, tmp_path):
    edl = daemon.home / "df23.edl"
    edl.write_text(write_edl("df23", [(str(media / "clip.mp4"), 0, 12, 86400, 86412)], "24000/1001", drop=False)
                   .replace("NON-DROP FRAME", "DROP FRAME"))
    proc = subprocess.run([*SCRIPT, str(edl), "--rate", "23.976", "--source-start", "00:00:00:00", "--report",
                           str(tmp_path / "r.json"), "--folder", str(daemon.home / "df23"), "--no-start"],
                          env=daemon.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "warning" in proc.stderr and "non-drop" in proc.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["warnings"] and rep["cues"][0]["result"]["samples"] == 24024 == rep["cues"][0]["expected_samples"]
    assert rep["cues"][0]["record_in"] == "01:00:00:00"


def test_bad_inputs_exit_2(daemon, media, tmp_path):
    edl = tmp_path / "x.edl"
    edl.write_text(EDL_DF)
    proc = subprocess.run([*SCRIPT, str(edl), "--report", str(tmp_path / "r.json"), "--no-start"],
                          env=daemon.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--rate" in proc.stderr
    junk = tmp_path / "x.otio"
    junk.write_text("{ not json")
    proc = subprocess.run([*SCRIPT, str(junk), "-o", str(tmp_path / "y.otio"), "--no-start"],
                          env=daemon.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot read" in proc.stderr
    proc = subprocess.run([*SCRIPT, str(junk)], env=daemon.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "-o OUT.otio" in proc.stderr


def test_edl_and_mlt_paths_need_no_opentimelineio(media, tmp_path):
    # the client and the EDL -> MLT path import without opentimelineio (Blender's or REAPER's Python);
    # asking for OTIO then says how to get it
    edl = tmp_path / "cut.edl"
    edl.write_text(write_edl("cut", [(str(media / "clip.mp4"), 0, 12, 90000, 90012)], "25"))
    code = f"""
import sys
sys.modules["opentimelineio"] = None  # importing it now raises ImportError
import unimoe_audio.client.client, unimoe_audio.client.protocol, unimoe_audio.client.bwf
from pathlib import Path
from unimoe_audio.integrations.score_cues import plan
from unimoe_audio.integrations.score_readers import edit_from_edl
from unimoe_audio.integrations.score_writers import otio_timeline
from unimoe_audio.integrations.mlt import mlt_document
edit = edit_from_edl(Path({str(edl)!r}), 25, [], "00:00:00:00")
cues, skipped = plan(edit)
cues[0].result = {{"status": "done", "path": "/x.wav"}}
root = mlt_document(edit, cues).getroot()
score = [pl for pl in root.iter("playlist") if pl.findtext("property[@name='shotcut:name']") == "unimoe score"]
print(score[0].find("entry").get("out"), cues[0].record_in)
try:
    otio_timeline(edit, cues)
except RuntimeError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    assert first == "11 01:00:00:00" and "pip install 'unimoe-audio[timeline]'" in second


@pytest.mark.parametrize("suffix", [".otiod", ".otioz"])
def test_otio_bundles_are_read_with_their_media(media, tmp_path, suffix):
    # the bundle adapters OTIO ships: media copied into the bundle, named relative to it
    bundle = tmp_path / f"cut{suffix}"
    otio.adapters.write_to_file(otio_edit(media), str(bundle))
    proc = subprocess.run([*SCRIPT, str(bundle), "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert [c["record_in"] for c in rep["cues"]] == ["01:00:00:12", "01:00:01:12", "01:00:02:16"] and not rep["skipped"]
    for c in rep["cues"]:
        v = Path(c["video"])
        assert v.is_file() and v != media / "clip.mp4" and v.read_bytes() == (media / "clip.mp4").read_bytes()


def test_dash_o_mlt_is_the_mlt_output(media, tmp_path):
    # -o x.mlt means --mlt x.mlt; a dry run plans without writing or needing a daemon
    src = tmp_path / "in.otio"
    otio.adapters.write_to_file(otio_edit(media), str(src))
    proc = subprocess.run([*SCRIPT, str(src), "-o", str(tmp_path / "x.mlt"), "--mlt", str(tmp_path / "y.mlt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "give one" in proc.stderr
    proc = subprocess.run([*SCRIPT, str(src), "-o", str(tmp_path / "x.mlt"), "--dry-run", "--marker", "nothing"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["cues"] == []
