"""Finding a live local daemon, and starting one in the background when none answers.

The client never imports the daemon package: it runs ``python -m unimoe_audio.daemon --detach``.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from . import protocol as P
from . import wire
from .channel import Channel
from .connection import ConnectionInfo, ensure_private_dir, pid_alive, read_connection_file
from .errors import DaemonUnavailable, from_protocol_error
from .settings import ENV_PREFIX, Settings, load_settings

__all__ = ["read_live_connection", "ping_daemon", "daemon_command", "start_daemon"]


def read_live_connection(settings: Settings) -> ConnectionInfo | None:
    """The connection file if it names a live process, else None. Raises ProtocolMismatch early."""
    try:
        info = read_connection_file(settings.connection_file)
    except wire.DaemonNotRunning:
        return None
    except P.ProtocolError as exc:
        raise DaemonUnavailable(str(exc), exc.code) from None
    if info.pid and not pid_alive(info.pid):
        return None
    try:
        P.check_version(info.protocol_version)
    except P.ProtocolError as exc:
        raise from_protocol_error(exc, f"daemon pid {info.pid}: ") from None
    return info


def ping_daemon(info: ConnectionInfo, timeout: float, settings: Settings | None = None) -> P.PingReply | None:
    ch = Channel.open(info, settings, timeout=timeout)
    try:
        reply = ch.call("ping", {}, control=True, timeout=timeout)
    except wire.ReplyTimeout:
        return None
    except P.ProtocolError as exc:
        raise from_protocol_error(exc) from None
    finally:
        ch.close()
    assert isinstance(reply, P.PingReply)
    try:
        P.check_version(reply.protocol_version)
    except P.ProtocolError as exc:
        raise from_protocol_error(exc) from None
    return reply


def daemon_command() -> list[str]:
    """The command that runs the daemon (the client never imports the daemon package)."""
    return [sys.executable, "-m", "unimoe_audio.daemon"]


def start_daemon(settings: Settings | None = None, *, env: dict[str, str] | None = None, wait: bool = True,
                 timeout: float = 60.0) -> int:
    """Start ``python -m unimoe_audio.daemon`` in the background (its own session, so the caller's Ctrl-C
    does not reach it) and, with ``wait``, return once it answers a ping. Returns the daemon's pid.

    Only one starter at a time: a lock file in the runtime folder serialises concurrent auto-starts, and a
    daemon that is already answering is reused.
    """
    settings = settings or load_settings()
    env = dict(os.environ if env is None else env)
    # The child must resolve the same folders as this process.
    for name in ("home", "config_dir", "data_dir", "cache_dir", "log_dir", "runtime_dir", "models_dir",
                 "voices_dir", "output_dir"):
        value = getattr(settings, name)
        key = f"{ENV_PREFIX}{name.upper()}"
        if value is not None and key not in env:
            env[key] = str(value)
    runtime = ensure_private_dir(settings.runtime_path)
    log_dir = settings.log_path
    log_dir.mkdir(parents=True, exist_ok=True)
    with _start_lock(runtime / "autostart.lock"):
        info = read_live_connection(settings)
        if info is not None and ping_daemon(info, 2.0, settings) is not None:
            return info.pid
        # The daemon's own --detach double-forks it into its own session (so Ctrl-C here does not reach
        # it and no zombie is left in a long-lived host such as Blender) and returns once it listens.
        try:
            proc = subprocess.run([*daemon_command(), "--detach", "--wait", str(timeout)], env=env,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            raise DaemonUnavailable(f"the daemon did not start within {timeout:g} s; see {log_dir}", "timeout") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()[-2000:]
            raise DaemonUnavailable(f"the daemon could not start (exit {proc.returncode}); logs in {log_dir}:\n{detail}",
                                    "not_running")
        if not wait:
            return _parse_pid(proc.stdout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = read_live_connection(settings)
            if info is not None and ping_daemon(info, 1.0, settings) is not None:
                return info.pid
            time.sleep(0.1)
        raise DaemonUnavailable(f"the daemon did not answer within {timeout:g} s; see {log_dir}", "timeout")


def _parse_pid(text: str) -> int:
    for token in reversed(text.split()):
        if token.isdigit():
            return int(token)
    return 0


@contextlib.contextmanager
def _start_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock, the daemon's pid file arbitrates
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
