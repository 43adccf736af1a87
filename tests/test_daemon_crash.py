"""A crash leaves a trace and does not loop: a real daemon killed by a real signal (SIGSEGV, SIGABRT)
on a given job (the UNIMOE_AUDIO_TEST_CRASH hook, daemon/crash.py) writes the signal and every thread's
traceback to daemon.log; the client says the daemon crashed and names the log; the job runs again
alone after the first crash, and after the second it is failed with ``daemon_crashed`` and never run
again, while the job that merely shared its batch completes. Jobs made for another model are failed
after a restart, not rendered with the wrong one."""
from __future__ import annotations

import signal
import pytest

from unimoe_audio.client.client import Client, ClientError
from unimoe_audio.daemon.queue import CRASHED, MAX_CRASHES, JobStore

from _daemon_harness import DaemonProc, job_state, wait_jobs


def _died(d: DaemonProc) -> int:
    assert d.proc is not None
    d.watch().wait(lambda: d.proc.poll() is not None, "the daemon to crash")
    return d.proc.returncode


def test_crashing_job_is_logged_reported_and_not_retried(tmp_path):
    d = DaemonProc(tmp_path, test_crash="boom", keep_alive=0).start()
    try:
        with Client(d.settings, auto_start=False) as c:
            # a bystander in the same queue, then the job that kills the daemon when it starts
            other_id = c.music("a calm piano melody", seconds=0.4, tag="bystander").id
            boom = c.music("a calm piano melody", seconds=0.4, tag="boom")
            with pytest.raises(ClientError) as err:
                boom.wait()
        assert _died(d) == -signal.SIGSEGV
        log_path = d.settings.log_path / "daemon.log"
        assert "crashed" in str(err.value) and str(log_path) in str(err.value)
        log = d.log()
        assert "crashing on purpose with SIGSEGV" in log
        assert "Fatal Python error: Segmentation fault" in log
        # every thread's traceback, the crashing worker's with the frame that crashed
        assert "most recent call first" in log and "crash_if_asked" in log and log.lower().count("thread 0x") >= 2
    finally:
        d.close()

    # second start: the job runs again, alone, and kills the daemon again (SIGABRT this time)
    d2 = DaemonProc(tmp_path, test_crash="abort:boom", keep_alive=0).start()
    try:
        assert _died(d2) == -signal.SIGABRT
        assert "Fatal Python error: Aborted" in d2.log()
    finally:
        d2.close()

    # third start: the job is failed with a named error and not run again; the bystander completes
    d3 = DaemonProc(tmp_path, test_crash="boom", keep_alive=0).start()
    try:
        ch = d3.channel(timeout=30)
        wait_jobs(d3, lambda: job_state(ch, other_id) in ("done", "failed"), "the bystander to finish")
        assert job_state(ch, other_id) == "done"
        info = ch.request("job", {"job_id": boom.id})["job"]
        assert info["state"] == "failed" and info["error"]["code"] == "daemon_crashed"
        assert CRASHED in info["error"]["message"] and f"({MAX_CRASHES} times)" in info["error"]["message"]
        assert info["attempts"] == MAX_CRASHES
        assert d3.proc is not None and d3.proc.poll() is None  # it did not crash a third time
        assert d3.log().count("crashing on purpose") == 2
    finally:
        d3.close()


def test_recover_counts_crashes_runs_suspects_alone_and_checks_the_model(tmp_path):
    db = JobStore(tmp_path / "jobs.sqlite3")
    for j in "abc":
        db.add(j, "music", 0, {}, tag=None, batch_key="music:cfg", model="big-int8")
    db.add("x", "music", 0, {}, tag=None, batch_key="music:cfg", model="big-bf16")
    assert [r["id"] for r in db.claim(2)] == ["a", "b"]
    requeued, failed = db.recover(model="big-int8", log_hint="/logs/daemon.log")
    assert sorted(requeued) == ["a", "b"] and failed == ["x"]
    err = db.row("x")["error"]
    assert "model_changed" in err and "big-bf16" in err and "big-int8" in err
    # a job that was running at a crash runs alone: nothing joins it, and it joins nothing
    first = db.claim_next(None)
    assert first["id"] == "a" and first["batch_key"] == ""
    assert db.claim_next("music:cfg") is None
    assert [r["id"] for r in db.claim(4)] == ["b"]
    requeued, failed = db.recover(model="big-int8")
    assert requeued == [] and sorted(failed) == ["a", "b"]
    assert CRASHED in db.row("a")["error"] and "daemon_crashed" in db.row("a")["error"]
    # the innocent job that never ran at a crash batches as usual
    assert [r["id"] for r in db.claim(4)] == ["c"] and db.row("c")["crashes"] == 0
