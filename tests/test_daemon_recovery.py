"""Daemon life cycle with the real process: kill -9 and restart, SIGTERM requeue, queue limit, idle
unload, load failures, refusing unsafe or duplicate starts, CurveZMQ beyond loopback, --detach."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from unimoe_audio.client import protocol as P
from unimoe_audio.client import channel, connection, curve, wire

from _daemon_harness import DaemonProc, daemon_env, job_state, music, until, visible_wavs, wait_final, wait_for, wait_jobs

LONG = 30.0  # seconds of audio for a job that is still running when we act on it


def _wait_progress(sub, job_id):
    def accept(m):
        if m.content.get("job_id") != job_id:
            return False
        assert m.msg_type not in P.FINAL_EVENTS, m.content
        return m.msg_type == "progress"

    return until(sub, accept, f"progress of {job_id}")


def test_kill9_mid_job_then_restart_completes_it(tmp_path):
    d = DaemonProc(tmp_path, keep_alive=0).start()
    try:
        ch, sub = d.channel(timeout=30), d.subscribe(["job.", "daemon"])
        job = ch.request("submit", music(LONG, output={"name": "survivor"}))["job_id"]
        queued = ch.request("submit", music(1.0, output={"name": "waiting"}))["job_id"]
        _wait_progress(sub, job)
        d.kill9()
        # nothing half-written is visible, and the connection file names a dead pid
        assert visible_wavs(d.settings.output_path) == []
        assert not connection.pid_alive(connection.read_connection_file(d.settings.connection_file).pid)
    finally:
        d.close()
    d2 = DaemonProc(tmp_path, keep_alive=0).start()
    try:
        ch = d2.channel(timeout=30)
        st = ch.request("status")
        assert st["queue_length"] + len(st["running"]) == 2
        wait_jobs(d2, lambda: job_state(ch, job) == "done" and job_state(ch, queued) == "done", "jobs to finish")
        info = ch.request("job", {"job_id": job})["job"]
        assert info["attempts"] == 2
        names = sorted(p.name for p in visible_wavs(d2.settings.output_path))
        assert names == ["survivor.wav", "waiting.wav"]
        leftovers = [p.name for p in d2.settings.output_path.iterdir() if p.name.startswith(".")]
        assert leftovers == []
        assert "requeued" in d2.log()
    finally:
        d2.close()


def test_sigterm_requeues_running_job_and_cleans_up(tmp_path):
    d = DaemonProc(tmp_path).start()
    ch, sub = d.channel(timeout=30), d.subscribe(["job.", "daemon"])
    job = ch.request("submit", music(LONG))["job_id"]
    _wait_progress(sub, job)
    assert d.terminate(60) == 0
    events = []
    while (m := sub.recv(timeout=1)) is not None:
        events.append(m)
    assert any(m.msg_type == "requeued" and m.content["job_id"] == job for m in events)
    assert any(m.msg_type == "daemon" and m.content["state"] == "stopping" for m in events)
    assert not d.settings.connection_file.exists() and not d.settings.pid_file.exists()
    d.close()
    d2 = DaemonProc(tmp_path).start()
    try:
        ch = d2.channel(timeout=30)
        wait_jobs(d2, lambda: job_state(ch, job) == "done", "requeued job")
        assert ch.request("job", {"job_id": job})["job"]["attempts"] == 1  # a clean stop is not an attempt
    finally:
        d2.close()


def test_full_queue_answers_busy_and_idle_model_unloads(tmp_path):
    d = DaemonProc(tmp_path, max_queue=2, keep_alive=1).start()
    try:
        ch, sub = d.channel(timeout=30), d.subscribe(["job.", "daemon"])
        long = music(LONG)
        long["spec"]["sampling"] = {"cfg_scale": 0}  # without CFG: the CFG jobs below cannot join its batch
        running = ch.request("submit", long)["job_id"]
        _wait_progress(sub, running)
        a = ch.request("submit", music(0.5))
        b = ch.request("submit", music(0.5))
        assert (a["position"], b["position"]) == (0, 1)
        with pytest.raises(wire.RemoteError) as ei:
            ch.request("submit", music(0.5))
        assert ei.value.code == "busy"
        assert ch.request("status", control=True)["state"] == "busy"
        ch.request("cancel", {"job_id": running}, control=True)
        wait_final(sub, b["job_id"])
        # keep_alive = 1 s: the idle model is unloaded, and says so
        wait_jobs(d, lambda: ch.request("status")["state"] == "unloaded", "idle unload")
        assert "model unloaded (idle for keep_alive)" in d.log()
    finally:
        d.close()


def test_load_failure_is_a_clear_error_and_the_daemon_stays_up(tmp_path):
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{ this is not a config")
    d = DaemonProc(tmp_path, model=str(broken)).start()
    try:
        ch, sub = d.channel(timeout=30), d.subscribe(["job.", "daemon"])
        assert ch.request("status")["tiny"] is False
        job = ch.request("submit", music(1.0))["job_id"]
        final, _ = wait_final(sub, job)
        assert final.msg_type == "failed"
        err = final.content["error"]
        assert err["code"] in ("checkpoint_error", "model_error") and "loading the model failed" in err["message"]
        st = ch.request("status")
        assert st["state"] == "error" and st["error"]["code"] == err["code"]
        assert ch.request("ping")["pid"] == d.proc.pid
    finally:
        d.close()


def test_refuses_network_without_curve_and_a_second_daemon(tmp_path):
    env = daemon_env(tmp_path, host="0.0.0.0")
    r = subprocess.run([sys.executable, "-m", "unimoe_audio.daemon"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2
    assert "CurveZMQ" in r.stderr and "curve_allow" in r.stderr
    d = DaemonProc(tmp_path).start()
    try:
        r = subprocess.run([sys.executable, "-m", "unimoe_audio.daemon"], env=d.env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2 and "already running" in r.stderr
        assert d.channel().request("ping")["pid"] == d.proc.pid
    finally:
        d.close()


def test_curve_beyond_loopback(tmp_path):
    pub, sec = curve.client_keypair(tmp_path / "client")
    d = DaemonProc(tmp_path, host="0.0.0.0", curve_allow=pub.decode()).start()
    try:
        assert d.info.curve_server_key
        ch = d.channel(timeout=10, client_keys=(pub, sec))
        assert ch.request("ping")["pid"] == d.proc.pid
        # Refusals are named at once (from the handshake events), not a timeout: the timeout here is
        # long on purpose, so a ReplyTimeout would fail the test.
        other = zmq.curve_keypair()
        stranger = channel.Channel(d.info, timeout=60, client_keys=other)
        with pytest.raises(wire.WireError) as err:
            stranger.request("ping")
        assert err.value.code == "not_allowed" and other[0].decode() in str(err.value)
        assert "not allowed on" in str(err.value)
        stranger.close()
        plain = channel.Channel(d.info.model_copy(update={"curve_server_key": None}), timeout=60)
        with pytest.raises(wire.WireError) as err:
            plain.request("ping")
        assert err.value.code == "curve_required", str(err.value)
        plain.close()
        with pytest.raises(wire.WireError):
            channel.Channel(d.info)  # no client keys for a Curve daemon
    finally:
        d.close()


def test_detach_and_shutdown_request(tmp_path):
    env = daemon_env(tmp_path)
    r = subprocess.run([sys.executable, "-m", "unimoe_audio.daemon", "--detach"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    pid = int(r.stdout.strip())
    conn = tmp_path / "run" / "daemon.json"
    info = connection.read_connection_file(conn)
    assert info.pid == pid and (tmp_path / "run" / "daemon.pid").read_text().strip() == str(pid)
    with channel.Channel(info, timeout=10) as ch:
        assert ch.request("shutdown", control=True)["ok"] is True
    wait_for(lambda: not connection.pid_alive(pid) or _reap(pid), 180, 0.05, "daemon exit")
    wait_for(lambda: not conn.exists(), 60, 0.05, "connection file removal")


def _reap(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except OSError:
        return True


def test_status_answers_while_the_model_loads(tmp_path):
    d = DaemonProc(tmp_path, load_at_start=1).start()
    try:
        ch = d.channel(timeout=30)
        states, slowest = [], 0.0

        def ready_or_error():
            nonlocal slowest
            t0 = time.monotonic()
            st = ch.request("status", control=True)["state"]
            slowest = max(slowest, time.monotonic() - t0)
            if not states or states[-1] != st:
                states.append(st)
            return st in ("ready", "error")

        wait_jobs(d, ready_or_error, "the model to load")
        assert states[-1] == "ready", states
        assert "loading" in states, states  # answered during the load, from the main loop
        # answered from the main loop while the worker loads: well under the load's own duration (a
        # generous bound, so a loaded machine's scheduling delays do not count as a blocked loop)
        assert slowest < 5.0
    finally:
        d.close()
