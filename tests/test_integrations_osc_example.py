"""The Max for Live / Max example patch (integrations/examples/unimoe_osc.maxpat) against a real daemon:
every message box wired to its [udpsend] is sent as Max sends it (first atom the OSC address; Max ints as
``i``, floats such as ``2.`` as ``f``, symbols and quoted text as ``s``), and the replies the patch's
[udpreceive] -> [route] expects come back. Only the two port numbers are swapped for free ones (the
daemon's OSC port for udpsend's 9137, a free port for 9001 in ``reply_port`` and [udpreceive])."""
from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _daemon_harness import DaemonProc  # noqa: E402

from unimoe_audio.client.client import Client  # noqa: E402
from unimoe_audio.integrations.timeline import wav_frames  # noqa: E402

PATCH = HERE.parent / "integrations" / "examples" / "unimoe_osc.maxpat"


def max_atoms(text: str) -> list:
    """A Max message box's text as the atoms Max sends: int, float (``2.``, ``120.5``) or symbol."""
    atoms: list = []
    for tok in shlex.split(text, posix=True):
        if re.fullmatch(r"-?\d+", tok):
            atoms.append(int(tok))
        elif re.fullmatch(r"-?\d+\.\d*|-?\d*\.\d+", tok):
            atoms.append(float(tok))
        else:
            atoms.append(tok)
    return atoms


def osc_bytes(atoms: list) -> bytes:
    b = OscMessageBuilder(address=atoms[0])
    for a in atoms[1:]:
        b.add_arg(a, "i" if isinstance(a, int) else "f" if isinstance(a, float) else "s")
    return b.build().dgram


class Patch:
    def __init__(self, path: Path):
        p = json.loads(path.read_text())["patcher"]
        self.boxes = {b["box"]["id"]: b["box"] for b in p["boxes"]}
        self.lines = [(ln["patchline"]["source"][0], ln["patchline"]["destination"][0]) for ln in p["lines"]]

    def find(self, prefix: str) -> dict:
        (box,) = [b for b in self.boxes.values() if b.get("text", "").startswith(prefix)]
        return box

    def into(self, box_id: str) -> list[dict]:
        return [self.boxes[s] for s, d in self.lines if d == box_id]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = DaemonProc(tmp_path_factory.mktemp("osc-home")).start()
    ref = d.home / "ref.wav"
    subprocess.run(["espeak-ng", "-w", str(ref), "Hello there, this is my voice."], check=True, capture_output=True)
    with Client(d.settings, auto_start=False) as c:  # the patch's speech message uses a voice named narrator
        c.voice_add("narrator", ref, "Hello there, this is my voice.")
    yield d
    d.close()


def test_patch_is_wired_as_documented():
    patch = Patch(PATCH)
    send = patch.find("udpsend")
    assert send["text"].split()[1:] == ["127.0.0.1", "9137"]
    recv = patch.find("udpreceive")
    reply_port = int(recv["text"].split()[1])
    sent = [b for b in patch.into(send["id"]) if b["maxclass"] == "message"]
    assert len(sent) == 7
    for box in sent:  # every request names the port the patch listens on
        atoms = max_atoms(box["text"])
        assert atoms[0].startswith("/unimoe/") and atoms[atoms.index("reply_port") + 1] == reply_port
    route = patch.find("route")
    assert patch.into(route["id"]) == [recv]
    assert {"/unimoe/done", "/unimoe/progress", "/unimoe/accepted", "/unimoe/error"} <= set(route["text"].split()[1:])


def test_patch_messages_against_the_daemon(daemon):
    patch = Patch(PATCH)
    send = patch.find("udpsend")
    patch_reply = int(patch.find("udpreceive")["text"].split()[1])
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    osc_port = int(daemon.env["UNIMOE_AUDIO_OSC_PORT"])

    def send_box(text: str) -> list:
        atoms = [port if a == patch_reply else a for a in max_atoms(text)]
        tx.sendto(osc_bytes(atoms), ("127.0.0.1", osc_port))
        return atoms

    replies: list[tuple[str, list]] = []

    def wait(pred, timeout=300.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in replies:
                if pred(r):
                    return r
            rx.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data, _ = rx.recvfrom(65536)
            except socket.timeout:
                break
            m = OscMessage(data)
            replies.append((m.address, list(m.params)))
        raise AssertionError(f"no such reply in {timeout} s; got {replies}")

    try:
        boxes = {b["id"]: b for b in patch.into(send["id"]) if b["maxclass"] == "message"}
        send_box(boxes["msg-ping"]["text"])
        pong = wait(lambda r: r[0] == "/unimoe/pong")
        assert pong[1][1] == daemon.proc.pid
        send_box(boxes["msg-status"]["text"])
        state = wait(lambda r: r[0] == "/unimoe/state")
        assert state[1][0] in ("ready", "loading", "idle", "unloaded") and state[1][3] in (0, 1)

        for box in ("msg-music", "msg-loop", "msg-speech", "msg-long"):
            send_box(boxes[box]["text"])
        accepted = {r[1][2]: r[1][0] for r in (wait(lambda r, t=t: r[0] == "/unimoe/accepted" and r[1][2] == t)
                                               for t in ("cue1", "loop1", "line1", "long"))}
        # cancel the long one as the patch does: [unpack s i s] puts the job id into the cancel box's $1
        cancel_text = boxes["msg-cancel"]["text"].replace("$1", accepted["long"])
        atoms = send_box(cancel_text)
        assert atoms[:2] == ["/unimoe/cancel", accepted["long"]]
        wait(lambda r: r[0] == "/unimoe/cancelled" and r[1][0] == accepted["long"])

        seconds = {"cue1": 2.0, "loop1": 2.0, "line1": None}  # loop: 1 bar of 4/4 at 120 BPM
        for tag, secs in seconds.items():
            done = wait(lambda r, t=tag: r[0] in ("/unimoe/done", "/unimoe/failed") and r[1][-1] == t)
            assert done[0] == "/unimoe/done", done
            job_id, path, got_seconds, _ = done[1]
            assert job_id == accepted[tag] and Path(path).is_file()
            frames, rate = wav_frames(path)[:2]
            assert frames == pytest.approx(got_seconds * rate, abs=1)
            if secs is not None:
                assert got_seconds == pytest.approx(secs, abs=1e-6)
        # progress 1 on cue1 only: its fractions rise to the [slider] (0..1)
        prog = [r[1] for r in replies if r[0] == "/unimoe/progress"]
        assert prog and all(p[0] == accepted["cue1"] and 0.0 <= p[1] <= 1.0 and p[3] == "cue1" for p in prog)
        assert [p[1] for p in prog] == sorted(p[1] for p in prog)
        assert not [r for r in replies if r[0] == "/unimoe/error"]
    finally:
        rx.close()
        tx.close()
