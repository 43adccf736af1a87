"""Protocol and daemon edges found by driving the daemon from outside (issue #13): deep JSON, oversized
frames, header types, replayed submits (request_id), cancel of a finished job over ZeroMQ and OSC, OSC
argument types, stale temp files and folder modes at start, the default OSC port taken, zombie pids.

Real daemon processes on the tiny model, real sockets on 127.0.0.1, real files. No mocks.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest
import zmq
from pythonosc.osc_message import OscMessage

from unimoe_audio.client import protocol as P
from unimoe_audio.client import connection, wire
from unimoe_audio.client.client import Client
from unimoe_audio.client.settings import Settings
from unimoe_audio.daemon import osc_server

from _daemon_harness import DaemonProc, music, wait_final, wait_for

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache folder for every daemon of this file: the tiny model is built once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory, cache):
    home = tmp_path_factory.mktemp("home")
    d = DaemonProc(home, keep_alive=0, max_message_bytes=LIMIT, cache_dir=cache).start()
    yield d
    d.close()


@pytest.fixture
def ch(daemon):
    return daemon.channel(timeout=30)


class Raw:
    """A DEALER that sends frames exactly as given and reads the reply frames (outside-client view)."""

    def __init__(self, endpoint: str):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(endpoint)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def reply(self, timeout: float = 30) -> wire.Message | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        return wire.deserialize(self.sock.recv_multipart(), key=None, check_signature=False)

    def close(self) -> None:
        self.sock.close(0)


def signed(key: str, header: dict | bytes, content: dict | bytes) -> list[bytes]:
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    cb = content if isinstance(content, bytes) else json.dumps(content).encode()
    return [P.IDENT, wire.sign(key, hb, cb), hb, cb]


def header(msg_type: str = "ping", **kw) -> dict:
    h = {"msg_id": wire.new_id(), "msg_type": msg_type, "protocol_version": P.PROTOCOL_VERSION, "session": "s",
         "date": P.now_iso()}
    h.update(kw)
    return {k: v for k, v in h.items() if v is not ...}


@pytest.fixture
def raw(daemon):
    r = Raw(daemon.info.endpoint("request"))
    yield r
    r.close()


def osc_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(60)
    return s


JOB_EVENTS = {"/unimoe/started", "/unimoe/progress", "/unimoe/partial", "/unimoe/done", "/unimoe/failed",
              "/unimoe/cancelled", "/unimoe/requeued"}


def osc_ask(s: socket.socket, port: int, address: str, *args) -> tuple[str, list]:
    """Send one message and return the daemon's answer to it; events of jobs queued earlier from this socket
    (a loaded machine can run a short job between two asks) are passed over."""
    s.sendto(osc_server.build(address, list(args)), ("127.0.0.1", port))
    while True:
        m = OscMessage(s.recvfrom(65536)[0])
        if m.address not in JOB_EVENTS:
            return m.address, list(m.params)


# -- framing ----------------------------------------------------------------------------------------------------
def test_deeply_nested_json_is_bad_message(daemon, raw):
    deep = ("[" * 3000 + "]" * 3000).encode()
    for content in (b'{"x": ' + deep + b"}", deep):
        with pytest.raises(wire.WireError) as ei:
            wire.deserialize(signed(daemon.info.key, header(), content), key=daemon.info.key)
        assert ei.value.code == "bad_message" and ei.value.field == "content"
        h = header()
        raw.send(signed(daemon.info.key, h, content))
        rep = raw.reply()
        assert rep is not None and rep.msg_type == "error", rep
        assert rep.content["code"] == "bad_message" and rep.content["field"] == "content"
        assert rep.header.parent_id == h["msg_id"]
    deep_header = b'{"msg_id": "a", "x": ' + deep + b"}"
    raw.send(signed(daemon.info.key, deep_header, b"{}"))
    rep = raw.reply()
    assert rep.content["code"] == "bad_message" and rep.content["field"] == "header"
    assert "RecursionError" not in daemon.log()


def test_oversized_frames_are_too_large(daemon, raw, ch):
    # between 1x and 4x the limit: the daemon answers
    h = header()
    raw.send(signed(daemon.info.key, h, {"pad": "x" * (2 * LIMIT)}))
    rep = raw.reply()
    assert rep.content["code"] == "too_large" and rep.header.parent_id == h["msg_id"]
    # over 4x: ZeroMQ drops the connection, no reply (documented); the DEALER reconnects by itself
    raw.send(signed(daemon.info.key, header(), {"pad": "x" * (5 * LIMIT)}))
    assert raw.reply(timeout=3) is None
    sent: list[str] = []
    for _ in range(100):  # a ping queued on the dropped connection is lost with it: send again
        h = header()
        sent.append(h["msg_id"])
        raw.send(signed(daemon.info.key, h, {}))
        rep = raw.reply(timeout=3)
        if rep is not None:
            break
    assert rep is not None and rep.msg_type == "ping_reply" and rep.header.parent_id in sent
    # any size over the limit, through the client: the same typed error, before anything is sent
    assert ch.info.max_message_bytes == LIMIT
    for size in (2 * LIMIT, 5 * LIMIT, 40 * LIMIT):
        with pytest.raises(wire.WireError) as ei:
            ch.request("submit", music(1.0, tag="x" * 10, spec={"task": "music", "caption": "y" * size}))
        assert ei.value.code == "too_large"
    assert ch.request("ping")["pid"] == daemon.proc.pid


def test_header_fields_are_required_and_typed(daemon, raw):
    key = daemon.info.key
    cases = [
        (header(protocol_version=...), "header.protocol_version"),
        (header(msg_id=...), "header.msg_id"),
        (header(date="yesterday"), "header.date"),
        (header(date=1700000000), "header.date"),
        (header(date="2026-01-02T03:04:05"), "header.date"),  # no time zone
        (header(session=7), "header.session"),
        (header(msg_id=12), "header.msg_id"),
        (header(parent_id=["x"]), "header.parent_id"),
    ]
    for h, field in cases:
        raw.send(signed(key, h, {}))
        rep = raw.reply()
        assert rep.msg_type == "error" and rep.content["code"] == "bad_message", (h, rep.content)
        assert rep.content["field"] == field, (h, rep.content)
        assert rep.content.get("wanted")
    raw.send(signed(key, header(protocol_version="2.0"), {}))
    assert raw.reply().content["code"] == "version_mismatch"
    h = header(date="2026-01-02T03:04:05.678+01:00")
    raw.send(signed(key, h, {}))
    rep = raw.reply()
    assert rep.msg_type == "ping_reply" and rep.header.parent_id == h["msg_id"]


def test_nan_in_json_is_bad_message(daemon, raw):
    raw.send(signed(daemon.info.key, header("submit"),
                    b'{"spec": {"task": "music", "caption": "c", "length": {"seconds": NaN}}}'))
    rep = raw.reply()
    assert rep.content["code"] == "bad_message" and rep.content["field"] == "content"


def test_req_socket_clients_work_with_their_empty_first_frame(daemon):
    """A REQ socket puts an empty delimiter frame before ours; the daemon keeps it in the reply."""
    req = zmq.Context.instance().socket(zmq.REQ)
    req.linger = 0
    req.connect(daemon.info.endpoint("control"))
    try:
        frames, h = wire.serialize("ping", {}, key=daemon.info.key)
        req.send_multipart(frames)
        assert req.poll(30_000)
        msg = wire.deserialize(req.recv_multipart(), key=daemon.info.key_bytes)
        assert msg.msg_type == "ping_reply" and msg.header.parent_id == h.msg_id
    finally:
        req.close(0)


def test_done_reports_the_files_loudness(daemon, ch):
    import numpy as np
    import pyloudnorm
    import soundfile as sf

    sub = daemon.subscribe(["job."])
    try:
        job_id = ch.request("submit", music(1.0, output={"loudness_lufs": -20.0}))["job_id"]
        final, _ = wait_final(sub, job_id)
    finally:
        sub.close()
    assert final.msg_type == "done"
    lufs = final.content["loudness_lufs"]
    audio, rate = sf.read(final.content["path"], dtype="float64")
    measured = pyloudnorm.Meter(rate).integrated_loudness(audio)
    assert isinstance(lufs, float) and np.isfinite(measured) and abs(lufs - measured) < 0.5, (lufs, measured)
    assert lufs <= -19.5  # at the target, or below it when the true-peak ceiling limited the gain
    assert ch.request("job", {"job_id": job_id})["job"]["result"]["loudness_lufs"] == lufs


# -- idempotency ------------------------------------------------------------------------------------------------
def test_replayed_submit_frames_make_one_job(daemon, raw, ch):
    req = music(1.0, tag="replay", request_id="replay-test-0001")
    frames = signed(daemon.info.key, header("submit"), req)
    raw.send(frames)
    first = raw.reply().content
    raw.send(frames)  # the very same signed frames, again
    second = raw.reply().content
    assert first["job_id"] == second["job_id"] and second["repeat"] is True and not first.get("repeat")
    jobs = ch.request("jobs", {"limit": 1000})["jobs"]
    assert [j["job_id"] for j in jobs if j.get("tag") == "replay"] == [first["job_id"]]
    # the same key on another request is refused, naming the field
    with pytest.raises(wire.RemoteError) as ei:
        ch.request("submit", music(2.0, tag="replay", request_id="replay-test-0001"))
    assert ei.value.code == "invalid_input" and ei.value.field == "request_id"
    # without a key, a resubmit is a new job (protocol clients that do not opt in keep today's behaviour)
    a = ch.request("submit", music(1.0, tag="nokey"))["job_id"]
    b = ch.request("submit", music(1.0, tag="nokey"))["job_id"]
    assert a != b


def test_client_sends_a_request_id_and_retries_without_doubling(daemon):
    with Client(daemon.settings, auto_start=False) as c:
        job = c.music("retry me", seconds=1.0, tag="client-key")
        row = c.job(job.id)
        assert row.request["request_id"]
        # a retry of that same request (what submit_request does after a timeout) returns the first job
        again = c.submit_request(P.SubmitRequest.model_validate(row.request))
        assert again.id == job.id
        assert [j.job_id for j in c.jobs(limit=1000) if j.tag == "client-key"] == [job.id]


def test_request_id_survives_a_restart(tmp_path, cache):
    d = DaemonProc(tmp_path, keep_alive=0, cache_dir=cache).start()
    try:
        ch = d.channel(timeout=30)
        sub = d.subscribe(["job."])
        first = ch.request("submit", music(0.5, request_id="survives-restart-1"))["job_id"]
        assert wait_final(sub, first)[0].msg_type == "done"
        sub.close()
        ch.close()
        assert d.terminate() == 0
        d.start()
        again = d.channel(timeout=30).request("submit", music(0.5, request_id="survives-restart-1"))
        assert again == {"job_id": first, "state": "done", "position": 0, "repeat": True}
    finally:
        d.close()


def test_osc_request_id_makes_a_resent_datagram_one_job(daemon, ch):
    s = osc_socket()
    try:
        args = ["calm piano", "seconds", 0.5, "tag", "osc-once", "request_id", "osc-resend-0001"]
        a1, first = osc_ask(s, daemon.info.osc_port, "/unimoe/music", *args)
        a2, second = osc_ask(s, daemon.info.osc_port, "/unimoe/music", *args)
        assert a1 == a2 == "/unimoe/accepted" and first[0] == second[0]
    finally:
        s.close()
    assert [j["job_id"] for j in ch.request("jobs", {"limit": 1000})["jobs"] if j.get("tag") == "osc-once"] \
        == [first[0]]


# -- cancel of a finished job: ZeroMQ and OSC agree ----------------------------------------------------------------
def test_cancel_finished_job_agrees_over_zeromq_and_osc(daemon, ch):
    sub = daemon.subscribe(["job."])
    try:
        job_id = ch.request("submit", music(0.5, tag="fin"))["job_id"]
        final, _ = wait_final(sub, job_id)
        assert final.msg_type == "done"
    finally:
        sub.close()
    rep = ch.request("cancel", {"job_id": job_id}, control=True)
    assert rep["state"] == "done" and rep["was"] == "done" and not rep.get("pending")
    s = osc_socket()
    try:
        address, args = osc_ask(s, daemon.info.osc_port, "/unimoe/cancel", job_id, "tag", "t1")
        assert (address, args) == ("/unimoe/cancel-reply", [job_id, "done", "t1"])
    finally:
        s.close()


# -- OSC argument types -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key,value,words", [
    ("seconds", "4", "must be a number"),
    ("seconds", float("nan"), "finite number"),
    ("seconds", float("inf"), "finite number"),
    ("temperature", float("-inf"), "finite number"),
    ("seed", "3", "whole number"),
    ("seed", 2.5, "whole number"),
    ("voice", 3, "must be a string"),
    ("normalize", 2, "0 or 1"),
    ("tag", 5, "must be a string"),
])
def test_osc_arguments_are_type_checked(daemon, key, value, words):
    s = osc_socket()
    try:
        task = "/unimoe/speech" if key == "voice" else "/unimoe/music"
        address, args = osc_ask(s, daemon.info.osc_port, task, "calm piano", key, value)
        assert address == "/unimoe/error", args
        assert args[0] == "invalid_input" and args[2] == key and words in args[1], args
        # whole numbers sent as floats (Max does) are fine for int keys; the job runs
        address, args = osc_ask(s, daemon.info.osc_port, "/unimoe/music", "calm piano", "seconds", 0.5,
                                "seed", 3.0, "normalize", 1)
        assert address == "/unimoe/accepted", args
    finally:
        s.close()


# -- start-up: temp files, modes, the OSC port ---------------------------------------------------------------------
def test_stale_temps_removed_and_data_folder_private(tmp_path, cache):
    d = DaemonProc(tmp_path, keep_alive=0, cache_dir=cache).start()
    try:
        ch = d.channel(timeout=30)
        sub = d.subscribe(["job."])
        job_id = ch.request("submit", music(0.5))["job_id"]
        assert wait_final(sub, job_id)[0].msg_type == "done"
        sub.close()
        ch.close()
        assert d.terminate() == 0
        out = d.settings.output_path
        ours = [out / f".unimoe-{job_id}.tmp.wav", out / f"..unimoe-{job_id}.tmp.k2j3.tmp.wav",
                out / f".unimoe-{job_id}.ab12.json.tmp"]
        foreign_old = out / f".unimoe-{'f' * 32}.tmp.wav"
        foreign_new = out / ".unimoe-zz99.json.tmp"
        keep = [out / "mine.wav", out / ".hidden-but-not-ours.tmp.wav"]
        for p in [*ours, foreign_old, foreign_new, *keep]:
            p.write_bytes(b"RIFF")
        os.utime(foreign_old, (time.time() - 7200, time.time() - 7200))
        d.start()
        for p in [*ours, foreign_old]:
            assert not p.exists(), p
        for p in [foreign_new, *keep]:
            assert p.exists(), p
        mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
        assert mode(d.settings.data_path) == 0o700
        assert mode(d.settings.log_path) == 0o700
        for p in [d.settings.queue_db_path, *d.settings.data_path.glob("jobs.sqlite3-*"),
                  *d.settings.log_path.glob("daemon.log*")]:
            assert mode(p) == 0o600, p
    finally:
        d.close()


def test_default_osc_port_taken_falls_back_unless_explicit(tmp_path, cache):
    default = Settings.model_fields["osc_port"].default  # 9137, machine-wide
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        try:
            holder.bind(("127.0.0.1", default))
        except OSError:
            pass  # taken by someone else already: the case under test
        (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
        d = DaemonProc(tmp_path / "a", keep_alive=0, cache_dir=cache)
        d.env.pop("UNIMOE_AUDIO_OSC_PORT")
        d.start()
        try:
            assert d.info.osc_port and d.info.osc_port != default
            assert d.channel().request("status", control=True)["osc_port"] == d.info.osc_port
            s = osc_socket()
            try:
                assert osc_ask(s, d.info.osc_port, "/unimoe/ping")[0] == "/unimoe/pong"
            finally:
                s.close()
            cli = subprocess.run([sys.executable, "-m", "unimoe_audio.client", "status"], env=d.env,
                                 capture_output=True, text=True, timeout=120)
            assert str(d.info.osc_port) in cli.stdout, cli.stdout + cli.stderr
        finally:
            d.close()
        e = DaemonProc(tmp_path / "b", keep_alive=0, osc_port=default, cache_dir=cache)  # explicit: refuse, say why
        with pytest.raises(RuntimeError) as ei:
            e.start()
        assert "OSC" in str(ei.value) and str(default) in str(ei.value)
        e.close()
    finally:
        holder.close()


def test_pid_alive_is_false_for_a_zombie():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_for(lambda: open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 60,
             what="the child to exit (unreaped)")
    try:
        assert not connection.pid_alive(child.pid)
        assert connection.pid_alive(os.getpid())
    finally:
        child.wait()
    assert not connection.pid_alive(child.pid)
