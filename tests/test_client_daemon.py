"""The Python client against a real daemon process on the tiny model: progress iterator, partial audio,
cancel, typed results, auto-start, and clean errors when the daemon goes away."""
from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _client_harness import CLI, Daemon, cli, ffprobe, make_env, wait_for, wait_progress  # noqa: E402
from _content import check_audio  # noqa: E402

from unimoe_audio.client.client import (  # noqa: E402
    Client,
    DaemonUnavailable,
    GenerationResult,
    JobCancelled,
    PartialAudio,
)
from unimoe_audio.client.settings import load_settings  # noqa: E402

# A last resort against a hang: the waits inside fail when the daemon stops making progress.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def daemon(cli_daemon):
    return cli_daemon


@pytest.fixture
def client(daemon, env_client):
    return env_client(daemon, timeout=10)


def test_status_is_typed_and_says_tiny(client, daemon):
    st = client.status()
    assert st.tiny is True and st.pid == daemon.pid
    assert client.ping().protocol_version.startswith("1.")


def test_progress_iterator_and_typed_result(client, tmp_path):
    job = client.music("calm piano", seconds=0.5, seed=3, output=str(tmp_path / "a.wav"), sample_rate=24000, channels=1)
    kinds, fractions = [], []
    for upd in job.updates(timeout=900):
        kinds.append(upd.kind)
        if upd.kind == "progress":
            fractions.append(upd.fraction)
    assert kinds[-1] == "done"
    assert fractions and fractions == sorted(fractions) and 0 < fractions[-1] <= 1
    res = job.wait(timeout=30)  # after the end: answered from the snapshot at once
    assert isinstance(res, GenerationResult)
    assert res.path == str(tmp_path / "a.wav") and res.seed == 3 and res.task == "music"
    assert (res.sample_rate, res.channels) == (24000, 1)
    info = ffprobe(Path(res.path))
    assert (info["sample_rate"], info["channels"]) == (24000, 1)
    assert any(j.job_id == job.id and j.state == "done" for j in client.jobs(states=["done"]))


def test_stream_partial_audio(client, tmp_path):
    job = client.music("evolving pad", seconds=1, stream_partial=True, output=str(tmp_path / "s.wav"))
    parts: list[PartialAudio] = []
    for part in job.stream(timeout=900):
        assert Path(part.path).suffix == ".wav"
        parts.append(part)
    assert parts, "no partial audio was streamed"
    assert all(p.job_id == job.id for p in parts)
    assert [p.seconds for p in parts] == sorted(p.seconds for p in parts)
    res = job.wait(timeout=30)  # (the previews are gone with the job: the final take is what is left)
    assert res.path == str(tmp_path / "s.wav")
    check_audio(res.path, seconds=1.0, sample_rate=res.sample_rate, channels=res.channels)


def test_cancel_a_running_job(client, daemon, tmp_path):
    job = client.music("long", seconds=300)
    wait_progress(daemon.env, lambda: client.job(job.id).state == "running", "job to run")
    reply = job.cancel()
    assert reply.job_id == job.id
    with pytest.raises(JobCancelled):
        job.wait(timeout=60)
    assert client.job(job.id).state == "cancelled"


def test_cancel_a_queued_job_is_immediate(client, daemon):
    first = client.music("long", seconds=300, priority=0, cfg_scale=0)  # no CFG: the next job cannot join it
    wait_progress(daemon.env, lambda: client.job(first.id).state == "running", "first job to run")
    queued = client.music("never runs", seconds=1, priority=-5)
    assert client.job(queued.id).state == "queued"
    client.cancel(queued.id)
    with pytest.raises(JobCancelled):
        queued.wait(timeout=10)
    first.cancel()
    with pytest.raises(JobCancelled):
        first.wait(timeout=60)


def test_auto_start_says_so_and_a_dead_daemon_is_a_clean_error(tmp_path, use_daemon_env):
    env = make_env(tmp_path / "home")
    use_daemon_env(env, alone=True)
    notices: list[str] = []
    c = Client(load_settings(), auto_start=True, notice=notices.append, connect_timeout=120, timeout=3)
    try:
        assert c.started_daemon and any("starting one in the background" in n for n in notices)
        pid = c.pid
        # a second client reuses it
        c2 = Client(load_settings(), auto_start=True, notice=notices.append)
        assert c2.pid == pid and not c2.started_daemon
        c2.close()
        job = c.music("long", seconds=300)
        wait_progress(env, lambda: c.job(job.id).state == "running", "job to run")
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(DaemonUnavailable) as info:
            job.wait(timeout=120)
        assert time.monotonic() - t0 < 30
        assert "crashed or was killed" in str(info.value) or "not answer" in str(info.value)
        with pytest.raises(DaemonUnavailable):
            c.status()
    finally:
        c.close()
        try:
            os.kill(c.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_cli_auto_start_notice_on_stderr(tmp_path):
    env = make_env(tmp_path / "home")
    r = cli(env, "music", "calm", "--seconds", "0.5", "-o", str(tmp_path / "x.wav"), "--json").ok()
    try:
        assert "starting one in the background" in r.err
        check_audio(r.json()["path"], seconds=0.5)
        again = cli(env, "status", "--json").ok()
        assert "starting one" not in again.err
    finally:
        Daemon.attach(tmp_path / "home", env).stop()
