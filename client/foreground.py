"""Run the daemon as a foreground child of a command (``unimoe-audio serve``) without ever orphaning it.

The command passes SIGTERM, SIGINT and SIGHUP on to the daemon and waits for it to finish its clean
shutdown (requeue the running job, close sockets, remove the connection file). On Linux the daemon is
also told to stop if the command itself dies without a chance to pass anything on (SIGKILL).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any, Callable

FORWARDED = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGHUP")) if s is not None)


def _stop_with_parent(parent: int) -> Callable[[], None] | None:
    """A preexec function: on Linux, the child gets SIGTERM when this process dies (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return None

    def setup() -> None:
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except Exception:  # noqa: BLE001 - best effort; the forwarding below is the main path
            return
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return setup


def run_foreground(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, int | None]:
    """Run ``cmd`` until it exits, passing on the stop signals this process receives.

    Returns (exit status, the first signal received or None). A child killed by a signal reports
    128 + its number, as shells do.
    """
    received: list[int] = []
    proc = subprocess.Popen(cmd, env=env, preexec_fn=_stop_with_parent(os.getpid()))

    def forward(signum: int, frame: Any) -> None:
        received.append(signum)
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        while True:
            try:
                rc = proc.wait()
                break
            except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for odd platforms
                continue
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if rc < 0:
        rc = 128 - rc
    return rc, (received[0] if received else None)
