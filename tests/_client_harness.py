"""Shared helpers of the client/CLI tests: a real daemon process in a temporary UNIMOE_AUDIO_HOME.

No mocks: the CLI runs as a child process (``python -m unimoe_audio.client``), the daemon as another
(started by ``unimoe-audio serve --detach`` or by the client's auto-start), on the tiny model.

Waits follow progress (tests/_progress.py): a CLI run is given up only when it has printed nothing and
the daemon in its home has not moved for a long while, so a loaded machine makes tests slower, not red.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _progress import STALL_S, Watch

CLI = [sys.executable, "-m", "unimoe_audio.client"]

# One cache folder for the whole test session, so the tiny model bundle is built once (its build is atomic
# and idempotent, so daemons in different homes can share it).
_SHARED_CACHE = os.environ.get("UNIMOE_AUDIO_TEST_CACHE")
if not _SHARED_CACHE:
    import atexit
    import tempfile

    _SHARED_CACHE = tempfile.mkdtemp(prefix="unimoe-client-tests-cache-")
    atexit.register(shutil.rmtree, _SHARED_CACHE, True)


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(
        UNIMOE_AUDIO_HOME=str(home),
        UNIMOE_AUDIO_OSC_PORT=str(free_udp_port()),
        UNIMOE_AUDIO_DEVICE="cpu",
        UNIMOE_AUDIO_CACHE_DIR=_SHARED_CACHE,
        UNIMOE_AUDIO_LOG_LEVEL="DEBUG",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class Run:
    code: int
    out: str
    err: str
    argv: list[str] = field(default_factory=list)

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except json.JSONDecodeError as exc:  # pragma: no cover - failure message
            raise AssertionError(f"stdout of {self.argv} is not JSON ({exc}):\n{self.out}\nstderr:\n{self.err}")

    def ok(self) -> "Run":
        assert self.code == 0, f"{self.argv} exited {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self


def cli(env: dict[str, str], *args: str, timeout: float = STALL_S, cwd: Path | None = None) -> Run:
    """Run the CLI; ``timeout``: seconds without progress (a line printed, or the jobs and logs of the
    daemon in env's UNIMOE_AUDIO_HOME moving) before it is killed and the test fails."""
    import threading

    argv = [*CLI, *args]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    chunks: dict[str, list[str]] = {"out": [], "err": []}
    lines = [0]

    def pump(stream: Any, key: str) -> None:
        for line in stream:
            chunks[key].append(line)
            lines[0] += 1

    readers = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in readers:
        t.start()
    home = env.get("UNIMOE_AUDIO_HOME")
    watch = Watch.home(Path(home), extra=lambda: lines[0]) if home else Watch(extra=lambda: lines[0])
    try:
        watch.wait(lambda: proc.poll() is not None, f"unimoe-audio {' '.join(args)}", 0.05, timeout)
    except AssertionError as exc:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{exc}\nstdout:\n{''.join(chunks['out'])}\nstderr:\n{''.join(chunks['err'])}") from None
    for t in readers:
        t.join()
    return Run(proc.returncode, "".join(chunks["out"]), "".join(chunks["err"]), list(args))


def wait_progress(env: dict[str, str], predicate: Any, what: str = "condition", every: float = 0.3) -> Any:
    """Wait for ``predicate`` while the daemon in env's home makes progress (fails on a long stall)."""
    return Watch.home(Path(env["UNIMOE_AUDIO_HOME"])).wait(predicate, what, every)


class Daemon:
    """A daemon started with ``unimoe-audio serve --detach`` in ``home``; ``stop()`` shuts it down."""

    def __init__(self, home: Path, **extra_env: str):
        self.home = home
        self.env = make_env(home, **extra_env)
        r = cli(self.env, "serve", "--detach", "--json", "--connect-timeout", str(STALL_S))
        if r.code != 0:
            log = home / "logs"
            logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in log.glob("*.log")) if log.is_dir() else ""
            raise RuntimeError(f"serve --detach failed ({r.code}):\n{r.out}\n{r.err}\n{logs}")
        self.pid = int(r.json()["pid"])

    @classmethod
    def attach(cls, home: Path, env: dict[str, str]) -> "Daemon":
        """The daemon already running in ``home`` (e.g. auto-started), to stop it."""
        d = cls.__new__(cls)
        d.home, d.env = home, env
        conn = json.loads((home / "run" / "daemon.json").read_text())
        d.pid = int(conn["pid"])
        return d

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        # a zombie of ours would still answer kill(0); the daemon is not our child, so this is accurate
        return True

    def stop(self) -> None:
        from unimoe_audio.client.client import Client, ClientError
        from unimoe_audio.client.settings import load_settings

        try:
            c = Client(load_settings(home=self.home), auto_start=False, connect_timeout=5, timeout=5)
            try:
                c.shutdown(requeue_running=False, wait=15)
            finally:
                c.close()
        except ClientError:
            pass
        deadline = time.monotonic() + 15
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    data = json.loads(out)
    stream = data["streams"][0]
    return {
        "sample_rate": int(stream["sample_rate"]),
        "channels": int(stream["channels"]),
        "codec": stream["codec_name"],
        "duration": float(data["format"]["duration"]),
    }


def make_reference_speech(path: Path, text: str = "Hello there, this is a short test.") -> Path:
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return path


def make_video(path: Path, seconds: float = 2.0) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size=96x64:rate=10",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-shortest", "-pix_fmt", "yuv420p", str(path)],
        check=True, capture_output=True,
    )
    return path


def wait_for(predicate, timeout: float = 60.0, every: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
