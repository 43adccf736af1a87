"""The real daemon process on the tiny model, over real sockets on 127.0.0.1: submit, events, cancel,
bad input, voices, OSC with Debian's oscsend/oscdump. (Restart and crash recovery: test_daemon_recovery.py.)
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import zmq

from unimoe_audio.client import protocol as P
from unimoe_audio.client import channel, wire

from _content import check_audio, check_sidecar
from _daemon_harness import (
    collect,
    free_port,
    job_state,
    music,
    read_json,
    until,
    visible_wavs,
    wait_final,
    wait_for,
    wait_jobs,
)
from _progress import STALL_S


@pytest.fixture(scope="module")
def daemon_settings():
    return {"keep_alive": 0, "max_batch": 4, "max_message_bytes": 64 * 1024}


@pytest.fixture
def ch(daemon):
    return daemon.channel(timeout=30)


@pytest.fixture
def sub(daemon):
    s = daemon.subscribe(["job.", "daemon"])
    yield s
    s.close()


def _long_job(ch, sub, seconds=30.0):
    """Submit a long job and wait until it is running (first progress event). It runs without CFG, so
    the default (CFG) music jobs the tests queue after it cannot join its batch: they stay queued."""
    req = music(seconds, caption="long one")
    req["spec"]["sampling"] = {"cfg_scale": 0}
    job = ch.request("submit", req)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = sub.recv(timeout=5)
        if m is not None and m.content.get("job_id") == job["job_id"] and m.msg_type == "progress":
            return job["job_id"]
    raise AssertionError("long job never made progress")


def test_ping_and_status_before_load(daemon, ch):
    pong = ch.request("ping")
    assert pong["protocol_version"] == P.PROTOCOL_VERSION and pong["pid"] == daemon.proc.pid
    st = ch.call("status", control=True)
    assert isinstance(st, P.StatusReply)
    assert st.tiny is True and st.tiny_reason
    assert st.state in ("idle", "loading", "ready", "busy", "unloaded")
    assert st.memory.rss_bytes and st.memory.rss_bytes > 0


def test_ping_echo_is_the_subscription_handshake(daemon, ch):
    everything = daemon.subscribe([""])  # returns only once its subscriptions reached the daemon
    try:
        # ping{echo} answers as ping does, then publishes an echo event on its own topic
        assert ch.request("ping", {"echo": "hs-1"}, control=True)["pid"] == daemon.proc.pid
        echo = until(everything, lambda m: m.msg_type == "echo", "the echo event")
        assert echo.topic == "echo.hs-1" and echo.content == {"echo": "hs-1"}
        with pytest.raises(wire.RemoteError) as ei:
            ch.request("ping", {"echo": "not a token!"})
        assert ei.value.code == "invalid_input" and ei.value.field == "echo"
        # events that arrive while a subscription confirms are kept, in order, for recv()
        late = daemon.channel().subscribe(["job."])
        try:
            late.confirm(STALL_S)
            job_id = ch.request("submit", music(0.5))["job_id"]
            wait_jobs(daemon, lambda: job_state(ch, job_id) == "done", "the job to finish")
            late.confirm(STALL_S)  # reads the job's whole run off the socket before its echo
            final, seen = wait_final(late, job_id)
            assert final.msg_type == "done"
            assert [m.content["seq"] for m in seen] == list(range(1, len(seen) + 1))
            assert seen[0].msg_type == "accepted" and not any(m.msg_type == "echo" for m in seen)
        finally:
            late.close()
    finally:
        everything.close()


def test_submit_writes_timeline_wav_and_sidecar(daemon, ch, sub):
    out_dir = daemon.home / "project" / "audio"
    job = ch.request("submit", music(1.5, output={"folder": str(out_dir), "name": "cue 1"}, tag="t-1",
                                     spec={"task": "music", "caption": "calm piano", "length": {"seconds": 1.5},
                                           "sampling": {"seed": 7}}))
    final, events = wait_final(sub, job["job_id"])
    assert final.msg_type == "done", final.content
    done = P.parse_event("done", final.content)
    assert done.tag == "t-1" and done.seed == 7
    path = Path(done.path)
    assert path.parent == out_dir and path.name == "cue 1.wav"
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (48000, 2, "PCM_24")
    assert info.frames == 72000  # exactly 1.5 s at 48 kHz (fit_length)
    side = read_json(done.sidecar)
    assert side["seed"] == 7 and side["model"]["tiny"] is True and side["model"]["hash"]
    assert side["request"]["spec"]["caption"] == "calm piano"
    assert side["output"]["sample_rate"] == 48000 and side["output"]["bit_depth"] == 24
    timings = side["timings"]
    assert timings["total"] >= timings["generate"] > 0 and all(v >= 0 for v in timings.values()), timings
    # loudness-normalized with a true-peak ceiling (defaults: -16 LUFS, -1 dBTP)
    from unimoe_audio.model import audio_out

    audio, sr = sf.read(str(path), dtype="float32", always_2d=True)
    assert audio_out.true_peak_db(audio.T, sr) <= -1.0 + 0.2
    assert side["output"]["loudness_lufs"] == -16.0 and "gain_db" in side["output"]["loudness"]
    # the same name again gets a new unique file, never an overwrite
    job2 = ch.request("submit", music(1.0, output={"folder": str(out_dir), "name": "cue 1", "sample_rate": 44100,
                                                   "channels": 1, "bit_depth": 16}))
    final2, _ = wait_final(sub, job2["job_id"])
    assert final2.msg_type == "done", final2.content
    assert Path(final2.content["path"]).name == "cue 1-2.wav"
    info2 = sf.info(final2.content["path"])
    assert (info2.samplerate, info2.channels, info2.subtype, info2.frames) == (44100, 1, "PCM_16", 44100)
    got = ch.request("job", {"job_id": job["job_id"]})["job"]
    assert got["state"] == "done" and got["result"]["path"] == str(path)


def test_progress_events_arrive_in_order(daemon, ch, sub):
    job = ch.request("submit", music(2.0))
    final, events = wait_final(sub, job["job_id"])
    assert final.msg_type == "done"
    kinds = [m.msg_type for m in events]
    seqs = [m.content["seq"] for m in events]
    assert kinds[0] == "accepted" and kinds[-1] == "done" and "started" in kinds
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    fractions = [m.content["fraction"] for m in events if m.msg_type == "progress"]
    assert fractions, kinds
    assert fractions == sorted(fractions) and 0 <= fractions[0] and fractions[-1] <= 1
    snap = ch.request("snapshot", {"job_id": job["job_id"]})
    assert snap["seq"] == seqs[-1] and snap["last_event"]["event"] == "done" and snap["job"]["state"] == "done"


def test_several_clients_at_once(daemon, sub):
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with channel.Channel(daemon.info, timeout=30) as c:
                results[i] = [c.request("submit", music(1.0, tag=f"c{i}-{k}"))["job_id"] for k in range(2)]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    ids = [j for js in results.values() for j in js]
    assert len(set(ids)) == 10
    finals = {j: evs[-1] for j, evs in collect(sub, ids).items()}
    assert all(m.msg_type == "done" for m in finals.values()), [m.content for m in finals.values()]
    paths = {m.content["path"] for m in finals.values()}
    assert len(paths) == len(ids)
    for job_id, m in finals.items():  # each file is that job's own take, as long as its done event says
        check_audio(m.content["path"], seconds=m.content["seconds"], sample_rate=m.content["sample_rate"],
                    channels=m.content["channels"])
        check_sidecar(m.content["path"], job_id=job_id, task="music")


def test_cancel_queued_and_running(daemon, ch, sub):
    running = _long_job(ch, sub)
    queued = ch.request("submit", music(1.0, caption="never runs"))
    # a queued job: cancelled at once, from the request socket
    r = ch.request("cancel", {"job_id": queued["job_id"]})
    assert r["state"] == "cancelled" and r["was"] == "queued"
    # a running job: from the control socket; it stops at its next step
    r = ch.request("cancel", {"job_id": running}, control=True)
    assert r["was"] == "running" and r["pending"] is True
    final, _ = wait_final(sub, running, timeout=60)
    assert final.msg_type == "cancelled"
    assert job_state(ch, running) == "cancelled" and job_state(ch, queued["job_id"]) == "cancelled"
    # cancelling again answers the final state; an unknown job is not_found naming the field
    assert ch.request("cancel", {"job_id": running})["state"] == "cancelled"
    with pytest.raises(wire.RemoteError) as ei:
        ch.request("cancel", {"job_id": "nope"})
    assert ei.value.code == "not_found" and ei.value.field == "job_id"
    names = [p.name for p in visible_wavs(daemon.settings.output_path)]
    assert not any(running[:8] in n or queued["job_id"][:8] in n for n in names)


def test_priority_runs_first(daemon, ch, sub):
    running = _long_job(ch, sub, seconds=20)
    low = ch.request("submit", music(0.5, caption="low"), timeout=10)["job_id"]
    high = ch.request("submit", {**music(0.5, caption="high"), "priority": 5})["job_id"]
    assert ch.request("job", {"job_id": high})["job"]["position"] == 0
    assert ch.request("job", {"job_id": low})["job"]["position"] == 1
    ch.request("cancel", {"job_id": running})
    wait_final(sub, low)
    hi = ch.request("job", {"job_id": high})["job"]
    lo = ch.request("job", {"job_id": low})["job"]
    assert hi["state"] == lo["state"] == "done"
    assert hi["started"] <= lo["started"]


def test_compatible_queued_jobs_run_as_one_batch(daemon, ch, sub):
    running = _long_job(ch, sub, seconds=20)
    ids = [ch.request("submit", music(0.5, caption=f"batch {i}"))["job_id"] for i in range(3)]
    ch.request("cancel", {"job_id": running}, control=True)
    started = {}
    for job, events in collect(sub, ids).items():
        assert events[-1].msg_type == "done", events[-1].content
        started[job] = next(m.content for m in events if m.msg_type == "started")
    assert [started[j]["batch_size"] for j in ids] == [3, 3, 3]
    # throughput is measured: a queued job now gets an ETA
    again = _long_job(ch, sub, seconds=20)
    queued = ch.request("submit", music(0.5))
    assert queued["eta_s"] is not None and queued["eta_s"] > 0
    ch.request("cancel", {"job_id": queued["job_id"]})
    ch.request("cancel", {"job_id": again})
    wait_final(sub, again)


def test_unload_then_next_job_reloads(daemon, ch, sub):
    assert ch.request("unload", control=True)["state"] == "unloaded"
    assert ch.request("status")["state"] == "unloaded"
    job = ch.request("submit", music(0.5))["job_id"]
    final, _ = wait_final(sub, job)
    assert final.msg_type == "done"
    # "done" is published as soon as the file is in place; the worker turns "ready" right after.
    wait_jobs(daemon, lambda: ch.request("status")["state"] == "ready", "the daemon to be ready again")


def test_jobs_listing_filters(daemon, ch):
    jobs = ch.call("jobs", {"states": ["done"], "limit": 3})
    assert isinstance(jobs, P.JobsReply) and 1 <= len(jobs.jobs) <= 3
    assert all(j.state == "done" for j in jobs.jobs)


# -- bad input never kills the daemon or a neighbour's job ------------------------------------------------
def _raw(daemon, frames, control=False):
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    s.connect(daemon.info.endpoint("control" if control else "request"))
    try:
        s.send_multipart(frames)
        assert s.poll(10_000), "no reply"
        return wire.deserialize(s.recv_multipart(), key=daemon.info.key_bytes)
    finally:
        s.close()


def test_unsigned_and_forged_messages_are_rejected(daemon, ch, sub):
    neighbour = ch.request("submit", music(1.0, caption="neighbour"))
    _, hb, cb = wire.serialize("submit", music(1.0), key=b"x")[0][1:]
    for sig in (b"", b"00" * 32, wire.sign(b"wrong key", hb, cb)):
        reply = _raw(daemon, [P.IDENT, sig, hb, cb])
        assert reply.msg_type == "error" and reply.content["code"] == "bad_signature"
    frames, _ = wire.serialize("shutdown", {}, key=b"guess")
    reply = _raw(daemon, frames, control=True)
    assert reply.content["code"] == "bad_signature"
    final, _ = wait_final(sub, neighbour["job_id"])
    assert final.msg_type == "done"
    assert ch.request("ping")["pid"] == daemon.proc.pid
    assert "bad_signature" in daemon.log()


def test_malformed_and_invalid_requests_get_typed_errors(daemon, ch, tmp_path):
    key = daemon.info.key_bytes
    # garbage frames, no delimiter
    reply = _raw(daemon, [b"hello", b"world"])
    assert reply.content["code"] == "bad_message"
    # not JSON (but signed)
    hb, cb = b"{oops", b"{}"
    assert _raw(daemon, [P.IDENT, wire.sign(key, hb, cb), hb, cb]).content["code"] == "bad_message"
    # unknown type, wrong type, non-control on the control socket
    assert _raw(daemon, wire.serialize("launch", {}, key=key)[0]).content["code"] == "unknown_type"
    assert _raw(daemon, wire.serialize("jobs", {}, key=key)[0], control=True).content["code"] == "unknown_type"
    cases = [
        (music(1.0, priority="urgent"), "invalid_input", "priority"),
        ({"spec": {"task": "music", "caption": "x", "length": {"seconds": -1}}}, "invalid_input", "spec.length.seconds"),
        ({"spec": {"task": "video_score", "video": "/etc/passwd"}}, "path_not_allowed", "spec.video"),
        ({"spec": {"task": "video_score", "video": str(daemon.home / "missing.mp4")}}, "not_found", "spec.video"),
        ({"spec": {"task": "speech", "text": "hi", "reference_audio": str(daemon.home / "nope.wav"),
                   "reference_text": "hi"}}, "not_found", "spec.reference_audio"),
        ({"spec": {"task": "speech", "text": "hi", "voice": "nobody"}}, "not_found", "spec.voice"),
        (music(1.0, output={"folder": "/etc"}), "path_not_allowed", "output.folder"),
        (music(1.0, output={"folder": str(daemon.home / ".." / ".." / "x")}), "path_not_allowed", "output.folder"),
        (music(1.0, caption="x" * 100_000), "too_large", "content"),
    ]
    for content, code, field in cases:
        # too_large is refused by the client before sending (WireError); the rest by the daemon (RemoteError)
        with pytest.raises(wire.WireError if code == "too_large" else wire.RemoteError) as ei:
            ch.request("submit", content)
        assert (ei.value.code, ei.value.field) == (code, field), (content if len(str(content)) < 300 else field)
    with pytest.raises(wire.RemoteError) as ei:
        ch.request("jobs", {"states": ["sleeping"]})
    assert ei.value.code == "invalid_input" and ei.value.field.startswith("states")
    assert ch.request("ping")["pid"] == daemon.proc.pid


def test_voices_add_use_remove(daemon, ch, sub):
    ref = daemon.home / "ref.wav"
    t = np.arange(16000 * 2) / 16000
    sf.write(str(ref), (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 16000)
    added = ch.request("voices", {"action": "add", "name": "narrator", "audio_path": str(ref),
                                  "transcript": "a test tone"}, timeout=120)
    assert added["voices"][0]["name"] == "narrator" and added["voices"][0]["frames"] > 0
    assert [v["name"] for v in ch.request("voices")["voices"]] == ["narrator"]
    job = ch.request("submit", {"spec": {"task": "speech", "text": "Hello there.", "voice": "narrator",
                                         "length": {"seconds": 1.0}}})
    final, _ = wait_final(sub, job["job_id"])
    assert final.msg_type == "done", final.content
    with pytest.raises(wire.RemoteError) as ei:
        ch.request("voices", {"action": "add", "name": "x", "audio_path": "/etc/hostname", "transcript": "t"})
    assert ei.value.code == "path_not_allowed" and ei.value.field == "audio_path"
    assert ch.request("voices", {"action": "remove", "name": "narrator"})["voices"] == []
    with pytest.raises(wire.RemoteError) as ei:
        ch.request("voices", {"action": "remove", "name": "narrator"})
    assert ei.value.code == "not_found"


def test_models_lists_the_tiny_model(ch):
    models = ch.request("models")["models"]
    tiny = [m for m in models if m["tiny"]]
    assert tiny and tiny[0]["active"] is True


# -- OSC ------------------------------------------------------------------------------------------------------
def _udp_port_taken(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_osc_request_with_oscsend_and_oscdump(daemon):
    assert shutil.which("oscsend") and shutil.which("oscdump"), "liblo-tools (oscsend/oscdump) must be installed"
    listen = free_port(__import__("socket").SOCK_DGRAM)
    dump = subprocess.Popen(["oscdump", "-L", str(listen)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in dump.stdout], daemon=True)
    reader.start()
    try:
        # oscdump is ready when its port is taken (liblo binds it before it reads datagrams)
        wait_for(lambda: _udp_port_taken(listen) or dump.poll() is not None, 60, what="oscdump to listen")
        assert dump.poll() is None, "".join(lines)
        osc = str(daemon.info.osc_port)
        send = ["oscsend", "127.0.0.1", osc]
        subprocess.run([*send, "/unimoe/ping", "si", "reply_port", str(listen)], check=True)
        wait_for(lambda: any("/unimoe/pong" in ln for ln in lines), 20, what="pong")
        subprocess.run([*send, "/unimoe/music", "ssfsisssi", "calm piano", "seconds", "1.0", "reply_port", str(listen),
                        "tag", "clip7", "seed", "3"], check=True)
        done = wait_for(lambda: [ln for ln in lines if "/unimoe/done" in ln], 120, what="/unimoe/done")[0]
        accepted = [ln for ln in lines if "/unimoe/accepted" in ln]
        assert accepted and "clip7" in accepted[0]
        path = next(tok.strip('"') for tok in done.split() if tok.strip('"').endswith(".wav"))
        check_audio(path, seconds=1.0, sample_rate=48000)
        side = check_sidecar(path, task="music")
        assert side["request"]["tag"] == "clip7" and side["seed"] == 3 and "clip7" in done
        # a bad request is answered with /unimoe/error naming the argument, and the daemon carries on
        subprocess.run([*send, "/unimoe/music", "ssssi", "calm", "seconds", "long", "reply_port", str(listen)],
                       check=True)
        err = wait_for(lambda: [ln for ln in lines if "/unimoe/error" in ln], 20, what="/unimoe/error")[0]
        assert "invalid_input" in err and "seconds" in err
        subprocess.run([*send, "/unimoe/status", "si", "reply_port", str(listen)], check=True)
        state = wait_for(lambda: [ln for ln in lines if "/unimoe/state" in ln], 20, what="/unimoe/state")[0]
        assert "tiny" in state
    finally:
        dump.terminate()
        dump.wait(5)


def test_osc_cancel_progress_and_bad_datagrams(daemon):
    import socket

    from pythonosc.osc_message import OscMessage
    from pythonosc.osc_message_builder import OscMessageBuilder

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(60)
    to = ("127.0.0.1", daemon.info.osc_port)

    def send(address, *args):
        b = OscMessageBuilder(address)
        for a in args:
            b.add_arg(a)
        s.sendto(b.build().dgram, to)

    def recv(address):
        while True:
            m = OscMessage(s.recvfrom(65536)[0])
            if m.address == address:
                return m.params
            assert m.address not in ("/unimoe/error", "/unimoe/failed") or address == m.address, m.params

    try:
        s.sendto(b"\x00garbage", to)  # not OSC: answered to the sender, nothing breaks
        assert recv("/unimoe/error")[0] == "bad_message"
        send("/unimoe/nope", "x")
        assert recv("/unimoe/error")[0] == "unknown_type"
        send("/unimoe/music", "long", "seconds", 30.0, "progress", 1, "tag", "t9", "colour", "red")
        err = recv("/unimoe/error")
        assert err[:1] == ["invalid_input"] and err[2] == "colour"
        send("/unimoe/music", "long", "seconds", 30.0, "progress", 1, "tag", "t9")
        job_id, position, tag = recv("/unimoe/accepted")
        assert tag == "t9"
        params = recv("/unimoe/progress")
        assert params[0] == job_id and 0 <= params[1] <= 1 and params[3] == "t9"
        send("/unimoe/cancel", job_id)
        assert recv("/unimoe/cancelled")[0] == job_id
        send("/unimoe/cancel", job_id)  # idempotent
        assert recv("/unimoe/cancelled")[0] == job_id
        send("/unimoe/cancel", "no-such-job")
        err = recv("/unimoe/error")
        assert err[0] == "not_found" and err[2] == "job_id"
    finally:
        s.close()
