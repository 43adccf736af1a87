"""Remote workstations without a daemon: keys, profiles (the real CLI), the host's allow list from files,
the fetch receiver's checks, buffers on the wire, fixed network ports, the OSC sender allow list.
The end-to-end path across two network namespaces is tests/test_remote_netns.py."""
from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from unimoe_audio.client import protocol as P
from unimoe_audio.client import channel, connection, remote, wire
from unimoe_audio.client.settings import NETWORK_PORTS, load_settings
from unimoe_audio.daemon import osc_server

CLI = [sys.executable, "-m", "unimoe_audio.client"]


def cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    return subprocess.run([*CLI, "--home", str(home), *args], capture_output=True, text=True, timeout=timeout, env=env)


def _profile(tmp_path: Path, **update) -> Path:
    info = connection.ConnectionInfo(host="192.0.2.10", request_port=9138, control_port=9139, events_port=9140,
                               key=wire.new_key(), curve_server_key=zmq.curve_keypair()[0].decode(), pid=4242)
    path = tmp_path / "studio.json"
    path.write_text(json.dumps(info.model_copy(update=update).model_dump(mode="json")))
    os.chmod(path, 0o644)  # as copied from another machine: profiles are read whatever their mode
    return path


def test_keys_made_once_and_shown(tmp_path):
    r = cli(tmp_path, "keys", "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)
    assert remote.is_z85_key(first["public"]) and first["created"] is True
    assert Path(first["public_file"]).read_text().strip() == first["public"]
    secret = Path(first["public_file"]).with_name("client.secret")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    r = cli(tmp_path, "keys")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == first["public"]
    again = json.loads(cli(tmp_path, "keys", "--json").stdout)
    assert again["public"] == first["public"] and again["created"] is False


def test_profiles_add_ls_rm_and_selection(tmp_path):
    home = tmp_path / "ws"
    src = _profile(tmp_path)
    r = cli(home, "remote", "add", "studio", str(src), "--json")
    assert r.returncode == 0, r.stderr
    installed = Path(json.loads(r.stdout)["profile"])
    assert stat.S_IMODE(installed.stat().st_mode) == 0o600  # it holds the signing key
    data = json.loads(installed.read_text())
    assert data["name"] == "studio" and data["pid"] == 0  # no pid check for a remote profile
    assert cli(home, "remote", "add", "studio", str(src)).returncode == 2  # exists: --force replaces
    assert cli(home, "remote", "add", "studio", str(src), "--force").returncode == 0
    rows = json.loads(cli(home, "--host", "studio", "remote", "ls", "--json").stdout)
    assert rows == [{"name": "studio", "host": "192.0.2.10", "ports": [9138, 9139, 9140], "selected": True}]
    r = cli(home, "--host", "nosuch", "status")
    assert r.returncode == 3 and "no remote profile named 'nosuch'" in r.stderr and "studio" in r.stderr
    r = cli(home, "remote", "rm", "studio")
    assert r.returncode == 0 and not installed.exists()
    assert cli(home, "remote", "rm", "studio").returncode == 2
    assert cli(home, "remote", "add", "../evil", str(src)).returncode == 2


def test_profiles_that_cannot_work_are_refused(tmp_path):
    home = tmp_path / "ws"
    r = cli(home, "remote", "add", "plain", str(_profile(tmp_path, curve_server_key=None)))
    assert r.returncode == 2 and "curve_server_key" in r.stderr
    r = cli(home, "remote", "add", "any", str(_profile(tmp_path, host="0.0.0.0")))
    assert r.returncode == 2 and "--address" in r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = cli(home, "remote", "add", "bad", str(bad))
    assert r.returncode == 2 and "not a connection profile" in r.stderr


def test_export_needs_a_network_daemon(tmp_path):
    conn = tmp_path / "daemon.json"
    base = dict(request_port=1, control_port=2, events_port=3, key=wire.new_key(), pid=os.getpid())
    connection.write_connection_file(conn, connection.ConnectionInfo(host="127.0.0.1", **base))
    with pytest.raises(remote.RemoteSetupError, match="serve --host"):
        remote.export_profile(conn)
    key = zmq.curve_keypair()[0].decode()
    connection.write_connection_file(conn, connection.ConnectionInfo(host="0.0.0.0", curve_server_key=key, **base))
    with pytest.raises(remote.RemoteSetupError, match="--address"):
        remote.export_profile(conn)
    info = remote.export_profile(conn, "198.51.100.7")
    assert (info.host, info.pid, info.curve_server_key) == ("198.51.100.7", 0, key)
    r = cli(tmp_path / "nohost", "remote", "export", str(tmp_path / "p.json"))
    assert r.returncode == 3 and "no daemon connection file" in r.stderr


def test_a_profile_whose_host_does_not_answer(tmp_path):
    home = tmp_path / "ws"
    port = channel.free_port()
    src = _profile(tmp_path, host="127.0.0.1", request_port=port, control_port=port, events_port=port)
    assert cli(home, "remote", "add", "gone", str(src)).returncode == 0
    r = cli(home, "--host", "gone", "status", "--connect-timeout", "2")
    assert r.returncode == 3 and "no answer from gone" in r.stderr and "firewall" in r.stderr


def test_allow_list_takes_strings_files_and_folders(tmp_path):
    keys = [zmq.curve_keypair()[0].decode() for _ in range(4)]
    for _ in range(10_000):  # about 40% of keys hold a '#' (a Z85 character), not a comment
        hashed = zmq.curve_keypair()[0].decode()
        if "#" in hashed[:20]:
            break
    assert "#" in hashed[:20]
    keys.append(hashed)
    one = tmp_path / "alice.public"
    one.write_text(keys[1] + "\n")
    many = tmp_path / "team.txt"
    many.write_text(f"# the studio\n{keys[2]}  # bob\n\n{keys[4]}\n")
    folder = tmp_path / "keys"
    folder.mkdir()
    (folder / "carol.public").write_text(keys[3])
    got = remote.load_allowed_keys([keys[0], str(one), str(many), str(folder)])
    assert got == {k.encode() for k in keys}
    with pytest.raises(remote.RemoteSetupError, match="neither a Z85"):
        remote.load_allowed_keys([str(tmp_path / "missing.public")])
    (tmp_path / "broken.txt").write_text("not-a-key\n")
    with pytest.raises(remote.RemoteSetupError, match="broken.txt:1"):
        remote.load_allowed_keys([str(tmp_path / "broken.txt")])
    # the settings split keeps Z85 keys whole (they may hold ':' and '.') and paths apart
    s = load_settings(home=tmp_path, curve_allow=f"{keys[0]}, {one}")
    assert remote.load_allowed_keys(s.curve_allow) == {keys[0].encode(), keys[1].encode()}


def test_fixed_ports_beyond_loopback(tmp_path):
    local = load_settings(home=tmp_path)
    assert [local.listen_port(w) for w in NETWORK_PORTS] == [0, 0, 0]
    net = load_settings(home=tmp_path, host="0.0.0.0")
    assert [net.listen_port(w) for w in NETWORK_PORTS] == [9138, 9139, 9140]
    assert load_settings(home=tmp_path, host="0.0.0.0", request_port=7000).listen_port("request") == 7000


def test_osc_sender_allow_list():
    nets = osc_server.parse_allow(["10.1.2.3", "192.168.7.0/24"])
    assert osc_server.sender_allowed("10.1.2.3", nets) and osc_server.sender_allowed("192.168.7.99", nets)
    assert not osc_server.sender_allowed("10.1.2.4", nets) and not osc_server.sender_allowed("192.168.8.1", nets)
    assert osc_server.sender_allowed("127.0.0.1", nets) and osc_server.sender_allowed("::1", nets)
    assert osc_server.sender_allowed("::ffff:10.1.2.3", nets)
    with pytest.raises(ValueError, match="not an IP"):
        osc_server.parse_allow(["studio.example"])


def test_buffers_are_signed():
    key = wire.new_key()
    frames, _ = wire.serialize("fetch_reply", {"x": 1}, key=key, buffers=[b"\x00audio"])
    msg = wire.deserialize(frames, key=key.encode())
    assert msg.buffers == [b"\x00audio"]
    tampered = frames[:-1] + [b"\x01audio"]
    with pytest.raises(wire.WireError) as err:
        wire.deserialize(tampered, key=key.encode())
    assert err.value.code == "bad_signature"


def _server(data: bytes, *, lie_sha: bool = False, change_after: int | None = None):
    """A fetch responder over real bytes (the checks under test are the receiver's)."""
    calls = {"n": 0}

    def request(req: P.FetchRequest) -> wire.Message:
        calls["n"] += 1
        blob = data if change_after is None or calls["n"] <= change_after else data[::-1]
        sha = hashlib.sha256(blob).hexdigest() if not lie_sha else "0" * 64
        chunk = blob[req.offset:req.offset + req.size]
        content = P.dump(P.FetchReply(job_id=req.job_id, name="x.wav", total_size=len(blob), sha256=sha,
                                      offset=req.offset, length=len(chunk)))
        frames, _ = wire.serialize("fetch_reply", content, key="k", buffers=[chunk])
        return wire.deserialize(frames, key=b"k")

    return request, calls


def test_receiver_checks_hash_and_writes_atomically(tmp_path):
    data = os.urandom(300_000)
    dest = tmp_path / "out" / "cue.wav"
    request, calls = _server(data)
    rep = remote.receive_file(request, "j1", dest, chunk=64 * 1024)
    assert dest.read_bytes() == data and rep.total_size == len(data) and calls["n"] == 5
    dest.write_bytes(b"old take")
    request, _ = _server(data, lie_sha=True)
    with pytest.raises(wire.WireError, match="sha256"):
        remote.receive_file(request, "j1", dest, chunk=64 * 1024)
    assert dest.read_bytes() == b"old take"  # the old file stays whole
    assert sorted(p.name for p in dest.parent.iterdir()) == ["cue.wav"]  # no temporary left
    # A file replaced on the host mid-transfer is fetched again from the start.
    request, calls = _server(data, change_after=2)
    remote.receive_file(request, "j1", dest, chunk=64 * 1024)
    assert dest.read_bytes() == data[::-1]
