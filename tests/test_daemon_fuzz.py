"""Bounded fuzzing from outside: a few hundred malformed messages on each socket (ZeroMQ request and
control, OSC), one at a time. Each gets exactly one typed answer (a signed reply or ``error`` with a
documented code, never ``internal``), and the daemon is alive and answering afterwards.

Seeded (FUZZ_SEED to vary it), so a failure is reproducible. Real daemon, real sockets, no mocks.
"""
from __future__ import annotations

import json
import os
import random
import socket

import pytest
import zmq
from pythonosc.osc_message import OscMessage

from unimoe_audio.client import protocol as P
from unimoe_audio.client import wire
from unimoe_audio.daemon import osc_server

from _daemon_harness import DaemonProc

SEED = int(os.environ.get("FUZZ_SEED", "1313"))
PER_SOCKET = 300
LIMIT = 16 * 1024
# shutdown is left out: a well-formed one would (correctly) stop the daemon under test
TYPES = [t for t in P.REQUESTS if t != "shutdown"] + ["", "nope", "submit_reply", "error", "x" * 70]
OSC_REPLIES = {osc_server.OSC_ERROR, osc_server.OSC_PONG, osc_server.OSC_STATE, osc_server.OSC_CANCEL_REPLY, osc_server.OSC_CANCELLED}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = DaemonProc(tmp_path_factory.mktemp("home"), keep_alive=0, max_message_bytes=LIMIT, max_queue=4).start()
    yield d
    d.close()


def junk_value(rng: random.Random, depth: int = 0):
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.randint(-2**40, 2**40)
    if kind == 3:
        return rng.uniform(-1e9, 1e9)
    if kind == 4:
        return "".join(chr(rng.randrange(1, 0x2FF)) for _ in range(rng.randrange(0, 40)))
    if kind == 5:
        return rng.choice(["speech", "music", "video_score", "list", "add", "/etc/passwd", "../../x", "1.0"])
    if kind == 6:
        return [junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    keys = ["spec", "task", "text", "caption", "length", "seconds", "job_id", "action", "name", "output",
            "folder", "priority", "states", "limit", "request_id", "tag", "zz"]
    return {rng.choice(keys): junk_value(rng, depth + 1) for _ in range(rng.randrange(0, 5))}


def junk_header(rng: random.Random, msg_type: str) -> dict:
    h = {"msg_id": wire.new_id(), "msg_type": msg_type, "protocol_version": P.PROTOCOL_VERSION, "session": "fz",
         "date": P.now_iso()}
    for _ in range(rng.randrange(0, 3)):
        field = rng.choice(list(h) + ["parent_id", "extra"])
        if rng.random() < 0.3:
            h.pop(field, None)
        else:
            h[field] = junk_value(rng)
    return h


def malformed(rng: random.Random, key: str) -> tuple[list[bytes], str | None]:
    """Frames of one malformed (or merely odd) request, and the msg_id a reply should name, if any."""
    kind = rng.randrange(9)
    msg_type = rng.choice(TYPES)
    if kind == 0:  # no protocol frame at all
        return [rng.randbytes(rng.randrange(0, 64)) for _ in range(rng.randrange(1, 5))], None
    if kind == 1:  # wrong frame count
        return [P.IDENT] + [rng.randbytes(rng.randrange(0, 32)) for _ in range(rng.choice([0, 1, 2, 4, 5]))], None
    h = junk_header(rng, msg_type) if kind == 2 else {
        "msg_id": wire.new_id(), "msg_type": msg_type, "protocol_version": P.PROTOCOL_VERSION, "session": "fz",
        "date": P.now_iso()}
    hb = json.dumps(h).encode()
    if kind == 3:  # not JSON / not UTF-8 / NaN / deep nesting
        cb = rng.choice([b"{", b"\xff\xfe{}", b'{"a": NaN}', b'{"a": Infinity}', b"[" * 5000,
                         b'{"a":' * 3000 + b"1" + b"}" * 3000, rng.randbytes(40)])
    elif kind == 4:  # JSON that is not an object
        cb = json.dumps(junk_value(rng)).encode() if rng.random() < 0.5 else b"[]"
    elif kind == 5:  # too large (1x-4x: answered)
        cb = json.dumps({"pad": "x" * rng.randrange(LIMIT, 3 * LIMIT)}).encode()
    elif kind == 6:  # schema junk
        v = junk_value(rng)
        cb = json.dumps(v if isinstance(v, dict) else {"x": v}).encode()
    elif kind == 7:
        cb = json.dumps({"spec": junk_value(rng), "job_id": junk_value(rng)}).encode()
    else:  # a nearly right submit, always with one unknown field
        cb = json.dumps({"spec": {"task": "music", "caption": junk_value(rng), "length": junk_value(rng)},
                         "zz": junk_value(rng)}).encode()
    sig = wire.sign(key, hb, cb)
    if rng.random() < 0.15:  # bad or missing signature
        sig = rng.choice([b"", sig[:-1] + b"0" if sig[-1:] != b"0" else sig[:-1] + b"1", b"zz"])
    mid = h.get("msg_id") if isinstance(h.get("msg_id"), str) else None
    return [P.IDENT, sig, hb, cb], mid


def check_reply(frames: list[bytes], key: str, sent_type: str) -> wire.Message:
    msg = wire.deserialize(frames, key=key.encode())  # signed with the session key
    if msg.msg_type == "error":
        err = P.ErrorReply.model_validate(msg.content)
        assert err.code in P.ERROR_CODES and err.code != "internal", err
    else:
        assert msg.msg_type == P.reply_type(sent_type), (sent_type, msg.msg_type)
        P.parse_reply(msg.msg_type, msg.content)
    return msg


@pytest.mark.parametrize("which", ["request", "control"])
def test_zeromq_fuzz_one_typed_reply_each(daemon, which):
    rng = random.Random(f"{SEED}-{which}")
    key = daemon.info.key
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(daemon.info.endpoint(which))
    codes: dict[str, int] = {}
    try:
        for i in range(PER_SOCKET):
            frames, mid = malformed(rng, key)
            sent_type = json.loads(frames[2]).get("msg_type") if len(frames) == 4 and frames[0] == P.IDENT else None
            sock.send_multipart(frames)
            assert sock.poll(60_000), f"message {i} got no reply: {frames[:3]!r}"
            msg = check_reply(sock.recv_multipart(), key, sent_type if isinstance(sent_type, str) else "")
            if mid is not None and msg.msg_type == "error" and msg.content["code"] not in ("bad_signature",):
                assert msg.header.parent_id in (mid, None)
            codes[msg.content.get("code", msg.msg_type)] = codes.get(msg.content.get("code", msg.msg_type), 0) + 1
            assert not sock.poll(0), f"message {i} got more than one reply"
    finally:
        sock.close(0)
    assert len(codes) >= 4, codes  # the generator really reached several kinds of refusal
    assert daemon.proc.poll() is None
    with daemon.channel(timeout=60) as ch:
        assert ch.request("ping", control=True)["pid"] == daemon.proc.pid
        assert ch.request("status")["state"] in ("idle", "loading", "ready", "busy", "unloaded")


def osc_junk(rng: random.Random) -> bytes:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 80))
    if kind == 1:  # an OSC-looking header with a lying type tag string
        return b"/unimoe/music\x00\x00\x00,ifs\x00\x00\x00\x00" + rng.randbytes(rng.randrange(0, 12))
    address = rng.choice(list(osc_server.OSC_REQUESTS) + ["/unimoe/nope", "/other", "/unimoe/"])
    args: list = []
    if address in (osc_server.OSC_SPEECH, osc_server.OSC_MUSIC, osc_server.OSC_VIDEO_SCORE, osc_server.OSC_CANCEL) and rng.random() < 0.7:
        args.append(rng.choice(["calm", 3, 2.5, "", "/etc/passwd"]))
    for _ in range(rng.randrange(0, 4)):
        args += [rng.choice(["seconds", "seed", "voice", "normalize", "tag", "zz", "fps", "priority",
                             "temperature", 7]),
                 rng.choice([float("nan"), float("inf"), -1.0, 1e9, 0, 3, "x", "24000/1001", True, b"\x00\x01"])]
    if address in (osc_server.OSC_SPEECH, osc_server.OSC_MUSIC, osc_server.OSC_VIDEO_SCORE):
        args.append("zz-unknown-key")  # always one defect: the fuzz must not queue real jobs
        args.append(rng.choice([1, "x"]))
    b = osc_server.OscMessageBuilder(address=address)
    for a in args:
        if isinstance(a, bool):
            b.add_arg(a)
        elif isinstance(a, bytes):
            b.add_arg(a, "b")
        elif isinstance(a, int):
            b.add_arg(a, "i")
        elif isinstance(a, float):
            b.add_arg(a, "f")
        else:
            b.add_arg(a, "s")
    dgram = b.build().dgram
    if kind == 5:  # truncated
        dgram = dgram[: rng.randrange(0, len(dgram) + 1)]
    return dgram


def test_osc_fuzz_one_typed_reply_each(daemon):
    rng = random.Random(f"{SEED}-osc")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(60)
    to = ("127.0.0.1", daemon.info.osc_port)
    seen: dict[str, int] = {}
    try:
        for i in range(PER_SOCKET):
            dgram = osc_junk(rng)
            s.sendto(dgram, to)
            try:
                reply = OscMessage(s.recvfrom(65536)[0])
            except socket.timeout:
                raise AssertionError(f"datagram {i} got no reply: {dgram!r}") from None
            assert reply.address in OSC_REPLIES, (dgram, reply.address)
            if reply.address == osc_server.OSC_ERROR:
                code = reply.params[0]
                assert code in P.ERROR_CODES and code != "internal", (dgram, reply.params)
            seen[reply.address] = seen.get(reply.address, 0) + 1
            s.settimeout(0.05)
            try:
                extra = s.recvfrom(65536)[0]
                raise AssertionError(f"datagram {i} got a second reply: {OscMessage(extra).address}")
            except socket.timeout:
                pass
            finally:
                s.settimeout(60)
        assert seen.get(osc_server.OSC_ERROR, 0) > PER_SOCKET // 2, seen
        s.sendto(osc_server.build(osc_server.OSC_PING, []), to)
        assert OscMessage(s.recvfrom(65536)[0]).address == osc_server.OSC_PONG
    finally:
        s.close()
    assert daemon.proc.poll() is None
    assert "Traceback" not in daemon.log()


def test_no_internal_errors_logged(daemon):
    """Runs last in this file: none of the fuzz above reached the catch-all handlers."""
    log = daemon.log()
    assert " failed\n" not in log and "RecursionError" not in log and "Traceback" not in log
