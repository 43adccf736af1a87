"""``unimoe-audio serve`` in the foreground: a stop signal sent to the command (not its process group)
reaches the daemon, which stops cleanly; the command waits for it. Killing the command outright stops
the daemon too (Linux). Real processes, real signals, the tiny model never loads (no job is sent)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from unimoe_audio.client import channel, connection, wire

from _daemon_harness import DaemonProc, wait_for


def _serve(tmp_path):
    d = DaemonProc(tmp_path)  # only for its environment and settings: serve starts the daemon itself
    out = open(tmp_path / "serve.out", "wb")
    serve = subprocess.Popen([sys.executable, "-m", "unimoe_audio.client", "serve"], env=d.env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)

    def daemon_info():
        assert serve.poll() is None, (tmp_path / "serve.out").read_text()
        try:
            info = connection.read_connection_file(d.settings.connection_file)
        except wire.ProtocolError:
            return None
        return info if connection.pid_alive(info.pid) else None

    info = wait_for(daemon_info, 300, what="the daemon started by serve")
    assert info.pid != serve.pid
    with channel.Channel(info, timeout=60) as ch:
        assert ch.request("ping", control=True)["pid"] == info.pid
    return d, serve, info


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signal_to_serve_stops_the_daemon_and_waits(tmp_path, signum):
    d, serve, info = _serve(tmp_path)
    try:
        os.kill(serve.pid, signum)  # to serve alone: its daemon child is not in the signal's way
        rc = serve.wait(300)
        assert rc == (130 if signum == signal.SIGINT else 0), (tmp_path / "serve.out").read_text()
        # serve returned only after the daemon finished: it is gone, and so is its connection file
        assert not connection.pid_alive(info.pid)
        assert not d.settings.connection_file.exists()
        assert "daemon stopped" in d.log()
    finally:
        if serve.poll() is None:
            serve.kill()
        if connection.pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)


def test_killed_serve_does_not_orphan_the_daemon(tmp_path):
    d, serve, info = _serve(tmp_path)
    try:
        serve.kill()
        serve.wait(60)
        wait_for(lambda: not connection.pid_alive(info.pid), 300, what="the daemon to stop after serve was killed")
        assert not d.settings.connection_file.exists()
        assert "signal 15 received" in d.log()
    finally:
        if connection.pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
