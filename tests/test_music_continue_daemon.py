"""`music --continue / --loop` through the CLI and OSC against a real daemon on the tiny model: the written
file keeps the original's samples, lengths are exact, --new-only butts on, loops wrap, errors name fields."""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from _client_harness import cli  # noqa: E402
from test_music_continue import music_clip  # noqa: E402

from unimoe_audio.daemon import osc_server  # noqa: E402
from unimoe_audio.model import splice  # noqa: E402

pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def daemon(cli_daemon):
    return cli_daemon


@pytest.fixture(scope="module")
def take(daemon):
    path = daemon.home / "takes" / "take.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, music_clip(path, 2.5, 48000, 2, "PCM_24")


def ints(path: Path) -> np.ndarray:
    return sf.read(str(path), dtype="int32", always_2d=True)[0]


def test_continue_keeps_the_take_and_new_only_butts_on(daemon, take):
    clip, original = take
    out = daemon.home / "out" / "extended.wav"
    r = cli(daemon.env, "music", "warm strings", "--continue", str(clip), "--seconds", "1.5", "--seed", "4",
            "-o", str(out), "--json").ok()
    data = r.json()
    assert (data["sample_rate"], data["channels"], data["bit_depth"]) == (48000, 2, 24)
    full = ints(out)
    j = int(2.5 * 48000)
    assert full.shape == (j + int(1.5 * 48000), 2)
    np.testing.assert_array_equal(full[:j], original[:j])  # the take, bit for bit, no gain
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["output"]["splice"]["join_samples"] == j and side["output"]["fit_length"] is False
    assert side["output"]["loudness_lufs"] is None  # no normalization over the editor's audio

    new = daemon.home / "out" / "new.wav"
    cli(daemon.env, "music", "warm strings", "--continue", str(clip), "--seconds", "1.5", "--seed", "4",
        "-o", str(new), "--new-only").ok()
    np.testing.assert_array_equal(np.concatenate([original[:j], ints(new)]), full)


def test_to_seconds_and_a_loop_on_the_grid(daemon, take):
    clip, original = take
    out = daemon.home / "out" / "to.wav"
    cli(daemon.env, "music", "warm strings", "--continue", str(clip), "--from", "2", "--to-seconds", "3.25",
        "-o", str(out)).ok()
    full = ints(out)
    assert full.shape[0] == int(3.25 * 48000)
    np.testing.assert_array_equal(full[:96000], original[:96000])

    loop = daemon.home / "out" / "loop.wav"
    cli(daemon.env, "music", "drum groove", "--loop", "--bars", "1", "--tempo", "120", "-o", str(loop),
        "--sample-rate", "44100").ok()
    x, rate = sf.read(str(loop), dtype="float32", always_2d=True)
    assert rate == 44100 and x.shape[0] == 88200  # one bar at 120 BPM, exactly
    jump, p99 = splice.wrap_jump(x.T)
    assert jump <= p99
    first, last = splice.beat_loudness(x.T, rate, 0.5)
    assert abs(first - last) <= 1.0


@pytest.mark.parametrize("args, field", [
    (["--from", "9", "--seconds", "1"], "continue_from"),
    (["--to-seconds", "2"], "to_seconds"),
])
def test_bad_continue_inputs_name_the_field(daemon, take, args, field):
    clip, _ = take
    r = cli(daemon.env, "music", "x", "--continue", str(clip), *args, "-o", str(daemon.home / "out" / "bad.wav"))
    assert r.code != 0 and field in r.err, r.err


def test_not_audio_short_clip_and_short_loop_are_refused(daemon, tmp_path):
    notes = daemon.home / "takes" / "notes.wav"
    notes.write_text("not samples\n")
    r = cli(daemon.env, "music", "x", "--continue", str(notes), "--seconds", "1")
    assert r.code != 0 and "continue_audio" in r.err and "not audio" in r.err, r.err
    short = daemon.home / "takes" / "short.wav"
    music_clip(short, 0.5, 48000, 1, "PCM_16")
    r = cli(daemon.env, "music", "x", "--continue", str(short), "--seconds", "1")
    assert r.code != 0 and "continue_audio" in r.err and "shorter than 1 s" in r.err, r.err
    r = cli(daemon.env, "music", "x", "--loop", "--seconds", "1")
    assert r.code != 0 and "shorter than one bar" in r.err, r.err


def test_osc_takes_the_file_and_options(daemon, take):
    clip, original = take
    port = daemon.info.osc_port if hasattr(daemon, "info") else json.loads(
        cli(daemon.env, "status", "--json").ok().out)["osc_port"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(600)
    try:
        s.sendto(osc_server.build("/unimoe/music", ["warm strings", "continue", str(clip), "seconds", 1.0,
                                                   "new_only", 1, "seed", 4, "reply_port", s.getsockname()[1]]),
                 ("127.0.0.1", port))
        from pythonosc.osc_message import OscMessage

        while True:
            m = OscMessage(s.recvfrom(65536)[0])
            if m.address in ("/unimoe/done", "/unimoe/failed", "/unimoe/error"):
                break
    finally:
        s.close()
    assert m.address == "/unimoe/done", m.params
    path = Path(m.params[1])
    assert ints(path).shape[0] == 48000  # only the new second
