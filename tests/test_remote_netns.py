"""A GPU host and a workstation in two network namespaces, made by this test (a veth pair with private
addresses that exist only inside them, removed at the end): the real daemon on the tiny model listens on
the host side with CurveZMQ; the real CLI runs on the workstation side.

Proves: a profile exported on the host and installed on the workstation generates audio that arrives on
the workstation with the host file's exact size, hash and length; the fixed network ports; an unknown
key and an unencrypted client get named refusals (not timeouts); previews stream to the workstation;
OSC beyond loopback takes only allowed senders.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import pytest

from _content import check_audio
from _daemon_harness import daemon_env

CLI = [sys.executable, "-m", "unimoe_audio.client"]
SUFFIX = f"{os.getpid() % 100000}"
NS_HOST, NS_WS = f"ua-host-{SUFFIX}", f"ua-ws-{SUFFIX}"
NET = f"10.213.{os.getpid() % 250}"
ADDR_HOST, ADDR_WS, ADDR_STRANGER = f"{NET}.1", f"{NET}.2", f"{NET}.3"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _namespaces_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "making network namespaces needs root (CAP_SYS_ADMIN)"
    probe = f"ua-probe-{SUFFIX}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"'ip netns add' failed here: {r.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@pytest.fixture(scope="module")
def netns():
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(f"network namespaces cannot be made: {reason}")
    veth_h, veth_w = f"uah{SUFFIX}", f"uaw{SUFFIX}"
    try:
        _ip("netns", "add", NS_HOST)
        _ip("netns", "add", NS_WS)
        _ip("link", "add", veth_h, "netns", NS_HOST, "type", "veth", "peer", "name", veth_w, "netns", NS_WS)
        for ns, dev, addrs in ((NS_HOST, veth_h, [ADDR_HOST]), (NS_WS, veth_w, [ADDR_WS, ADDR_STRANGER])):
            for a in addrs:
                _ip("-n", ns, "addr", "add", f"{a}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        _ip("netns", "del", NS_HOST, check=False)  # removes the veth pair with it
        _ip("netns", "del", NS_WS, check=False)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def in_ns(ns: str, cmd: list[str], *, timeout: float = 300, env: dict[str, str] | None = None
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, timeout=timeout,
                          env=env or _clean_env())


def cli(ns: str, home: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return in_ns(ns, [*CLI, "--home", str(home), *args], timeout=timeout)


def wait_for(cond: Any, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"daemon exited ({proc.returncode}) while waiting for {what}:\n"
                                 + (log.read_text(errors="replace")[-4000:] if log and log.exists() else ""))
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def host(netns, tmp_path_factory):
    """The daemon in the host namespace, allowing the workstation's key (from a file) and its OSC."""
    root = tmp_path_factory.mktemp("remote")
    hhome, whome = root / "host", root / "ws"
    r = cli(NS_WS, whome, "keys", "--json")
    assert r.returncode == 0, r.stderr
    public = json.loads(r.stdout)["public"]
    keyfile = root / "ws-client.public"  # as if copied from the workstation: a file, no shell quoting
    shutil.copy(json.loads(r.stdout)["public_file"], keyfile)
    env = daemon_env(hhome, host=ADDR_HOST, curve_allow=str(keyfile), osc_host=ADDR_HOST, osc_port=9137,
                     osc_allow=ADDR_WS)
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("UNIMOE_AUDIO_CACHE_DIR", str(root / "cache"))
    out = root / "daemon.out"
    with open(out, "wb") as fh:
        proc = subprocess.Popen(["ip", "netns", "exec", NS_HOST, sys.executable, "-m", "unimoe_audio.daemon"],
                                env=env, stdout=fh, stderr=subprocess.STDOUT)
    conn = hhome / "run" / "daemon.json"
    try:
        wait_for(conn.exists, 180, "the daemon's connection file", proc, hhome / "logs" / "daemon.log")
        profile = root / "studio.json"
        r = cli(NS_HOST, hhome, "remote", "export", str(profile), "--address", ADDR_HOST, "--json")
        assert r.returncode == 0, r.stderr
        r = cli(NS_WS, whome, "remote", "add", "studio", str(profile))
        assert r.returncode == 0, r.stderr
        yield {"proc": proc, "home": hhome, "ws": whome, "profile": profile, "public": public, "out": out,
               "root": root}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_workstation_generates_and_gets_the_wav(host):
    ws = host["ws"]
    profile = json.loads(host["profile"].read_text())
    # Fixed default ports beyond loopback (firewall-friendly), the address given at export, Curve on.
    assert (profile["request_port"], profile["control_port"], profile["events_port"]) == (9138, 9139, 9140)
    assert profile["host"] == ADDR_HOST and profile["curve_server_key"] and profile["pid"] == 0
    target = ws / "project" / "cue.wav"
    r = cli(NS_WS, ws, "--host", "studio", "music", "calm piano", "--seconds", "1", "--sample-rate", "48000",
            "--channels", "2", "--bit-depth", "24", "-o", str(target), "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["path"] == str(target) and res["host_path"] != str(target)
    host_file = Path(res["host_path"])
    assert host_file.is_relative_to(host["home"])  # written on the host, copied to the workstation
    assert target.stat().st_size == host_file.stat().st_size
    assert _sha(target) == _sha(host_file)
    with wave.open(str(target)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()) == (48000, 2, 3, 48000)
    sidecar = json.loads(target.with_suffix(".json").read_text())
    # the sidecar came along and describes this take (the host's file: same bytes)
    assert sidecar["job_id"] == res["job_id"] and sidecar["output"]["path"] == res["host_path"]
    assert (sidecar["output"]["samples"], sidecar["output"]["channels"]) == (48000, 2)
    assert not list(target.parent.glob(".*.part"))  # no temporary file left behind

    # A job waited on later (no -o) lands in the workstation's own output folder.
    r = cli(NS_WS, ws, "--host", "studio", "music", "pad", "--seconds", "0.5", "--no-wait", "--json")
    assert r.returncode == 0, r.stderr
    job_id = json.loads(r.stdout)["job"]
    r = cli(NS_WS, ws, "--host", "studio", "jobs", "wait", job_id, "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    local = next((ws / "data" / "outputs").glob("*.wav"))
    check_audio(local, seconds=0.5)


def test_previews_stream_to_the_workstation(host):
    code = f"""
import json, sys
from pathlib import Path
from unimoe_audio.client.client import Client
from unimoe_audio.client.settings import load_settings
c = Client(load_settings(home={str(host['ws'])!r}, remote="studio"), auto_start=False)
job = c.music("evolving pad", seconds=3, stream_partial=True)
parts = [p.path for p in job.stream(timeout=600)]
res = job.wait(timeout=60)
# Following a job by its updates (as the panel does): the done update names the local copy.
job2 = c.music("short", seconds=0.5)
final = list(job2.updates(timeout=600))[-1]
print(json.dumps({{"parts": parts, "path": res.path, "host_path": res.host_path, "followed": final.event.path,
                  "followed_host": c.job(job2.id).result.path}}))
"""
    r = in_ns(NS_WS, [sys.executable, "-c", code], timeout=900)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["parts"], "no preview reached the workstation"
    for p in out["parts"]:
        assert Path(p).is_relative_to(host["ws"]) and Path(p).read_bytes()[:4] == b"RIFF"
    assert Path(out["path"]).is_relative_to(host["ws"]) and _sha(Path(out["path"])) == _sha(Path(out["host_path"]))
    followed, followed_host = Path(out["followed"]), Path(out["followed_host"])
    assert followed.is_relative_to(host["ws"]) and followed_host.is_relative_to(host["home"])
    assert _sha(followed) == _sha(followed_host)


def test_unknown_key_and_plain_client_are_refused_by_name(host):
    stranger = host["root"] / "stranger"
    r = cli(NS_WS, stranger, "remote", "add", "studio", str(host["profile"]))
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    r = cli(NS_WS, stranger, "--host", "studio", "status", "--connect-timeout", "600")
    took = time.monotonic() - t0
    assert r.returncode == 3, (r.stdout, r.stderr)
    # The handshake's refusal, not a timeout (whose message is "no answer from studio ... within").
    assert "this workstation's key is not allowed on studio" in r.stderr and "no answer" not in r.stderr
    print(f"refusal named after {took:.2f} s")
    code = f"""
import json
from unimoe_audio.client import channel, connection, wire
info = connection.ConnectionInfo.model_validate_json(open({str(host['profile'])!r}).read())
ch = channel.Channel(info.model_copy(update={{"curve_server_key": None}}), timeout=600)
try:
    ch.request("ping")
except wire.WireError as exc:
    print(json.dumps({{"code": exc.code, "message": str(exc)}}))
"""
    r = in_ns(NS_WS, [sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["code"] == "curve_required"
    log = (host["home"] / "logs" / "daemon.log")
    wait_for(lambda: "refused client key" in log.read_text(errors="replace"), 60, "the host's log of the refusal")


def test_osc_from_the_other_namespace_only_when_allowed(host):
    code = """
import json, socket, sys, time
from unimoe_audio.daemon import osc_server
src, host = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.settimeout(0.2)
s.sendto(osc_server.build("/unimoe/ping", ["tag", "t1"]), (host, 9137))
deadline = time.monotonic() + float(sys.argv[3])
got = None
while time.monotonic() < deadline and got is None:
    try:
        data, _ = s.recvfrom(65535)
        got = osc_server.iter_messages(data)[0]
    except socket.timeout:
        pass
print(json.dumps(got))
"""
    # Allowed sender: answered with a pong.
    r = in_ns(NS_WS, [sys.executable, "-c", code, ADDR_WS, ADDR_HOST, "120"])
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got and got[0] == "/unimoe/pong", got
    # Another address in the same namespace, not in osc_allow: dropped, and the host says so in its log.
    log = host["home"] / "logs" / "daemon.log"
    proc = subprocess.Popen(["ip", "netns", "exec", NS_WS, sys.executable, "-c", code, ADDR_STRANGER, ADDR_HOST, "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_clean_env())
    try:
        wait_for(lambda: f"OSC from {ADDR_STRANGER} refused" in log.read_text(errors="replace"), 60,
                 "the host's log of the refused OSC sender")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert "/unimoe/" not in out  # nothing came back to the refused sender
    assert "WITHOUT AUTHENTICATION" in host["out"].read_text(errors="replace")  # the loud warning at start


def test_daemon_refuses_network_osc_without_an_allow_list(tmp_path):
    env = daemon_env(tmp_path, osc_host="0.0.0.0")
    r = subprocess.run([sys.executable, "-m", "unimoe_audio.daemon"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "osc_allow" in r.stderr


def test_serve_detach_status_and_stop_on_a_curve_host(host):
    """The host's own CLI talks to its Curve daemon (its own client key is allowed): 'serve --detach'
    returns once the daemon answers, 'status' and 'stop' work, all with CurveZMQ on."""
    home = host["root"] / "host2"
    env = _clean_env(UNIMOE_AUDIO_CURVE_ALLOW=str(host["root"] / "ws-client.public"), UNIMOE_AUDIO_OSC_PORT="0",
                     UNIMOE_AUDIO_DEVICE="cpu")
    if os.environ.get("UNIMOE_AUDIO_TEST_CACHE"):
        env["UNIMOE_AUDIO_CACHE_DIR"] = os.environ["UNIMOE_AUDIO_TEST_CACHE"]
    base = [*CLI, "--home", str(home)]
    r = in_ns(NS_HOST, [*base, "serve", "--detach", "--model", "tiny", "--host", ADDR_HOST, "--request-port", "9238",
                        "--control-port", "9239", "--events-port", "9240", "--json"], env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    try:
        info = json.loads((home / "run" / "daemon.json").read_text())
        assert info["curve_server_key"] and info["request_port"] == 9238
        r = in_ns(NS_HOST, [*base, "status", "--json"], env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["pid"] == info["pid"]
    finally:
        r = in_ns(NS_HOST, [*base, "stop", "--json"], env=env, timeout=300)
    assert r.returncode == 0, r.stderr


# -- a workstation's own media (issue #22) ------------------------------------------------------------
def ws_private(host: dict, media: Path, setup: str, args: list[str], *, timeout: float = 900
               ) -> subprocess.CompletedProcess[str]:
    """Run the CLI on the workstation with ``media`` on a tmpfs of its own mount namespace (made fresh by
    ``setup`` each time): files the host cannot see, at a path where the host has files of its own."""
    script = f"mount -t tmpfs tmpfs {media} && {setup} && exec \"$@\""
    return in_ns(NS_WS, ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *CLI, "--home",
                         str(host["ws"]), *args], timeout=timeout)


def _sine(path: Path, seconds: float, freq: int) -> str:
    return (f"ffmpeg -loglevel error -y -f lavfi -i sine=frequency={freq}:duration={seconds}:sample_rate=16000 "
            f"-ac 1 -c:a pcm_s16le -fflags +bitexact -flags +bitexact {path}")


def test_workstation_only_media_travel_with_the_request(host):
    if shutil.which("unshare") is None:
        pytest.skip("util-linux 'unshare' is not installed")
    media = host["root"] / "media"  # the same path on both machines; different files behind it
    media.mkdir(exist_ok=True)
    ref, video = media / "ref.wav", media / "clip.mp4"
    # the host's own files at those paths (inside its allowed roots): they must never be used
    subprocess.run(_sine(ref, 1.5, 220), shell=True, check=True)
    subprocess.run(f"ffmpeg -loglevel error -y -f lavfi -i color=red:size=64x64:rate=8:duration=1 {video}",
                   shell=True, check=True)
    host_ref_sha = _sha(ref)
    setup = (_sine(ref, 3.0, 440) + " && ffmpeg -loglevel error -y -f lavfi -i testsrc=size=96x64:rate=8:duration=2 "
             f"-f lavfi -i sine=frequency=330:duration=2 -shortest -c:v libx264 -pix_fmt yuv420p -c:a aac {video}"
             f" && sha256sum {ref} {video} >&2")
    log = host["home"] / "logs" / "daemon.log"
    uploads_before = log.read_text(errors="replace").count("complete from client")

    # voices add: the saved voice is the workstation's 3.0 s recording, not the host's 1.5 s one
    r = ws_private(host, media, setup, ["--host", "studio", "voices", "add", "wsvoice", "--audio", str(ref),
                                        "--text", "A steady tone.", "--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    ws_sha = {Path(line.split()[1]).name: line.split()[0] for line in r.stderr.splitlines()
              if len(line.split()) == 2 and len(line.split()[0]) == 64}
    assert ws_sha["ref.wav"] != host_ref_sha
    voice = json.loads(r.stdout)
    assert abs(voice["seconds"] - 3.0) < 0.3, voice

    # speak --ref-audio: the same file again is not sent again (content-addressed), and the job used it
    out = host["ws"] / "takes" / "line.wav"
    r = ws_private(host, media, setup, ["--host", "studio", "speak", "Hello from the workstation.", "--ref-audio",
                                        str(ref), "--ref-text", "A steady tone.", "--seconds", "1", "-o", str(out),
                                        "--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    side = json.loads(out.with_suffix(".json").read_text())
    used = Path(side["request"]["spec"]["reference_audio"])
    assert used != ref and used.is_relative_to(host["home"] / "data" / "uploads")
    assert _sha(used) == ws_sha["ref.wav"]

    # score a workstation-only video
    out2 = host["ws"] / "takes" / "score.wav"
    r = ws_private(host, media, setup, ["--host", "studio", "score", str(video), "--caption", "tense", "-o", str(out2),
                                        "--json"])
    assert r.returncode == 0, (r.stdout, r.stderr)
    side2 = json.loads(out2.with_suffix(".json").read_text())
    used2 = Path(side2["request"]["spec"]["video"])
    assert used2 != video and _sha(used2) == ws_sha["clip.mp4"]
    assert out2.read_bytes()[:4] == b"RIFF"
    # ref.wav went once (voices add), speak reused it; clip.mp4 once: two uploads in all
    assert log.read_text(errors="replace").count("complete from client") - uploads_before == 2

    # a remote client's plain path is never resolved on the host, even where the host has that file
    code = f"""
import json
from unimoe_audio.client.client import Client
from unimoe_audio.client.settings import load_settings
c = Client(load_settings(home={str(host['ws'])!r}, remote="studio"), auto_start=False)
try:
    c.channel.request("submit", {{"spec": {{"task": "speech", "text": "hi", "reference_audio": {str(ref)!r},
                                  "reference_text": "x"}}}})
except Exception as exc:
    print(json.dumps({{"code": exc.code, "field": exc.field, "message": str(exc)}}))
"""
    r = in_ns(NS_WS, [sys.executable, "-c", code])
    assert r.returncode == 0, r.stderr
    err = json.loads(r.stdout)
    assert err["code"] == "path_not_allowed" and err["field"] == "spec.reference_audio", err
    assert "remote" in err["message"]
