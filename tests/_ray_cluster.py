"""A real local Ray cluster for tests and benchmarks: a head with no CPUs and worker nodes of one CPU each
(so each engine actor lands on its own node), every node a `ray start --block` process group of its own.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from _daemon_harness import forced_dtype_env, free_port, wait_for

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
        self.workers: list[subprocess.Popen[bytes]] = []  # the live worker nodes' `ray start` processes
        # Nodes read their own settings from the environment: the same home, so they find the tiny model.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("UNIMOE_AUDIO_", "RAY_"))}
        self.env.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL="tiny", UNIMOE_AUDIO_DEVICE="cpu",
                        RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1", RAY_AUTH_MODE="disabled")
        self.env.update(forced_dtype_env())  # the actors serve with the test run's dtype
        if os.environ.get("UNIMOE_AUDIO_TEST_CACHE"):
            self.env["UNIMOE_AUDIO_CACHE_DIR"] = os.environ["UNIMOE_AUDIO_TEST_CACHE"]
        # Ray's socket paths must stay short: a temp dir of its own under /tmp.
        self.tmp = tempfile.mkdtemp(prefix="ur-", dir="/tmp")

    def start(self, workers: int = 2) -> "RayCluster":
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--object-store-memory=200000000"]
        self.procs.append(_ray_start(["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                                      f"--temp-dir={self.tmp}", *common], self.env, self.home / "ray-head.log"))
        wait_for(lambda: _port_open(self.port) or self._dead(), NODE_START_TIMEOUT, 0.2, "the Ray head")
        assert not self._dead(), (self.home / "ray-head.log").read_text()
        for _ in range(workers):
            self.add_worker()
        return self

    def add_worker(self) -> subprocess.Popen[bytes]:
        """Start one more one-CPU worker node and wait until the cluster counts it. Tried up to three times:
        `ray start` gives a raylet a fixed 30 s to register, which a machine that other work keeps busy can miss."""
        common = ["--node-ip-address=127.0.0.1", "--disable-usage-stats", "--object-store-memory=200000000"]
        want = self.alive_nodes() + 1
        i = len(self.workers)
        for attempt in range(3):
            log = self.home / f"ray-worker{i}-{attempt}.log"
            proc = _ray_start([f"--address={self.address}", "--num-cpus=1", *common], self.env, log)
            self.procs.append(proc)
            wait_for(lambda: self.alive_nodes() >= want or proc.poll() is not None, NODE_START_TIMEOUT, 1.0,
                     f"Ray worker node {i}")
            if proc.poll() is None:
                self.workers.append(proc)
                return proc
            self._kill(proc)
        raise AssertionError(f"Ray worker node {i} did not start:\n{log.read_text()[-3000:]}")

    def kill_worker(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a worker node's whole process group (raylet, its actors): the node is gone, as when a
        machine is switched off."""
        self._kill(proc)
        proc.wait(30)
        self.workers.remove(proc)

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
        shutil.rmtree(self.tmp, ignore_errors=True)


def _port_open(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
