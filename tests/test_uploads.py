"""The ``upload`` request on a loopback daemon (issue #22): chunked, sha256-checked, resumable,
content-addressed (a file the host holds is not sent again), a per-client quota, expiry; a submit that
names an upload (``sha256:<hex>``) renders with the uploaded copy. The remote side (a workstation's file
the host cannot see, a remote client's path refused) is in tests/test_remote_netns.py.

Real daemon processes on the tiny model, real sockets on 127.0.0.1, real files.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time

import pytest

from unimoe_audio.client import protocol as P
from unimoe_audio.client import uploads, wire
from unimoe_audio.daemon.uploads import Peer, UploadStore

from _daemon_harness import DaemonProc, wait_final


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = DaemonProc(tmp_path_factory.mktemp("home"), keep_alive=0, upload_quota_mb=0.2).start()
    yield d
    d.close()


class Sender:
    """uploads.Send over a real channel, counting requests; ``fail_after`` drops the reply to that many
    chunks (as a lost connection would), to show the upload resumes where the host's copy ends."""

    def __init__(self, ch: wire.Channel, fail_after: int | None = None):
        self.ch, self.requests, self.chunks, self.fail_after = ch, 0, 0, fail_after

    def __call__(self, req: P.UploadRequest, data: bytes | None) -> P.UploadReply:
        self.requests += 1
        msg = self.ch.request_raw("upload", req, buffers=[data] if data else None)
        if msg.msg_type == "error":
            raise wire.RemoteError.from_reply(msg.content)
        if data:
            self.chunks += 1
            if self.fail_after is not None and self.chunks == self.fail_after:
                raise TimeoutError("reply lost")
        return P.UploadReply.model_validate(msg.content)


def _file(path, size: int, seed: int = 0):
    path.write_bytes(hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32))
    return path


def test_upload_is_chunked_resumable_and_sent_once(daemon, tmp_path):
    ch = daemon.channel(timeout=60)
    f = _file(tmp_path / "take.wav", 10_000)
    digest = hashlib.sha256(f.read_bytes()).hexdigest()
    s = Sender(ch, fail_after=3)
    ref = uploads.upload_file(s, f, chunk=1000, retry=(TimeoutError,))
    assert ref == "sha256:" + digest
    assert s.chunks == 10  # ten chunks, none sent twice: after the lost reply the host said where it was
    stored = daemon.settings.uploads_path / "local" / digest
    assert stored.read_bytes() == f.read_bytes() and not stored.with_name(digest + ".part").exists()
    again = Sender(ch)
    assert uploads.upload_file(again, f, chunk=1000) == ref and again.requests == 1  # content-addressed
    assert f"upload {digest[:12]} (take.wav" in daemon.log()


def test_a_wrong_hash_is_refused_and_nothing_kept(daemon, tmp_path):
    ch = daemon.channel(timeout=60)
    data = b"abc" * 1000
    wrong = hashlib.sha256(b"something else").hexdigest()
    req = P.UploadRequest(sha256=wrong, size=len(data), offset=0, name="bad.wav")
    with pytest.raises(wire.RemoteError) as ei:
        _send(ch, req, data)
    assert ei.value.code == "invalid_input" and ei.value.field == "sha256" and "send it again" in ei.value.message
    assert not list((daemon.settings.uploads_path / "local").glob(wrong + "*"))
    # a chunk past the declared size
    req = P.UploadRequest(sha256=hashlib.sha256(b"ab").hexdigest(), size=2, offset=0)
    with pytest.raises(wire.RemoteError) as ei:
        _send(ch, req, b"abc")
    assert ei.value.code == "invalid_input" and ei.value.field == "offset"


def _send(ch, req, data):
    msg = ch.request_raw("upload", req, buffers=[data])
    if msg.msg_type == "error":
        raise wire.RemoteError.from_reply(msg.content)
    return P.UploadReply.model_validate(msg.content)


def test_submit_names_an_upload(daemon, tmp_path):
    ch = daemon.channel(timeout=60)
    ref = tmp_path / "ref.wav"
    subprocess.run(["espeak-ng", "-w", str(ref), "Hello there, this is my voice."], check=True, capture_output=True)
    media = uploads.upload_file(Sender(ch), ref)
    sub = ch.subscribe(["job."])
    spec = {"task": "speech", "text": "Hi.", "reference_audio": media, "reference_text": "Hello there, this is my voice.",
            "length": {"seconds": 0.5}}
    job = ch.request("submit", {"spec": spec})["job_id"]
    final, _ = wait_final(sub, job)
    assert final.msg_type == "done", final.content
    side = json.loads(open(final.content["sidecar"]).read())
    used = side["request"]["spec"]["reference_audio"]
    assert used == str(daemon.settings.uploads_path / "local" / media.split(":")[1])
    with pytest.raises(wire.RemoteError) as ei:
        ch.request("submit", {"spec": {**spec, "reference_audio": "sha256:" + "0" * 64}})
    assert ei.value.code == "not_found" and ei.value.field == "spec.reference_audio"


def test_quota_is_per_client_and_named(daemon, tmp_path):
    ch = daemon.channel(timeout=60)
    # two 120 kB files under a 209.7 kB quota (0.2 MiB; uploads of this client used just now are kept): refused,
    # naming the file, its size, what is in use and the quota (sizes in the project's one unit, kB = 1000 bytes)
    with pytest.raises(wire.RemoteError) as ei:
        for i in (1, 2):
            uploads.upload_file(Sender(ch), _file(tmp_path / f"{i}.bin", 120_000, i))
    assert ei.value.code == "quota_exceeded" and "upload_quota_mb" in ei.value.wanted
    assert re.search(r"\d\.bin \(120\.0 kB\) does not fit this workstation's upload quota on the host: "
                     r"[\d.]+ kB of 209\.7 kB in use", ei.value.message), ei.value.message


def test_expiry_and_eviction(tmp_path):
    store = UploadStore(tmp_path / "up", quota_bytes=25_000, keep_s=3600)
    peer = Peer(user="workstation-key", remote=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        rep = store.receive(peer, P.UploadRequest(sha256=digest, size=len(data)), [data])
        assert rep.complete
        return digest

    old = put(b"o" * 20_000)
    path = tmp_path / "up" / peer.folder_name / old
    os.utime(path, (time.time() - 7200, time.time() - 7200))  # unused for two hours
    new = put(b"n" * 20_000)  # over quota: the old one, unused for over an hour, made room
    assert not path.exists() and (path.parent / new).exists()
    os.utime(path.parent / new, (time.time() - 4000, time.time() - 4000))
    assert store.sweep() == 1 and not (path.parent / new).exists()  # unused past keep_s: expired
    # a remote client's path is refused; its own upload resolves; another client's does not
    digest = put(b"r" * 100)
    assert store.resolve(peer, "sha256:" + digest, "spec.video") == str(path.parent / digest)
    with pytest.raises(P.ProtocolError) as ei:
        store.resolve(peer, str(path.parent / digest), "spec.video")
    assert ei.value.code == "path_not_allowed" and ei.value.field == "spec.video"
    with pytest.raises(P.ProtocolError) as ei:
        store.resolve(Peer(user="another-key", remote=True), "sha256:" + digest, "spec.video")
    assert ei.value.code == "not_found"
