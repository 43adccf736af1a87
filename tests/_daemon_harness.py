"""Helpers of the daemon tests: the real daemon (``python -m unimoe_audio.daemon``) as a child process
on the tiny model, in a temporary UNIMOE_AUDIO_HOME, on free loopback ports; real sockets, no mocks.

Waits follow progress (tests/_progress.py): starting fails when the daemon stops writing output before
its connection file appears, event waits fail when no event arrives for a long while, job waits fail
when the queue database stops moving; none fails merely because a loaded machine is slow.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from unimoe_audio.client import channel, connection, wire
from unimoe_audio.client.settings import load_settings

from _progress import STALL_S, Watch, sizes

START_TIMEOUT = STALL_S  # seconds without any daemon output before a start counts as hung


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_env(home: Path, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(
        UNIMOE_AUDIO_HOME=str(home),
        UNIMOE_AUDIO_MODEL="tiny",
        UNIMOE_AUDIO_DEVICE="cpu",
        UNIMOE_AUDIO_OSC_PORT=str(free_port(socket.SOCK_DGRAM)),
        UNIMOE_AUDIO_LOG_LEVEL="DEBUG",
        UNIMOE_AUDIO_ALLOWED_ROOTS=str(home),
        PYTHONUNBUFFERED="1",
    )
    # Share one tiny model across tests (built once per session folder) through cache_dir.
    shared = os.environ.get("UNIMOE_AUDIO_TEST_CACHE")
    if shared:
        env["UNIMOE_AUDIO_CACHE_DIR"] = shared
    env.update(forced_dtype_env())
    env.update({f"UNIMOE_AUDIO_{k.upper()}": str(v) for k, v in extra.items()})
    return env


def forced_dtype_env() -> dict[str, str]:
    """UNIMOE_AUDIO_DTYPE when the test run forces one (.ci/run runs the dtype-sensitive tests with
    bfloat16 and with float32), so the daemons under test use it; else nothing ("auto")."""
    forced = os.environ.get("UNIMOE_AUDIO_DTYPE")
    return {"UNIMOE_AUDIO_DTYPE": forced} if forced else {}


def expected_cpu_dtype() -> str:
    """The dtype a CPU daemon of this test run serves with: the forced one, or what ``auto`` picks on
    this machine (bfloat16 where the CPU has native bf16, float32 elsewhere)."""
    import torch

    from unimoe_audio.model.engine import pick_dtype

    dt = pick_dtype(os.environ.get("UNIMOE_AUDIO_DTYPE", "auto"), torch.device("cpu"))
    return str(dt).replace("torch.", "")


class DaemonProc:
    """A running daemon process. ``channel()`` connects a client; ``kill()``/``stop()`` end it."""

    def __init__(self, home: Path, **settings: Any):
        self.home = Path(home)
        self.env = daemon_env(self.home, **settings)
        self.settings = self._settings()
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: connection.ConnectionInfo | None = None
        self._channels: list[channel.Channel] = []

    def _settings(self) -> Any:
        saved = dict(os.environ)
        try:
            for k in [k for k in os.environ if k.startswith("UNIMOE_AUDIO_")]:
                del os.environ[k]
            os.environ.update({k: v for k, v in self.env.items() if k.startswith("UNIMOE_AUDIO_")})
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    def start(self, timeout: float = START_TIMEOUT) -> "DaemonProc":
        """Start and wait for the connection file; ``timeout``: seconds without new output or log lines."""
        out = open(self.home / f"daemon-{time.monotonic_ns()}.out", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.daemon"], env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT)
        self._out = out
        watched = [Path(out.name), self.settings.log_path]
        last, moved = sizes(watched), time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n{self.output()}")
            try:
                info = connection.read_connection_file(self.settings.connection_file)
                if info.pid == self.proc.pid:
                    self.info = info
                    return self
            except wire.ProtocolError:
                pass
            now, sig = time.monotonic(), sizes(watched)
            if sig != last:
                last, moved = sig, now
            elif now - moved > timeout:
                raise RuntimeError(f"daemon wrote nothing for {timeout:.0f} s and did not start:\n{self.output()}")
            time.sleep(0.02)

    def watch(self) -> Watch:
        """Progress of this daemon: its queue database and logs."""
        return Watch(dbs=[self.settings.queue_db_path], files=[self.settings.log_path, Path(self._out.name)])

    def output(self) -> str:
        try:
            return Path(self._out.name).read_text(errors="replace")[-6000:]
        except Exception:  # noqa: BLE001
            return ""

    def log(self) -> str:
        p = self.settings.log_path / "daemon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def channel(self, **kw: Any) -> channel.Channel:
        assert self.info is not None
        ch = channel.Channel(self.info, context=zmq.Context.instance(), **kw)
        self._channels.append(ch)
        return ch

    def subscribe(self, topics: list[str], **kw: Any) -> channel.Subscription:
        """Events on ``topics``, returned once the subscription has reached the daemon (the echo handshake,
        ``Subscription.confirm``), so the test may submit at once and miss nothing."""
        return self.channel(**kw).subscribe(topics, confirm=STALL_S)

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        for ch in self._channels:
            ch.close()
        self._channels.clear()
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if getattr(self, "_out", None):
            self._out.close()


def start_with_voice(home: Path, name: str = "narrator", **settings: Any) -> DaemonProc:
    """A started daemon that has a saved voice ``name`` (from an espeak-ng recording), for the host scripts'
    speech runs."""
    from unimoe_audio.client.client import Client

    d = DaemonProc(home, **settings).start()
    ref = d.home / "ref.wav"
    text = "Hello there, this is my voice."
    subprocess.run(["espeak-ng", "-w", str(ref), text], check=True, capture_output=True)
    with Client(d.settings, auto_start=False) as c:
        c.voice_add(name, ref, text)
    return d


def music(seconds: float = 1.0, caption: str = "a calm piano melody", **kw: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"spec": {"task": "music", "caption": caption, "length": {"seconds": seconds}}}
    req.update(kw)
    return req


def until(sub: channel.Subscription, accept: Any, what: str, stall: float = STALL_S) -> wire.Message:
    """The first message for which ``accept(msg)`` is true. Any message resets the stall clock (any job's
    event shows the daemon is working); AssertionError after ``stall`` s without one."""
    moved = time.monotonic()
    while True:
        msg = sub.recv(timeout=max(0.01, min(1.0, moved + stall - time.monotonic())))
        if msg is None:
            if time.monotonic() - moved > stall:
                raise AssertionError(f"no event for {stall:.0f} s while waiting for {what}")
            continue
        moved = time.monotonic()
        if accept(msg):
            return msg


def wait_final(sub: channel.Subscription, job_id: str, timeout: float = STALL_S) -> tuple[wire.Message, list[wire.Message]]:
    """Collect the events of ``job_id`` until its final event; returns (final, all of them).
    ``timeout``: seconds without any event before giving up (progress events keep it waiting)."""
    seen: list[wire.Message] = []

    def accept(msg: wire.Message) -> bool:
        if msg.content.get("job_id") != job_id:
            return False
        seen.append(msg)
        return msg.msg_type in ("done", "failed", "cancelled")

    try:
        final = until(sub, accept, f"the end of {job_id}", timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; got {[m.msg_type for m in seen]}") from None
    return final, seen


def collect(sub: channel.Subscription, job_ids: list[str], timeout: float = STALL_S) -> dict[str, list[wire.Message]]:
    """Events of several jobs, until each has had its final event (``timeout``: seconds without an event)."""
    events: dict[str, list[wire.Message]] = {j: [] for j in job_ids}
    open_ids = set(job_ids)

    def accept(msg: wire.Message) -> bool:
        j = msg.content.get("job_id")
        if j in events:
            events[j].append(msg)
            if msg.msg_type in ("done", "failed", "cancelled"):
                open_ids.discard(j)
        return not open_ids

    until(sub, accept, f"the end of {sorted(open_ids)}", timeout)
    return events


def wait_jobs(d: "DaemonProc", predicate: Any, what: str = "jobs") -> Any:
    """Wait for ``predicate`` while the daemon's jobs move (fails only after STALL_S s of no progress)."""
    return d.watch().wait(predicate, what)


def wait_for(pred: Any, timeout: float = 60, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def job_state(ch: channel.Channel, job_id: str) -> str:
    return ch.request("job", {"job_id": job_id})["job"]["state"]


def visible_wavs(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*.wav") if not p.name.startswith("."))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
