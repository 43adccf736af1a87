"""The wire schema and framing on their own (no daemon): one definition, strict requests, typed errors."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from unimoe_audio.client import protocol as P
from unimoe_audio.client import channel, connection, wire


def test_client_modules_stay_light():
    # protocol/wire must import without torch or numpy (embedded Pythons of Blender and REAPER).
    code = ("import sys; import unimoe_audio.client.protocol, unimoe_audio.client.wire; "
            "bad = [m for m in ('torch', 'numpy', 'unimoe_audio.model', 'unimoe_audio.daemon') if m in sys.modules]; "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_every_request_has_a_reply_type():
    for name in P.REQUESTS:
        assert P.reply_type(name) in P.REPLIES
    assert P.CONTROL_REQUESTS <= set(P.REQUESTS)


def test_submit_defaults_and_round_trip():
    req = P.parse_request("submit", {"spec": {"task": "music", "caption": "calm piano", "length": {"seconds": 2}}})
    assert isinstance(req, P.SubmitRequest) and isinstance(req.spec, P.MusicTask)
    assert req.priority == 0 and req.output.normalize and req.stream_partial is False
    again = P.parse_request("submit", P.dump(req))
    assert again == req
    video = P.parse_request("submit", {"spec": {"task": "video_score", "video": "/tmp/v.mp4", "in_seconds": 1,
                                                 "out_seconds": 3, "length": {"frames": 48, "fps": "24000/1001"}}})
    assert video.spec.length.target_seconds() == pytest.approx(48 * 1001 / 24000)


@pytest.mark.parametrize(
    "content, code, field",
    [
        ({"spec": {"task": "music", "caption": "x", "length": {"seconds": "long"}}}, "invalid_input", "spec.length.seconds"),
        ({"spec": {"task": "music", "caption": "x", "length": {"seconds": 9999}}}, "invalid_input", "spec.length.seconds"),
        ({"spec": {"task": "music"}}, "invalid_input", "spec.caption"),
        ({"spec": {"task": "dance", "caption": "x"}}, "invalid_input", "spec.task"),
        ({"spec": {"task": "music", "caption": "x"}, "colour": "red"}, "invalid_input", "colour"),
        ({"spec": {"task": "music", "caption": "x"}, "priority": "high"}, "invalid_input", "priority"),
        ({"spec": {"task": "music", "caption": "x"}, "output": {"name": "../../etc/passwd"}}, "invalid_input", "output.name"),
        ({"spec": {"task": "music", "caption": "x"}, "output": {"bit_depth": 12}}, "invalid_input", "output.bit_depth"),
        ({"spec": {"task": "music", "caption": "x", "length": {"frames": 10}}}, "invalid_input", "spec.length"),
        ({"spec": {"task": "speech", "text": "hi", "reference_audio": "/tmp/a.wav"}}, "invalid_input", "spec"),
        ({"spec": {"task": "video_score", "video": "/v.mp4", "in_seconds": 5, "out_seconds": 2}}, "invalid_input", "spec"),
        ([1, 2], "invalid_input", "content"),
    ],
)
def test_bad_submit_names_the_field(content, code, field):
    with pytest.raises(P.ProtocolError) as ei:
        P.parse_request("submit", content)
    assert ei.value.code == code
    assert ei.value.field == field
    assert ei.value.message


def test_unknown_type_and_version():
    with pytest.raises(P.ProtocolError) as ei:
        P.parse_request("launch_rockets", {})
    assert ei.value.code == "unknown_type" and ei.value.field == "msg_type"
    P.check_version("1.7")
    with pytest.raises(P.ProtocolError) as ei:
        P.check_version("2.0")
    assert ei.value.code == "version_mismatch"


def test_replies_and_events_tolerate_new_fields():
    r = P.parse_reply("submit_reply", {"job_id": "abc", "position": 3, "from_the_future": True})
    assert r.job_id == "abc" and r.position == 3
    e = P.parse_event("progress", {"job_id": "abc", "seq": 4, "fraction": 0.5, "stage": "generate", "new": 1})
    assert e.fraction == 0.5


def test_frames_signed_and_verified():
    key = wire.new_key().encode()
    frames, header = wire.serialize("ping", {}, key=key, session="s1")
    assert frames[0] == P.IDENT and len(frames) == 4
    msg = wire.deserialize([b"router-id", *frames], key=key)
    assert msg.envelope == [b"router-id"] and msg.msg_type == "ping" and msg.header.msg_id == header.msg_id
    # unsigned, wrongly keyed, tampered
    for bad, code in [
        ([frames[0], b"", frames[2], frames[3]], "bad_signature"),
        (wire.serialize("ping", {}, key=b"other")[0], "bad_signature"),
        ([frames[0], frames[1], frames[2], b'{"x": 1}'], "bad_signature"),
        ([frames[0], frames[1], frames[2]], "bad_message"),
        ([b"hello", b"world"], "bad_message"),
    ]:
        with pytest.raises(wire.WireError) as ei:
            wire.deserialize(bad, key=key)
        assert ei.value.code == code
    with pytest.raises(wire.WireError) as ei:
        wire.deserialize(frames, key=key, max_bytes=10)
    assert ei.value.code == "too_large"


def test_not_json_and_wrong_version_are_typed():
    key = b"k"
    hb, cb = b"{not json", b"{}"
    with pytest.raises(wire.WireError) as ei:
        wire.deserialize([P.IDENT, wire.sign(key, hb, cb), hb, cb], key=key)
    assert ei.value.code == "bad_message" and ei.value.field == "header"
    hb = json.dumps({"msg_id": "1", "msg_type": "ping", "protocol_version": "9.0"}).encode()
    with pytest.raises(wire.WireError) as ei:
        wire.deserialize([P.IDENT, wire.sign(key, hb, cb), hb, cb], key=key)
    assert ei.value.code == "version_mismatch"


def test_connection_file_is_private(tmp_path):
    info = connection.ConnectionInfo(request_port=1, control_port=2, events_port=3, key=wire.new_key(), pid=os.getpid())
    path = tmp_path / "run" / "daemon.json"
    connection.write_connection_file(path, info)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert connection.read_connection_file(path) == info
    assert info.endpoint("request") == "tcp://127.0.0.1:1"
    os.chmod(path, 0o644)
    with pytest.raises(wire.WireError):
        connection.read_connection_file(path)
    assert not connection.remove_connection_file(path, pid=os.getpid() + 1)
    assert connection.remove_connection_file(path, pid=os.getpid())
    with pytest.raises(wire.DaemonNotRunning):
        connection.read_connection_file(path)


def test_channel_times_out_without_daemon():
    info = connection.ConnectionInfo(request_port=channel.free_port(), control_port=channel.free_port(),
                               events_port=channel.free_port(), key=wire.new_key())
    with channel.Channel(info, timeout=0.3) as ch:
        with pytest.raises(wire.ReplyTimeout):
            ch.request("ping")


def test_curve_allow_keeps_z85_keys_with_colons(monkeypatch):
    from unimoe_audio.client.settings import load_settings

    keys = ["rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"]
    monkeypatch.setenv("UNIMOE_AUDIO_CURVE_ALLOW", ",".join(keys))
    monkeypatch.setenv("UNIMOE_AUDIO_ALLOWED_ROOTS", "/a:/b")
    s = load_settings()
    assert s.curve_allow == keys and [str(p) for p in s.allowed_roots] == ["/a", "/b"]
