"""The Ray backend on a real local Ray cluster started by the test: a head with no CPUs and two worker
nodes of one CPU each (so each engine actor lands on its own node), the daemon on the tiny model with
``backend = ray``, real sockets, real processes. Killing an actor's process is a real SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import soundfile as sf

from _daemon_harness import DaemonProc, collect, free_port, music, visible_wavs, wait_final, wait_for

import ray  # noqa: E402,F401 - the test extra installs it; without it this module must fail, not skip

pytestmark = pytest.mark.slow

NODE_START_TIMEOUT = 180.0


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # `ray start --block` in its own session: the test ends the whole process group (raylet, workers).
    return subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--block", *args], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)


class RayCluster:
    def __init__(self, home: Path):
        self.home = home
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        # Nodes read their own settings from the environment: the same home, so they find the tiny model.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("UNIMOE_AUDIO_", "RAY_"))}
        self.env.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL="tiny", UNIMOE_AUDIO_DEVICE="cpu",
                        RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
        if os.environ.get("UNIMOE_AUDIO_TEST_CACHE"):
            self.env["UNIMOE_AUDIO_CACHE_DIR"] = os.environ["UNIMOE_AUDIO_TEST_CACHE"]
        # Ray's socket paths must stay short: a temp dir of its own under /tmp.
        self.tmp = tempfile.mkdtemp(prefix="ur-", dir="/tmp")

    def start(self) -> "RayCluster":
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--object-store-memory=200000000"]
        self.procs.append(_ray_start(["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                                      f"--temp-dir={self.tmp}", *common], self.env, self.home / "ray-head.log"))
        wait_for(lambda: _port_open(self.port) or self._dead(), NODE_START_TIMEOUT, 0.2, "the Ray head")
        assert not self._dead(), (self.home / "ray-head.log").read_text()
        # One worker node at a time, each tried up to three times: `ray start` gives a raylet a fixed 30 s to
        # register, which a machine that other work keeps busy can miss.
        for i in range(2):
            for attempt in range(3):
                log = self.home / f"ray-worker{i}-{attempt}.log"
                proc = _ray_start([f"--address={self.address}", "--num-cpus=1", *common], self.env, log)
                self.procs.append(proc)
                wait_for(lambda: self.alive_nodes() >= i + 2 or proc.poll() is not None, NODE_START_TIMEOUT, 1.0,
                         f"Ray worker node {i}")
                if proc.poll() is None:
                    break
                self._kill(proc)
            else:
                raise AssertionError(f"Ray worker node {i} did not start:\n{log.read_text()[-3000:]}")
        return self

    def _dead(self) -> bool:
        return self.procs[0].poll() is not None

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def alive_nodes(self) -> int:
        r = subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "status", f"--address={self.address}"],
                           env=self.env, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            return 0
        # "Active:" lists one "1 node_<id>" line per live node.
        active = r.stdout.split("Active:")[-1].split("Pending:")[0]
        return sum(1 for ln in active.splitlines() if "node_" in ln)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                pass
        # Raylets and workers can outlive `ray start --block`: end every process of each group.
        for p in self.procs:
            self._kill(p)


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RayCluster(tmp_path_factory.mktemp("rayhome"))
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture(scope="module")
def daemon(cluster):
    d = DaemonProc(cluster.home, backend="ray", ray_address=cluster.address, keep_alive=0, max_batch=4).start()
    yield d
    d.close()


def _status(ch):
    return ch.request("status", {})


def _ready_actors(ch, n: int = 2):
    def ready():
        st = _status(ch)
        actors = st["backend"]["actors"]
        return st if len(actors) == n and all(a["state"] in ("ready", "busy") for a in actors) else None
    return wait_for(ready, NODE_START_TIMEOUT, 0.5, f"{n} ready engine actors")


def test_status_lists_both_actors(daemon):
    ch = daemon.channel(timeout=60)
    st = _ready_actors(ch)
    b = st["backend"]
    assert b["kind"] == "ray" and b["state"] == "ready" and b["address"] == daemon.settings.ray_address
    nodes = {a["node"] for a in b["actors"]}
    assert len(nodes) == 2, "one actor per one-CPU worker node"
    assert all(a["device"] == "cpu" and a["pid"] for a in b["actors"])
    assert st["tiny"] is True


def test_sixteen_jobs_across_two_actors(daemon):
    ch = daemon.channel(timeout=60)
    _ready_actors(ch)
    sub = ch.subscribe(["job."])
    time.sleep(0.3)
    out = daemon.home / "sixteen"
    seconds = [0.5 + 0.25 * (i % 4) for i in range(16)]
    ids = [ch.request("submit", music(s, caption=f"cue {i}", output={"folder": str(out)}))["job_id"]
           for i, s in enumerate(seconds)]
    events = collect(sub, ids, timeout=900)
    actors_used = set()
    for job_id, s in zip(ids, seconds):
        final = events[job_id][-1]
        assert final.msg_type == "done", final.content
        info = sf.info(final.content["path"])
        assert info.frames == round(s * info.samplerate), (s, info.frames)
        actors_used |= {m.content.get("actor") for m in events[job_id] if m.msg_type == "started"}
    assert actors_used == {"unimoe-engine-0", "unimoe-engine-1"}
    assert len(visible_wavs(out)) == 16
    sub.close()


def _running_on(ch, job_id):
    for a in _status(ch)["backend"]["actors"]:
        if job_id in a["running"]:
            return a
    return None


def _until_progress(sub, job_id, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sub.recv(timeout=5)
        if m is not None and m.content.get("job_id") == job_id and m.msg_type == "progress" \
                and m.content.get("stage") == "generate" and m.content.get("frames", 0) > 0:
            return m
    raise AssertionError("the job never reached the generate stage")


def test_killed_actor_reruns_its_job_once(daemon):
    ch = daemon.channel(timeout=60)
    _ready_actors(ch)
    sub = ch.subscribe(["job."])
    time.sleep(0.3)
    out = daemon.home / "killed"
    job = ch.request("submit", music(8.0, caption="long cue", output={"folder": str(out)}))["job_id"]
    _until_progress(sub, job)
    actor = wait_for(lambda: _running_on(ch, job), 60, 0.1, "the actor running the job")
    os.kill(actor["pid"], signal.SIGKILL)
    final, seen = wait_final(sub, job, timeout=900)
    assert final.msg_type == "done", final.content
    kinds = [m.msg_type for m in seen]
    assert "requeued" in kinds
    started = [m.content for m in seen if m.msg_type == "started"]
    assert [s["attempt"] for s in started][-1] == 2
    assert len(visible_wavs(out)) == 1, "one output, no duplicate"
    assert sf.info(final.content["path"]).frames == 8 * 48000
    # The killed actor comes back (Ray restarts it) with a new process.
    st = _ready_actors(ch)
    same = [a for a in st["backend"]["actors"] if a["name"] == actor["name"]][0]
    assert same["pid"] != actor["pid"]
    sub.close()


def test_cancel_running_ray_job(daemon):
    ch = daemon.channel(timeout=60)
    _ready_actors(ch)
    sub = ch.subscribe(["job."])
    time.sleep(0.3)
    job = ch.request("submit", music(20.0, caption="to cancel"))["job_id"]
    _until_progress(sub, job)
    ch.request("cancel", {"job_id": job})
    final, _ = wait_final(sub, job, timeout=600)
    assert final.msg_type == "cancelled"
    # The actor is free again and serves the next job.
    nxt = ch.request("submit", music(0.5))["job_id"]
    final, _ = wait_final(sub, nxt, timeout=600)
    assert final.msg_type == "done"
    sub.close()


def test_unreachable_cluster_is_backend_unavailable(tmp_path):
    port = free_port()  # nothing listens there
    d = DaemonProc(tmp_path, backend="ray", ray_address=f"127.0.0.1:{port}").start()
    try:
        ch = d.channel(timeout=60)
        sub = ch.subscribe(["job."])
        time.sleep(0.3)
        job = ch.request("submit", music(0.5))["job_id"]
        final, _ = wait_final(sub, job, timeout=120)
        assert final.msg_type == "failed"
        assert final.content["error"]["code"] == "backend_unavailable"
        st = _status(ch)
        assert st["backend"]["state"] == "unavailable"
        assert st["backend"]["error"]["code"] == "backend_unavailable"
        sub.close()
    finally:
        d.close()
