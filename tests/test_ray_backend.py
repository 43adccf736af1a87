"""The Ray backend on a real local Ray cluster started by the test: a head with no CPUs and two worker
nodes of one CPU each (so each engine actor lands on its own node), the daemon on the tiny model with
``backend = ray``, real sockets, real processes. Killing an actor's process is a real SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import soundfile as sf

from _client_harness import CLI
from _daemon_harness import (DaemonProc, collect, expected_cpu_dtype, free_port, job_state, music, visible_wavs,
                             wait_final, wait_for)
from _progress import STALL_S
from _ray_cluster import NODE_START_TIMEOUT, RayCluster

import ray  # noqa: E402,F401 - the test extra installs it; without it this module must fail, not skip
pytestmark = pytest.mark.slow
ACTORS_READY_TIMEOUT = 900.0

@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = RayCluster(tmp_path_factory.mktemp("rayhome"))
    try:
        yield c.start()
    finally:
        c.stop()


def ray_daemon(cluster, **settings) -> DaemonProc:
    d = DaemonProc(cluster.home, backend="ray", ray_address=cluster.address, keep_alive=0, **settings)
    d.env["RAY_AUTH_MODE"] = "disabled"  # this local cluster has no token (tests/test_ray_netns.py has one)
    return d.start()


@pytest.fixture(scope="module")
def daemon(cluster):
    d = ray_daemon(cluster, max_batch=4)
    yield d
    d.close()


def _status(ch):
    return ch.request("status", {})


def _ready_actors(ch, n: int = 2):
    def ready():
        st = _status(ch)
        actors = st["backend"]["actors"]
        return st if len(actors) == n and all(a["state"] in ("ready", "busy") for a in actors) else None
    # generous: on a loaded 2-core machine each actor's process start and model load can take minutes
    return wait_for(ready, ACTORS_READY_TIMEOUT, 0.5, f"{n} ready engine actors")


def test_status_lists_both_actors(daemon):
    ch = daemon.channel(timeout=60)
    st = _ready_actors(ch)
    b = st["backend"]
    assert b["kind"] == "ray" and b["state"] == "ready" and b["address"] == daemon.settings.ray_address
    nodes = {a["node"] for a in b["actors"]}
    assert len(nodes) == 2, "one actor per one-CPU worker node"
    assert all(a["device"] == "cpu" and a["pid"] for a in b["actors"])
    # each actor names its node in its name (actors follow nodes) and reports the model it serves
    assert all(a["name"].startswith(f"unimoe-engine-{a['node']}") for a in b["actors"])
    assert all(a["model_hash"] and a["tiny"] is True and a["model_id"] for a in b["actors"])
    assert b["wanted"] == 2 and b["auth"] is False and any("token authentication" in w for w in b["warnings"])
    # the daemon serves no model of its own: tiny because the actors say so, no local folder
    assert st["tiny"] is True and st.get("model_dir") is None and "engine actor" in st["tiny_reason"]


def test_sixteen_jobs_across_two_actors(daemon):
    ch = daemon.channel(timeout=60)
    _ready_actors(ch)
    sub = ch.subscribe(["job."], confirm=STALL_S)
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
    assert actors_used == {a["name"] for a in _status(ch)["backend"]["actors"]} and len(actors_used) == 2
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


def test_a_job_joins_a_busy_actors_batch(daemon):
    """Continuous batching on Ray: with both actors busy, a compatible job joins a running batch at the
    next step instead of waiting for an actor to free up, and finishes long before the long jobs."""
    ch = daemon.channel(timeout=60)
    _ready_actors(ch)
    sub = ch.subscribe(["job."], confirm=STALL_S)
    long_a = ch.request("submit", music(20.0, caption="long a"))["job_id"]
    _until_progress(sub, long_a)
    long_b = ch.request("submit", music(20.0, caption="long b"))["job_id"]
    _until_progress(sub, long_b)
    actors = _status(ch)["backend"]["actors"]
    assert len(actors) == 2 and all(a["running"] for a in actors), "each long job on its own actor"
    short = ch.request("submit", music(0.5, caption="short"))["job_id"]
    final, seen = wait_final(sub, short, timeout=600)
    assert final.msg_type == "done", final.content
    started = [m.content for m in seen if m.msg_type == "started"][-1]
    assert started["joined"] is True and started["batch_size"] == 2
    assert job_state(ch, long_a) == "running" and job_state(ch, long_b) == "running"
    for j in (long_a, long_b):
        ch.request("cancel", {"job_id": j})
    events = collect(sub, [long_a, long_b], timeout=600)  # both at once: either may end first
    assert [events[j][-1].msg_type for j in (long_a, long_b)] == ["cancelled", "cancelled"]
    sub.close()


def test_killed_actor_reruns_its_job_once(daemon):
    ch = daemon.channel(timeout=60)
    _ready_actors(ch)
    sub = ch.subscribe(["job."], confirm=STALL_S)
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
    sub = ch.subscribe(["job."], confirm=STALL_S)
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


def test_cli_status_lists_actors(daemon):
    _ready_actors(daemon.channel(timeout=60))
    r = subprocess.run([*CLI, "ps"], env=daemon.env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"ray at {daemon.settings.ray_address} (ready, 2 of 2 engine actors)" in r.stdout
    assert "warning        the Ray cluster is used without token authentication" in r.stdout, r.stdout
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("unimoe-engine-")]
    # the dtype auto picks here (bf16 on CPUs with native bf16), or the one the test run forces
    assert len(lines) == 2 and all(f" cpu {expected_cpu_dtype()} " in ln and " TINY " in ln for ln in lines), r.stdout


def test_restarted_daemon_reattaches_to_the_same_actors(daemon, cluster):
    ch = daemon.channel(timeout=60)
    before = {a["name"]: a["pid"] for a in _ready_actors(ch)["backend"]["actors"]}
    daemon.close()
    d2 = ray_daemon(cluster)
    try:
        ch2 = d2.channel(timeout=60)
        after = {a["name"]: a["pid"] for a in _ready_actors(ch2)["backend"]["actors"]}
        assert after == before, "the same actor processes, models still loaded"
        sub = ch2.subscribe(["job."], confirm=STALL_S)
        job = ch2.request("submit", music(0.5))["job_id"]
        final, _ = wait_final(sub, job, timeout=600)
        assert final.msg_type == "done"
        sub.close()
    finally:
        d2.close()


def test_unreachable_cluster_is_backend_unavailable(tmp_path):
    port = free_port()  # nothing listens there
    d = DaemonProc(tmp_path, backend="ray", ray_address=f"127.0.0.1:{port}", ray_unavailable_s=0).start()
    try:
        ch = d.channel(timeout=60)
        sub = ch.subscribe(["job."], confirm=STALL_S)
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


def _actors(ch):
    return {a["name"]: a for a in _status(ch)["backend"]["actors"]}


def test_a_node_that_joins_gets_an_actor_and_one_that_leaves_loses_it(cluster):
    """Elastic: a node that joins a running daemon gets its engine actor without a restart and takes work;
    when it leaves, its actor is removed and the wanted count follows."""
    d = ray_daemon(cluster, max_batch=1)
    try:
        ch = d.channel(timeout=60)
        _ready_actors(ch)
        before = set(_actors(ch))
        node = cluster.add_worker()
        st = _ready_actors(ch, 3)
        assert st["backend"]["wanted"] == 3
        new = set(_actors(ch)) - before
        assert len(new) == 1, _actors(ch)
        sub = ch.subscribe(["job."], confirm=STALL_S)
        ids = [ch.request("submit", music(2.0, caption=f"spread {i}"))["job_id"] for i in range(3)]
        events = collect(sub, ids, timeout=900)
        used = {m.content.get("actor") for j in ids for m in events[j] if m.msg_type == "started"}
        assert all(events[j][-1].msg_type == "done" for j in ids)
        assert new <= used, (new, used)
        cluster.kill_worker(node)
        # Ray notices the node is gone (health checks), the pool removes its actor
        wait_for(lambda: _status(ch)["backend"]["wanted"] == 2 and set(_actors(ch)) == before,
                 NODE_START_TIMEOUT, 1.0, "the left node's actor to be removed")
        sub.close()
    finally:
        d.close()


def test_with_every_node_gone_a_job_waits_and_runs_once_when_a_node_returns(cluster):
    d = ray_daemon(cluster)
    try:
        ch = d.channel(timeout=60)
        _ready_actors(ch)
        for node in list(cluster.workers):
            cluster.kill_worker(node)
        wait_for(lambda: _status(ch)["backend"]["state"] == "waiting", NODE_START_TIMEOUT, 1.0,
                 "the daemon to wait for Ray capacity")
        sub = ch.subscribe(["job."], confirm=STALL_S)
        out = d.home / "waited"
        job = ch.request("submit", music(0.5, caption="waits", output={"folder": str(out)}))["job_id"]
        # it stays queued, spending no attempt, while no node is there (checked over several refreshes)
        for _ in range(5):
            time.sleep(2.5)
            info = ch.request("job", {"job_id": job})
            assert info["job"]["state"] == "queued" and info["job"].get("attempts", 0) == 0, info
        r = subprocess.run([*CLI, "ps"], env=d.env, capture_output=True, text=True, timeout=120)
        assert "waiting for Ray capacity" in r.stdout, r.stdout
        cluster.add_worker()
        final, seen = wait_final(sub, job, timeout=900)
        assert final.msg_type == "done", final.content
        assert [m.msg_type for m in seen].count("started") == 1
        assert len(visible_wavs(out)) == 1
        sub.close()
    finally:
        d.close()
        while len(cluster.workers) < 2:  # leave the cluster as the module found it
            cluster.add_worker()
