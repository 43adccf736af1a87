"""Device faults are contained: a CUDA error in a decode step fails the jobs in flight with a named
``device_fault`` error, the daemon drops the model and loads it anew before the next job, logs it,
and ``status`` counts it. No GPU here: the same error type (``torch.AcceleratorError``, what a CUDA
fault raises) comes from the scheduler's test hook (UNIMOE_AUDIO_SIMULATE_DEVICE_FAULT=N: the Nth
decode step of the daemon process raises it, once). Also in process: JobBatch with a faulting step,
and one item's non-finite logits failing that job only."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from _daemon_harness import DaemonProc, music, wait_final

from unimoe_audio.model.errors import BadLogits, DeviceFault, is_device_fault


def test_device_fault_fails_jobs_in_flight_then_the_model_reloads(tmp_path):
    d = DaemonProc(tmp_path, keep_alive=0, max_batch=4, simulate_device_fault=3).start()
    try:
        ch = d.channel(timeout=60)
        sub = d.subscribe(["job."])
        jobs = [ch.request("submit", music(2.0, caption=f"cue {i}"))["job_id"] for i in range(2)]
        finals = [wait_final(sub, j, timeout=300)[0] for j in jobs]
        for f in finals:
            assert f.msg_type == "failed", f.content
            assert f.content["error"]["code"] == "device_fault"
            assert "AcceleratorError" in f.content["error"]["message"]
        st = ch.request("status", {})
        assert st["faults"] == 1 and st["last_fault"]["code"] == "device_fault"
        # the next job runs on a freshly loaded model
        again = ch.request("submit", music(1.0))["job_id"]
        final, _ = wait_final(sub, again, timeout=300)
        assert final.msg_type == "done", final.content
        assert ch.request("status", {})["faults"] == 1
        log = d.log()
        assert "device fault #1" in log and "model unloaded (device fault)" in log
        assert log.count("model loaded from") >= 2
        sub.close()
    finally:
        d.close()


def test_a_dead_context_restarts_the_daemon_in_a_fresh_process(tmp_path):
    # "3:sticky": the fault also leaves the (simulated) context unusable, as a device-side assert does: the
    # probe fails, so the daemon stops with its queue kept and starts again in a fresh process (same pid)
    from unimoe_audio.client import connection

    d = DaemonProc(tmp_path, keep_alive=0, max_batch=2, simulate_device_fault="3:sticky").start()
    try:
        first = d.info
        ch = d.channel(timeout=60)
        sub = d.subscribe(["job."])
        failing = ch.request("submit", music(2.0, caption="in flight"))["job_id"]
        final, _ = wait_final(sub, failing, timeout=300)
        assert final.msg_type == "failed" and final.content["error"]["code"] == "device_fault"

        def restarted():
            try:
                info = connection.read_connection_file(d.settings.connection_file)
            except Exception:  # noqa: BLE001 - between the two processes there is no file
                return None
            return info if info.started != first.started else None

        again = d.watch().wait(restarted, "the daemon to restart in a fresh process")
        assert again.pid == first.pid == d.proc.pid and d.proc.poll() is None  # exec: the same process id
        d.info = again
        ch2 = d.channel(timeout=60)
        st = ch2.request("status", {})
        assert st["faults"] == 0 and st["state"] != "error"  # a new process: a new context, nothing dead
        sub2 = d.subscribe(["job."])
        job = ch2.request("submit", music(1.0))["job_id"]
        done, _ = wait_final(sub2, job, timeout=300)
        assert done.msg_type == "done", done.content
        log = d.log()
        assert "unusable after a device fault" in log and "restarting in a fresh process" in log
        assert log.count("model loaded from") >= 2
    finally:
        d.close()


def test_is_device_fault_knows_cuda_errors():
    assert is_device_fault(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))
    assert is_device_fault(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_device_fault(DeviceFault("x"))
    assert not is_device_fault(RuntimeError("shape mismatch"))
    assert not is_device_fault(ValueError("CUDA error"))


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from unimoe_audio.model.engine import Engine
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    path = ensure_tiny_model(tmp_path_factory.mktemp("tiny") / "m")
    eng = Engine.load(path, device="cpu", dtype="float32", warmup=False)
    yield eng
    eng.close()


def _req(seconds, seed):
    from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams

    return MusicRequest(caption="a calm piano melody", length=Length(seconds=seconds),
                        sampling=SamplingParams(seed=seed))


def test_a_faulting_step_fails_every_job_with_device_fault(engine, monkeypatch):
    batch = engine.job_batch()
    got = {}
    for i in range(2):
        batch.add(engine.prepare(_req(1.0, i)), on_done=lambda r, i=i: got.__setitem__(i, r))
    batch.step()

    def boom(*a, **k):
        raise torch.AcceleratorError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(batch.session.rows, "step", boom)
    out = batch.step()
    assert len(out) == 2 and not batch
    assert all(isinstance(r, DeviceFault) for r in got.values())
    assert isinstance(batch.fault, DeviceFault)


def test_bad_logits_fail_that_job_only(engine):
    """Non-finite logits for one job's rows: that job fails with BadLogits, its neighbour's audio is
    the same as alone (same seed)."""
    solo = engine.job_batch()
    res = {}
    solo.add(engine.prepare(_req(1.0, 7)), on_done=lambda r: res.__setitem__("solo", r))
    solo.run()

    batch = engine.job_batch()
    batch.add(engine.prepare(_req(1.0, 7)), on_done=lambda r: res.__setitem__("good", r))
    batch.add(engine.prepare(_req(1.0, 8)), on_done=lambda r: res.__setitem__("bad", r))
    rows = batch.session.rows
    real = rows.step
    bad_ids = list(batch.session.active[1].rows)

    def poisoned(ids, emb, pos):
        out = real(ids, emb, pos)
        for k, i in enumerate(ids):
            if i in bad_ids and batch.session.steps >= 3:
                out[k, 0, 5] = float("nan")
        return out

    rows.step = poisoned
    batch.run()
    assert isinstance(res["bad"], BadLogits)
    assert not isinstance(res["good"], BaseException), res["good"]
    np.testing.assert_array_equal(res["good"].audio, res["solo"].audio)


def test_bad_logits_in_one_chunk_fail_its_whole_job_at_once(engine):
    """Items dropped from a session (what JobBatch does to a failed item's siblings, e.g. the other
    sentence chunks of a speech job) end at once with an error, not left running or unfinished."""
    from unimoe_audio.model import prompts
    from unimoe_audio.model.generation import GenItem, Sampling

    sess = engine.job_batch().session
    ids = list(range(10, 30))
    p = prompts.Prompt(uncond=prompts.PromptRow(ids=ids), cond=prompts.PromptRow(ids=ids + [7]))
    items = [GenItem(prompt=p, sampling=Sampling(cfg_scale=2.0), max_frames=30, min_frames=30, seed=s) for s in (1, 2)]
    states = sess.add(items)
    real = sess.rows.step
    bad_rows = list(states[0].rows)

    def poisoned(ids_, emb, pos):
        out = real(ids_, emb, pos)
        for k, i in enumerate(ids_):
            if i in bad_rows and sess.steps >= 2:
                out[k] = float("inf")
        return out

    sess.rows.step = poisoned
    with torch.inference_mode():
        while sess.active:
            done = sess.step()
            if any(st.error is not None for st in done):
                sess.drop(states)
    assert isinstance(sess.result(states[0]), BadLogits)
    assert isinstance(sess.result(states[1]), BaseException)  # dropped with it, not left running
    assert states[1].steps < 30
