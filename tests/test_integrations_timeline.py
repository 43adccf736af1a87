"""Timeline maths: rational rates, timecode (incl. drop-frame), exact samples, the CMX3600 reader."""
from __future__ import annotations

import struct
from fractions import Fraction

import pytest

from unimoe_audio.integrations.timeline import (
    frames_to_seconds, frames_to_timecode, nominal_fps, parse_edl, parse_rate, parse_timecode, rate_string,
    samples_for_frames, sample_position, to_frames, wav_frames, write_edl,
)

NTSC = Fraction(30000, 1001)


@pytest.mark.parametrize("spelling,exact", [
    ("24000/1001", Fraction(24000, 1001)), ("23.976", Fraction(24000, 1001)), ("29.97", NTSC),
    ("30000/1001", NTSC), ("59.94", Fraction(60000, 1001)), ("25", Fraction(25)), (25, Fraction(25)),
    (24 / 1.001, Fraction(24000, 1001)), (30 / 1.0010000467300415, NTSC), ("12.5", Fraction(25, 2)),
])
def test_parse_rate(spelling, exact):
    assert parse_rate(spelling) == exact


@pytest.mark.parametrize("bad", ["0", "-25", "abc", "25/0", float("nan"), True])
def test_parse_rate_rejects(bad):
    with pytest.raises(ValueError):
        parse_rate(bad)


def test_exact_samples_at_48k():
    # one frame at 23.976 is exactly 2002 samples; an hour of 29.97 NDF frames is 3600.0036 s
    assert samples_for_frames(1, "24000/1001") == 2002
    assert samples_for_frames(24, "24000/1001") == 48048
    assert samples_for_frames(25, 25) == 48000
    assert frames_to_seconds(30, NTSC) == Fraction(1001, 1000)
    assert samples_for_frames(30, NTSC) == 48048
    assert samples_for_frames(1, NTSC) == 1602  # 1601.6 rounds up
    assert samples_for_frames(2, NTSC) == 3203  # 3203.2
    assert samples_for_frames(5, NTSC) == 8008  # exact again every 5 frames
    # positions tile: the sum of consecutive durations equals the position difference when exact
    assert sample_position(10, NTSC) - sample_position(5, NTSC) == samples_for_frames(5, NTSC)
    assert rate_string("29.97") == "30000/1001" and rate_string(25) == "25"


def test_non_drop_timecode():
    assert parse_timecode("01:00:00:00", 25) == 90000
    assert parse_timecode("00:00:01:12", "24000/1001") == 36
    assert frames_to_timecode(36, "24000/1001") == "00:00:01:12"
    assert nominal_fps("24000/1001") == 24
    with pytest.raises(ValueError, match="frame 25"):
        parse_timecode("00:00:00:25", 25)
    with pytest.raises(ValueError, match="drop-frame"):
        parse_timecode("00:00:00;10", 25)


def test_drop_frame_timecode():
    # the classic checkpoints of 29.97 DF
    assert parse_timecode("00:01:00;02", NTSC) == 1800
    assert parse_timecode("00:00:59;29", NTSC) == 1799
    assert parse_timecode("00:10:00;00", NTSC) == 17982
    assert parse_timecode("01:00:00;00", NTSC) == 107892
    assert frames_to_timecode(1800, NTSC) == "00:01:00;02"
    assert frames_to_timecode(17982, NTSC) == "00:10:00;00"
    assert frames_to_timecode(107892, NTSC) == "01:00:00;00"
    with pytest.raises(ValueError, match="dropped"):
        parse_timecode("00:01:00;00", NTSC)
    # round trip over 11 minutes at 29.97 and 59.94 DF
    for rate in (NTSC, Fraction(60000, 1001)):
        for n in range(0, int(11 * 60 * 60), 7):
            assert parse_timecode(frames_to_timecode(n, rate), rate) == n
    # an hour of DF timecode is an hour of wall clock, within 3.6 ms
    assert abs(float(frames_to_seconds(parse_timecode("01:00:00;00", NTSC), NTSC)) - 3600) < 0.004


def test_to_frames_forms():
    assert to_frames("48", 24) == 48
    assert to_frames("2s", 24) == 48
    assert to_frames(2.0, 24) == 48
    assert to_frames("00:00:02:00", 24) == 48
    with pytest.raises(ValueError):
        to_frames("soon", 24)


EDL = """TITLE: reel one
FCM: DROP FRAME

001  AX       V     C        00:00:01;00 00:00:03;00 01:00:00;00 01:00:02;00
* FROM CLIP NAME: a.mov
* SOURCE FILE: /media/a.mov
002  BL       V     C        00:00:00;00 00:00:01;00 01:00:02;00 01:00:03;00
003  AX       A     C        00:00:00;00 00:00:01;00 01:00:02;00 01:00:03;00
* FROM CLIP NAME: music.wav
004  CAM2     V     D    015 00:10:00;00 00:10:04;00 01:00:03;00 01:00:07;00
* FROM CLIP NAME: b.mov
"""


def test_parse_edl():
    edl = parse_edl(EDL, "29.97")
    assert edl.title == "reel one" and edl.drop and edl.rate == NTSC
    a, bl, aud, b = edl.events
    assert (a.number, a.reel, a.track, a.transition) == (1, "AX", "V", "C")
    assert a.source_file == "/media/a.mov" and a.clip_name == "a.mov"
    assert a.rec_in == 107892 and a.frames == 60 and a.src_in == 30
    assert a.seconds == Fraction(60) / NTSC
    assert a.samples() == 96096
    assert bl.is_black and not aud.is_video
    assert b.transition == "D" and b.transition_frames == 15 and b.source_name() == "b.mov"
    assert b.src_in == parse_timecode("00:10:00;00", NTSC) and b.frames == 120
    assert b.tc(b.rec_in) == "01:00:03;00"


def test_parse_edl_errors_name_the_line():
    with pytest.raises(ValueError, match="line 2"):
        parse_edl("TITLE: x\n001  AX  V  C  00:00:00:00 00:00:01:00 00:00:05:00 00:00:04:00\n", 25)
    with pytest.raises(ValueError, match="line 2"):
        parse_edl("TITLE: x\n001  AX  V  C  00:00:00:00 00:00:01:99 00:00:05:00 00:00:06:00\n", 25)


def test_write_edl_round_trip():
    text = write_edl("t", [("/m/x.mov", 0, 48, 86400, 86448), ("/m/y.mov", 10, 20, 86448, 86458)], 24)
    edl = parse_edl(text, 24)
    assert [(e.source_file, e.src_in, e.src_out, e.rec_in, e.rec_out) for e in edl.events] == [
        ("/m/x.mov", 0, 48, 86400, 86448), ("/m/y.mov", 10, 20, 86448, 86458)]


def test_wav_frames_reads_extensible_header(tmp_path):
    # a 24-bit stereo WAVE_FORMAT_EXTENSIBLE file, which the stdlib wave module of 3.11 refuses
    n, ch, sr = 1234, 2, 48000
    data = b"\x00" * (n * ch * 3)
    fmt = struct.pack("<HHIIHHHHIH14s", 0xFFFE, ch, sr, sr * ch * 3, ch * 3, 24, 22, 24, 3, 1, b"\x00" * 14)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"LIST" + struct.pack("<I", 3) + b"abc\x00" + \
        b"data" + struct.pack("<I", len(data)) + data
    p = tmp_path / "x.wav"
    p.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert wav_frames(p) == (n, sr, ch)
    (tmp_path / "bad.wav").write_bytes(b"nope")
    with pytest.raises(ValueError):
        wav_frames(tmp_path / "bad.wav")


def test_vision_fps_keeps_at_least_two_frames():
    from unimoe_audio.integrations.timeline import vision_fps

    assert vision_fps(10) == 1.0 and vision_fps(2) == 1.0
    assert vision_fps(0.5) == 4.0 and vision_fps(12 * 1001 / 24000) >= 2 / (12 * 1001 / 24000)
    assert vision_fps(0.01) == 30.0 and vision_fps(0) == 1.0


def test_drop_frame_header_at_23976_reads_as_non_drop():
    # some editors head 23.976 EDLs with FCM: DROP FRAME (and may even write ';'): no drop-frame count
    # exists at 24 nominal, so the timecode is read as non-drop, and the Edl says so
    text = ("TITLE: df at 23.976\nFCM: DROP FRAME\n\n"
            "001  AX       V     C        00:00:01:00 00:00:02:00 01:00:00:00 01:00:01:00\n"
            "002  AX       V     C        00:10:00;00 00:10:00;12 01:00:01;00 01:00:01;12\n")
    edl = parse_edl(text, "23.976")
    assert not edl.drop and len(edl.warnings) == 1 and "non-drop" in edl.warnings[0] and "line 2" in edl.warnings[0]
    a, b = edl.events
    assert a.rec_in == 86400 and a.frames == 24 and a.samples() == 48048 and not a.drop
    assert b.src_in == 600 * 24 and b.rec_in == 86424 and b.frames == 12 and b.samples() == 24024
    assert b.tc(b.rec_in) == "01:00:01:00"
    # at 29.97 the same header means real drop-frame, without a warning
    edl = parse_edl(text.replace(":00 00:00:02:00 01:00:00:00 01:00:01:00", ";00 00:00:02;00 01:00:00;00 01:00:01;00"),
                    "29.97")
    assert edl.drop and not edl.warnings and edl.events[0].rec_in == 107892
    # without the header, a ';' at 25 fps is still an error naming the line
    with pytest.raises(ValueError, match="line 1"):
        parse_edl("001  AX  V  C  00:00:00;00 00:00:01;00 00:00:05;00 00:00:06;00\n", 25)
