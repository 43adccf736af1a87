"""Continuous batching through the real daemon (tiny model, real sockets): a job submitted while a
long one runs joins its batch at a step boundary and finishes long before it; a seeded job's audio is
the same alone or joined; cancelling a joined job leaves the others' audio unchanged.

Ordered by the daemon's events, never by wall-clock budgets.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf

from _daemon_harness import music, wait_final

FINAL = ("done", "failed", "cancelled")


@pytest.fixture(scope="module")
def daemon_settings():
    return {"keep_alive": 0, "max_batch": 4}


@pytest.fixture
def ch(daemon):
    return daemon.channel(timeout=30)


@pytest.fixture
def sub(daemon):
    s = daemon.subscribe(["job."])
    yield s
    s.close()


def _submit(ch, seconds, caption, seed):
    req = music(seconds, caption=caption)
    req["spec"]["sampling"] = {"seed": seed}
    return ch.request("submit", req)["job_id"]


def _wait_progress(sub, job, log):
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        m = sub.recv(timeout=5)
        if m is None:
            continue
        log.append(m)
        if m.content.get("job_id") == job and m.msg_type == "progress":
            return
        assert not (m.content.get("job_id") == job and m.msg_type in FINAL), m.content
    raise AssertionError("no progress")


def _until_final(sub, ids, log, on_msg=None, timeout=300):
    """Every event of ``ids`` in arrival order until each has its final one (appended to ``log``)."""
    open_ids = set(ids)
    deadline = time.monotonic() + timeout
    while open_ids and time.monotonic() < deadline:
        m = sub.recv(timeout=5)
        if m is None:
            continue
        log.append(m)
        if on_msg is not None:
            on_msg(m)
        if m.content.get("job_id") in open_ids and m.msg_type in FINAL:
            open_ids.discard(m.content["job_id"])
    assert not open_ids, f"no final event for {open_ids}"


def _index(log, job, kind):
    return next(i for i, m in enumerate(log) if m.content.get("job_id") == job and m.msg_type == kind)


def _audio(msg):
    a, sr = sf.read(msg.content["path"], dtype="float32")
    return a, sr


def test_short_job_joins_the_running_long_one_and_finishes_first(ch, sub):
    log = []
    long = _submit(ch, 20.0, "a long cue", 1)
    _wait_progress(sub, long, log)
    short = _submit(ch, 1.0, "a short cue", 2)
    _until_final(sub, [long, short], log)
    assert log[_index(log, long, "done")].msg_type == "done"
    started = log[_index(log, short, "started")].content
    assert started["batch_size"] == 2  # joined the running batch, did not wait for it
    i_short_done = _index(log, short, "done")
    assert i_short_done < _index(log, long, "done")
    # the long job was far from done then: most of its progress came after the short one finished
    before = [m.content["fraction"] for m in log[:i_short_done]
              if m.content.get("job_id") == long and m.msg_type == "progress"]
    after = [m for m in log[i_short_done:] if m.content.get("job_id") == long and m.msg_type == "progress"]
    assert before and max(before) < 0.5 and after


def test_joined_seeded_jobs_equal_solo_runs_and_a_cancel_changes_nothing(ch, sub):
    # alone first
    solo = {}
    for name, (secs, seed) in {"base": (4.0, 5), "joiner": (1.5, 7)}.items():
        job = _submit(ch, secs, f"{name} cue", seed)
        final, _ = wait_final(sub, job, timeout=300)
        assert final.msg_type == "done", final.content
        solo[name] = _audio(final)
    # then together: the base runs, the joiner and a job to cancel join it
    log = []
    base = _submit(ch, 4.0, "base cue", 5)
    _wait_progress(sub, base, log)
    joiner = _submit(ch, 1.5, "joiner cue", 7)
    victim = _submit(ch, 3.0, "victim cue", 9)
    cancelled = []

    def cancel_victim(m):
        if (not cancelled and m.content.get("job_id") == victim and m.msg_type == "progress"
                and m.content.get("stage") == "generate"):
            cancelled.append(ch.request("cancel", {"job_id": victim}, control=True))

    _until_final(sub, [base, joiner, victim], log, on_msg=cancel_victim)
    assert cancelled and log[_index(log, victim, "cancelled")].msg_type == "cancelled"
    assert log[_index(log, joiner, "started")].content["batch_size"] >= 2
    assert _index(log, victim, "started") < _index(log, base, "done")  # the victim shared the batch
    for name, job in (("base", base), ("joiner", joiner)):
        a, sr = _audio(log[_index(log, job, "done")])
        assert sr == solo[name][1] and a.shape == solo[name][0].shape
        np.testing.assert_array_equal(a, solo[name][0])
        assert np.abs(a).max() > 0
