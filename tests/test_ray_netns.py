"""The Ray backend on a studio-shaped cluster with Ray's token authentication, built by this test from
network namespaces (a bridge in the head's namespace, a veth to each node's; private addresses that exist
only inside them, removed at the end):

* the head namespace runs the Ray head and the daemon (``backend = ray``), with the token;
* each node namespace runs a one-CPU Ray worker node, in a mount namespace where the daemon's home is an
  empty tmpfs (a node sees none of the daemon's files; it has its own home and its own tiny model).

Proves, as docs/ray.md sets it up (token generated once, read from a file by every node and the daemon):
a node without the token cannot join; a node that joins a running daemon gets an engine actor; with every
node gone a submitted job waits (queued, no attempt spent) and runs once when a node returns; `ps` shows
each actor's node and model and no authentication warning.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _daemon_harness import daemon_env, wait_for
from _ray_cluster import NODE_START_TIMEOUT

import ray  # noqa: F401 - the test extra installs it; without it this module must fail, not skip

pytestmark = pytest.mark.slow
ACTORS_READY_TIMEOUT = 900.0  # a process start and a model load per actor, on a loaded 2-core machine

CLI = [sys.executable, "-m", "unimoe_audio.client"]
SUFFIX = f"{os.getpid() % 100000}"
NET = f"10.214.{os.getpid() % 250}"
HEAD_NS = f"ur-head-{SUFFIX}"
HEAD_ADDR = f"{NET}.1"
RAY_PORT = 6390
BRIDGE = f"urbr{SUFFIX}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


def _namespaces_unavailable() -> str | None:
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        return "the 'ip' (iproute2) or 'unshare' (util-linux) command is missing"
    if os.geteuid() != 0:
        return "making network namespaces needs root (CAP_SYS_ADMIN)"
    r = _ip("netns", "add", f"ur-probe-{SUFFIX}", check=False)
    if r.returncode != 0:
        return f"'ip netns add' failed here: {r.stderr.strip()}"
    _ip("netns", "del", f"ur-probe-{SUFFIX}", check=False)
    return None


class Studio:
    """The namespaces, the token, the head; nodes come and go with add_node/kill_node."""

    def __init__(self, root: Path):
        self.root = root
        self.token_path = root / "ray-token"
        self.daemon_home = root / "daemon-home"
        self.daemon_home.mkdir()
        self.tmp = Path(tempfile.mkdtemp(prefix="urn-", dir="/tmp"))  # Ray's sockets: short paths
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes: dict[int, subprocess.Popen[bytes]] = {}
        self._next = 10

    # network ------------------------------------------------------------------------------------------
    def make_network(self) -> None:
        _ip("netns", "add", HEAD_NS)
        _ip("-n", HEAD_NS, "link", "add", BRIDGE, "type", "bridge")
        _ip("-n", HEAD_NS, "addr", "add", f"{HEAD_ADDR}/24", "dev", BRIDGE)
        _ip("-n", HEAD_NS, "link", "set", BRIDGE, "up")
        _ip("-n", HEAD_NS, "link", "set", "lo", "up")

    def _node_ns(self, i: int) -> tuple[str, str]:
        ns, addr = f"ur-node{i}-{SUFFIX}", f"{NET}.{i}"
        if _ip("netns", "list").stdout.find(ns) < 0:
            _ip("netns", "add", ns)
            outer, inner = f"urh{i}x{SUFFIX}"[:15], f"urn{i}x{SUFFIX}"[:15]
            _ip("link", "add", outer, "netns", HEAD_NS, "type", "veth", "peer", "name", inner, "netns", ns)
            _ip("-n", HEAD_NS, "link", "set", outer, "master", BRIDGE)
            _ip("-n", HEAD_NS, "link", "set", outer, "up")
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        return ns, addr

    def remove_network(self) -> None:
        for i in range(10, self._next):
            _ip("netns", "del", f"ur-node{i}-{SUFFIX}", check=False)
        _ip("netns", "del", HEAD_NS, check=False)

    # environment --------------------------------------------------------------------------------------
    def env(self, *, token: bool = True, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNIMOE_AUDIO_", "RAY_"))}
        env.update(RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
        if token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        elif "HOME" not in extra:
            env["HOME"] = str(self.root / "no-token-home")  # no ~/.ray/auth_token to fall back on
        return env

    def generate_token(self) -> None:
        """`ray get-auth-token --generate`, once, as docs/ray.md says (HOME pointed here so the token lands in
        this test's folder, then kept as the file every node and the daemon read)."""
        home = self.root / "token-home"
        env = self.env(token=False, HOME=str(home))
        r = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"], env=env,
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        shutil.copy(home / ".ray" / "auth_token", self.token_path)
        self.token_path.chmod(0o600)
        assert self.token_path.read_text().strip() == r.stdout.strip()

    # Ray processes ------------------------------------------------------------------------------------
    def _start(self, ns: str, args: list[str], env: dict[str, str], log: Path, hide_daemon: bool
               ) -> subprocess.Popen[bytes]:
        ray_start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
                     "--object-store-memory=200000000", f"--temp-dir={self.tmp / ns}", *args]
        if hide_daemon:
            # the node's own mount namespace: the daemon's home is an empty tmpfs there
            inner = f"mount -t tmpfs tmpfs {self.daemon_home} && exec \"$@\""
            cmd = ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", inner,
                   "sh", *ray_start]
        else:
            cmd = ["ip", "netns", "exec", ns, *ray_start]
        return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_head(self) -> None:
        p = self._start(HEAD_NS, ["--head", f"--port={RAY_PORT}", "--num-cpus=0", "--include-dashboard=false",
                                  f"--node-ip-address={HEAD_ADDR}"], self.env(), self.root / "head.log", False)
        self.procs.append(p)
        wait_for(lambda: self.alive_nodes() >= 1 or p.poll() is not None, NODE_START_TIMEOUT, 1.0, "the Ray head")
        assert p.poll() is None, (self.root / "head.log").read_text()[-3000:]

    def node_env(self, i: int, token: bool = True) -> dict[str, str]:
        home = self.root / f"node{i}-home"  # the node's own settings and model: it cannot see the daemon's
        return self.env(token=token, UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL="tiny",
                        UNIMOE_AUDIO_DEVICE="cpu", UNIMOE_AUDIO_CACHE_DIR=str(home / "cache"))

    def add_node(self, *, token: bool = True) -> tuple[int, subprocess.Popen[bytes]]:
        i = self._next
        self._next += 1
        ns, addr = self._node_ns(i)
        want = self.alive_nodes() + 1
        log = self.root / f"node{i}.log"
        p = self._start(ns, [f"--address={HEAD_ADDR}:{RAY_PORT}", "--num-cpus=1", f"--node-ip-address={addr}"],
                        self.node_env(i, token), log, True)
        self.procs.append(p)
        if token:
            wait_for(lambda: self.alive_nodes() >= want or p.poll() is not None, NODE_START_TIMEOUT, 1.0, f"node {i}")
            assert p.poll() is None, log.read_text()[-3000:]
            self.nodes[i] = p
        return i, p

    def kill_node(self, i: int) -> None:
        p = self.nodes.pop(i)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)

    def alive_nodes(self) -> int:
        r = subprocess.run(["ip", "netns", "exec", HEAD_NS, sys.executable, "-m", "ray.scripts.scripts", "status",
                            f"--address={HEAD_ADDR}:{RAY_PORT}"], env=self.env(), capture_output=True, text=True,
                           timeout=120)
        if r.returncode != 0:
            return 0
        active = r.stdout.split("Active:")[-1].split("Pending:")[0]
        return sum(1 for ln in active.splitlines() if "node_" in ln)

    # the daemon ---------------------------------------------------------------------------------------
    def start_daemon(self) -> None:
        env = daemon_env(self.daemon_home, backend="ray", ray_address=f"{HEAD_ADDR}:{RAY_PORT}", keep_alive=0,
                         ray_unavailable_s=3600)
        env.update({k: v for k, v in self.env().items() if k.startswith("RAY_")})
        env.pop("UNIMOE_AUDIO_CACHE_DIR", None)
        self.daemon_env = env
        out = (self.root / "daemon.out").open("wb")
        p = subprocess.Popen(["ip", "netns", "exec", HEAD_NS, sys.executable, "-m", "unimoe_audio.daemon"], env=env,
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        wait_for(lambda: (self.daemon_home / "run" / "daemon.json").is_file() or p.poll() is not None, 300, 1.0,
                 "the daemon")
        assert p.poll() is None, (self.root / "daemon.out").read_text()[-3000:]

    def cli(self, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", HEAD_NS, *CLI, *args], env=self.daemon_env,
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> dict:
        r = self.cli("status", "--json", timeout=120)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    reason = _namespaces_unavailable()
    if reason:
        pytest.skip(f"network namespaces cannot be made: {reason}")
    s = Studio(tmp_path_factory.mktemp("studio"))
    try:
        s.make_network()
        s.generate_token()
        s.start_head()
        yield s
    finally:
        s.stop()
        s.remove_network()


def _usable(st: dict) -> list[dict]:
    return [a for a in st["backend"]["actors"] if a["state"] in ("ready", "busy")]


def _with_usable(st: dict, n: int) -> dict | None:
    return st if len(_usable(st)) == n else None


def test_a_node_without_the_token_cannot_join(studio):
    before = studio.alive_nodes()
    i, p = studio.add_node(token=False)
    # `ray start` without the token is refused by the head: it exits, and the cluster never counts it
    wait_for(lambda: p.poll() is not None, NODE_START_TIMEOUT, 1.0, "the token-less node to give up")
    assert p.returncode != 0
    log = (studio.root / f"node{i}.log").read_text(errors="replace")
    assert "auth" in log.lower() or "token" in log.lower(), log[-3000:]
    assert studio.alive_nodes() == before


def test_nodes_join_leave_and_jobs_wait_for_capacity(studio):
    first, _ = studio.add_node()
    studio.start_daemon()
    st = wait_for(lambda: _with_usable(studio.status(), 1), ACTORS_READY_TIMEOUT, 1.0, "the first node's engine actor")
    b = st["backend"]
    assert b["auth"] is True and not any("token authentication" in w for w in b["warnings"]), b
    assert st.get("model_dir") is None  # the daemon serves no model of its own

    # a node that joins the running daemon gets an actor, without a restart
    second, _ = studio.add_node()
    st = wait_for(lambda: _with_usable(studio.status(), 2), ACTORS_READY_TIMEOUT, 1.0,
                  "the joining node's engine actor")
    actors = _usable(st)
    assert len({a["node"] for a in actors}) == 2 and all(a["model_hash"] and a["tiny"] for a in actors)
    r = studio.cli("ps")
    assert r.returncode == 0 and "2 of 2 engine actors, token auth" in r.stdout and "warning" not in r.stdout, \
        r.stdout
    for a in actors:  # each actor's node and model on its line
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(a["name"]))
        assert a["node"] in line and a["model_hash"][:8] in line and "TINY" in line, line
    out = studio.daemon_home / "out"
    r = studio.cli("music", "a cue from a node", "--seconds", "0.5", "-o", str(out / "one.wav"))
    assert r.returncode == 0 and (out / "one.wav").is_file(), r.stderr

    # every node gone: a job waits (queued, no attempt spent) and runs once when a node returns
    studio.kill_node(first)
    studio.kill_node(second)
    wait_for(lambda: studio.status()["backend"]["state"] == "waiting", NODE_START_TIMEOUT, 1.0,
             "the daemon to wait for Ray capacity")
    r = studio.cli("music", "waits for a node", "--seconds", "0.5", "-o", str(out / "waited.wav"), "--no-wait",
                   "--json")
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)["job"]
    for _ in range(4):
        time.sleep(3)
        jobs = {j["job_id"]: j for j in json.loads(studio.cli("jobs", "ls", "--json").stdout)}
        assert jobs[job]["state"] == "queued" and jobs[job].get("attempts", 0) == 0, jobs[job]
    assert "waiting for Ray capacity" in studio.cli("ps").stdout
    studio.add_node()
    r = studio.cli("jobs", "wait", job, "--json")
    assert r.returncode == 0, r.stderr
    assert (out / "waited.wav").is_file()
    jobs = {j["job_id"]: j for j in json.loads(studio.cli("jobs", "ls", "--json").stdout)}
    assert jobs[job]["state"] == "done" and jobs[job].get("attempts", 0) <= 1, jobs[job]
