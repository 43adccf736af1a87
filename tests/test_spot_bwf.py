"""Files that spot: a real daemon (tiny model) writes BWF ``bext`` + iXML when a request gives a timeline
position; read back by our parser, by ``wavinfo`` (an independent reader) and by ffprobe."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import wavinfo

sys.path.insert(0, str(Path(__file__).resolve().parent))

from unimoe_audio.client import bwf  # noqa: E402
from unimoe_audio.client import protocol as P  # noqa: E402
from unimoe_audio.client.client import BadRequest, build_request  # noqa: E402
from unimoe_audio.integrations.timeline import wav_frames  # noqa: E402
from unimoe_audio.model.audio_out import insert_chunks, write_wav  # noqa: E402

pytestmark = pytest.mark.timeout(600)


def ffprobe_tags(path: Path) -> dict[str, str]:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format_tags", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["format"].get("tags", {})


# --------------------------------------------------------------------------------------------------
# the chunk layout, without a daemon
# --------------------------------------------------------------------------------------------------
def test_bext_layout_is_ebu_v2():
    body = bwf.bext_chunk(bwf.Bext(description="d", originator="o", originator_reference="r",
                                   origination_date="2026-01-02", origination_time="03:04:05",
                                   time_reference=2**32 + 7, loudness_value=-23.0, max_true_peak_level=-1.5,
                                   coding_history="A=PCM,F=48000,W=24,M=stereo"))
    assert bwf.BEXT_FIXED == 602 and len(body) == 602 + len("A=PCM,F=48000,W=24,M=stereo\r\n")
    # fixed offsets of EBU Tech 3285: TimeReference at 338, Version at 346, loudness at 412..421
    assert body[:1] == b"d" and body[256:257] == b"o" and body[320:330] == b"2026-01-02"
    assert struct.unpack_from("<IIH", body, 338) == (7, 1, 2)
    assert struct.unpack_from("<hhhhh", body, 412) == (-2300, 0x7FFF, -150, 0x7FFF, 0x7FFF)
    back = bwf.parse_bext(body)
    assert back.time_reference == 2**32 + 7 and back.loudness_value == -23.0 and back.loudness_range is None
    assert back.coding_history == "A=PCM,F=48000,W=24,M=stereo\r\n"
    with pytest.raises(ValueError):
        bwf.parse_bext(body[:600])


def test_chunks_go_before_data_and_keep_the_audio(tmp_path):
    x = np.linspace(-0.5, 0.5, 2 * 1001, dtype=np.float32).reshape(2, 1001)
    odd = (b"iXML", b"<BWFXML/>")  # odd length: padded
    for bits in (16, 24, 32):
        p = write_wav(tmp_path / f"a{bits}.wav", x, 48000, bits, chunks=[(b"bext", b"\x00" * 602), odd])
        data = p.read_bytes()
        assert struct.unpack_from("<I", data, 4)[0] == len(data) - 8
        ids = list(bwf.read_chunks(p))
        assert ids.index(b"bext") < ids.index(b"iXML") and b"data" not in ids
        assert data.index(b"iXML") < data.index(b"data")
        y, sr = sf.read(p, dtype="float32", always_2d=True)
        assert sr == 48000 and y.shape == (1001, 2) and np.allclose(y.T, x, atol=2e-4)
        assert wav_frames(p) == (1001, 48000, 2)
    with pytest.raises(Exception):
        insert_chunks(b"RIFF\x04\x00\x00\x00WAVE", [(b"bext", b"")])


def test_spot_fields_are_validated():
    ok = P.SpotInfo(record_in="01:00:00;00", fps="29.97")
    assert ok.start_seconds() == Fraction(107892 * 1001, 30000)
    assert P.SpotInfo(seconds=12.5).start_seconds() == Fraction(25, 2)
    assert P.SpotInfo(project="x").start_seconds() is None
    for bad, field in ((dict(record_in="01:00:00:00"), "spot"), (dict(record_in="00:00:00:30", fps=30), "spot"),
                       (dict(record_in="00:01:00;00", fps="29.97"), "spot"), (dict(fps="x", record_in="1:0:0:0"), "spot.fps"),
                       (dict(seconds=90000), "spot.seconds"), (dict(colour="red"), "spot.colour")):
        with pytest.raises(P.ProtocolError) as e:
            P.parse_request("submit", {"spec": {"task": "music", "caption": "x"}, "spot": bad})
        assert e.value.field == field, (bad, e.value)
    # flat fields (the CLI's): fps goes with record_in, and with frames when both are given
    r = build_request("score", video="/v.mp4", frames=24, fps="24000/1001", record_in="01:00:00:00", take="2")
    assert r.spot.record_in == "01:00:00:00" and r.spot.fps == "24000/1001" and r.spec.length.fps == "24000/1001"
    assert build_request("music", caption="x", record_in="3600.5s").spot.seconds == 3600.5
    with pytest.raises(BadRequest):
        build_request("music", caption="x", record_in="soon-ish s")


# --------------------------------------------------------------------------------------------------
# the real daemon
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def client(daemon, env_client):
    return env_client(daemon, timeout=30)


@pytest.mark.parametrize("record_in,fps,sr,expected,flag", [
    ("01:00:00:00", "24000/1001", 48000, 172_972_800, "NDF"),  # 86400 frames = 3603.6 s
    ("01:00:00;00", "30000/1001", 48000, 172_799_827, "DF"),   # 107892 frames = 3599.9964 s
    ("10:00:00:00", "25", 44100, 1_587_600_000, "NDF"),
])
def test_daemon_writes_bext_and_ixml(client, daemon, record_in, fps, sr, expected, flag):
    out = daemon.home / "spot"
    job = client.music("a tense cue", seconds=0.5, seed=1, folder=str(out), sample_rate=sr, record_in=record_in,
                       fps=fps, project="Feature", scene="12A", take="3", note="sting under the door slam")
    res = job.wait(timeout=300)
    p = Path(res.path)
    # our own parser
    b = bwf.read_bext(p)
    assert b is not None and b.time_reference == expected and b.version == 2
    assert b.originator == "unimoe-audio" and b.originator_reference == job.id[:32]
    assert b.description == "sting under the door slam" and b.coding_history.startswith(f"A=PCM,F={sr},W=24,M=stereo")
    # the loudness measured while normalizing, as the sidecar and the done result report it (bext keeps 0.01 LU)
    measured = json.loads(Path(res.sidecar).read_text())["output"]["loudness"]
    assert b.loudness_value == pytest.approx(res.loudness_lufs, abs=0.006)
    assert b.max_true_peak_level == pytest.approx(measured["true_peak_db"], abs=0.006) and b.max_true_peak_level <= -0.9
    ix = bwf.read_ixml(p)
    assert (ix["PROJECT"], ix["SCENE"], ix["TAKE"], ix["NOTE"]) == ("Feature", "12A", "3", "sting under the door slam")
    speed = ix["SPEED"]
    assert speed["TIMECODE_FLAG"] == flag and Fraction(speed["TIMECODE_RATE"]) == Fraction(fps)
    assert int(speed["TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_LO"]) + (int(speed["TIMESTAMP_SAMPLES_SINCE_MIDNIGHT_HI"]) << 32) \
        == expected and speed["TIMESTAMP_SAMPLE_RATE"] == str(sr)
    # an independent reader
    w = wavinfo.WavInfoReader(str(p))
    assert w.bext.time_reference == expected and w.bext.originator == "unimoe-audio"
    assert (w.ixml.project, w.ixml.scene, w.ixml.take) == ("Feature", "12A", "3")
    # ffprobe (libavformat's wav demuxer reads bext)
    tags = ffprobe_tags(p)
    assert tags["time_reference"] == str(expected) and tags["encoded_by"] == "unimoe-audio"
    # the audio itself is intact, the sidecar says where it sits
    assert wav_frames(p) == (round(0.5 * sr), sr, 2)
    assert json.loads(Path(res.sidecar).read_text())["output"]["time_reference"] == expected


def test_daemon_position_in_seconds_and_no_spot(client, daemon):
    out = daemon.home / "spot2"
    res = client.music("x", seconds=0.25, seed=2, folder=str(out), record_in="3600.5s").wait(timeout=300)
    assert bwf.read_bext(res.path).time_reference == 3600.5 * 48000
    assert "TIMECODE_RATE" not in bwf.read_ixml(res.path)["SPEED"]
    assert ffprobe_tags(Path(res.path))["time_reference"] == str(int(3600.5 * 48000))
    # no spot, no chunks: the file is exactly what it was before
    plain = client.music("x", seconds=0.25, seed=2, folder=str(out)).wait(timeout=300)
    assert set(bwf.read_chunks(plain.path)) == {b"fmt "}
    assert "time_reference" not in ffprobe_tags(Path(plain.path))
    # a malformed position is refused at submit, naming the field
    with pytest.raises(BadRequest) as e:
        client.music("x", seconds=0.25, record_in="00:00:00:99", fps=25)
    assert e.value.field == "spot"


def test_cli_flags_spot_and_frame_length(daemon, tmp_path):
    cli = [sys.executable, "-m", "unimoe_audio.client", "--no-start", "--json"]
    out = daemon.home / "cli" / "cue.wav"
    proc = subprocess.run([*cli, "music", "brass hit", "--frames", "12", "--fps", "24000/1001", "--record-in",
                           "01:00:10:00", "--project", "Feature", "--scene", "12A", "--take", "3", "--note", "hit",
                           "--seed", "4", "-o", str(out)], env=daemon.env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert wav_frames(out) == (24024, 48000, 2)  # 12 frames at 23.976 = 24024 samples exactly
    assert bwf.read_bext(out).time_reference == round(Fraction(86640 * 1001, 24000) * 48000)
    assert bwf.read_ixml(out)["TAKE"] == "3" and ffprobe_tags(out)["time_reference"] == str(
        round(Fraction(86640 * 1001, 24000) * 48000))
    # bad combinations exit 2 with the reason
    for args, why in ((["--frames", "12"], "--fps"), (["--fps", "25"], "--record-in or --frames"),
                      (["--record-in", "01:00:00:00"], "fps")):
        proc = subprocess.run([*cli, "music", "x", *args, "-o", str(tmp_path / "x.wav")], env=daemon.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and why in proc.stderr + proc.stdout, (args, proc.stderr, proc.stdout)


def test_cli_hands_score_timeline_to_the_integration(daemon, tmp_path):
    video = daemon.home / "v.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=2:size=96x64:rate=25",
                    "-pix_fmt", "yuv420p", str(video)], check=True)
    from unimoe_audio.integrations.timeline import write_edl

    edl = daemon.home / "cut.edl"
    edl.write_text(write_edl("cut", [(str(video), 0, 10, 90000, 90010)], 25))
    proc = subprocess.run([sys.executable, "-m", "unimoe_audio.client", "score-timeline", str(edl), "--rate", "25",
                           "--dry-run"], env=daemon.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["cues"][0]["record_in"] == "01:00:00:00" and plan["cues"][0]["expected_samples"] == 19200
    proc = subprocess.run([sys.executable, "-m", "unimoe_audio.client", "score-timeline", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "unimoe-audio score-timeline" in proc.stdout and "--marker" in proc.stdout


def test_batch_items_carry_timeline_fields(tmp_path):
    # a reel's cues as a batch file: frame lengths and record-ins pass through; a bad timecode is exit 2
    items = [{"task": "music", "caption": "a", "frames": 48, "fps": "24000/1001", "record_in": "01:00:02:00",
              "scene": "4", "take": "1", "output": "a.wav"},
             {"task": "music", "caption": "b", "seconds": 1, "record_in": "3600s", "note": "n", "output": "b.wav"}]
    f = tmp_path / "reel.json"
    f.write_text(json.dumps(items))
    proc = subprocess.run([sys.executable, "-m", "unimoe_audio.client", "batch", str(f), "--dry-run", "--json"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "UNIMOE_AUDIO_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    a, b = json.loads(proc.stdout)
    assert (a["record_in"], a["fps"], a["frames"], a["scene"]) == ("01:00:02:00", "24000/1001", 48, "4")
    assert b["record_in"] == "3600s" and b["note"] == "n"
    items[0]["record_in"] = "01:00:02:99"
    f.write_text(json.dumps(items))
    proc = subprocess.run([sys.executable, "-m", "unimoe_audio.client", "batch", str(f), "--dry-run"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "UNIMOE_AUDIO_HOME": str(tmp_path)})
    assert proc.returncode == 2 and "spot" in proc.stderr, proc.stderr


def test_osc_request_spots_its_file(daemon):
    """The same spotting over OSC (Max, TouchOSC): record_in + record_fps and the notes as key/value pairs."""
    import socket

    from pythonosc.osc_message import OscMessage

    from unimoe_audio.daemon import osc_server

    out = daemon.home / "spot-osc"
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(300)
    try:
        s.sendto(osc_server.build("/unimoe/music", [
            "door slam sting", "seconds", 0.5, "seed", 3, "folder", str(out), "record_in", "01:00:00:00",
            "record_fps", "24000/1001", "project", "Feature", "scene", "12A", "take", "4", "note", "osc"]),
            ("127.0.0.1", daemon.info.osc_port))
        while True:
            m = OscMessage(s.recvfrom(65536)[0])
            assert m.address not in ("/unimoe/error", "/unimoe/failed"), m.params
            if m.address == "/unimoe/done":
                path = Path(m.params[1])
                break
    finally:
        s.close()
    assert bwf.read_bext(path).time_reference == 172_972_800
    ix = bwf.read_ixml(path)
    assert (ix["PROJECT"], ix["SCENE"], ix["TAKE"], ix["NOTE"]) == ("Feature", "12A", "4", "osc")
