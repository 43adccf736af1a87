"""The Ray engine actor's own code, run in this process without a cluster (Ray only moves the calls):
a batch sent to ``EngineActor.run`` goes through the same ``LocalEngineExecutor`` as the local worker and
comes back as progress, then one result per job, unfitted (the daemon fits it once, at the output's rate).
The cluster tests (tests/test_ray_backend.py) run the same through real actors, much slower."""
from __future__ import annotations

import os

import ray  # noqa: F401 - the test extra installs it (as tests/test_ray_backend.py); never started here


def test_a_batch_runs_on_the_actor_engine(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("UNIMOE_AUDIO_HOME", str(tmp_path / "home"))
    if os.environ.get("UNIMOE_AUDIO_TEST_CACHE"):
        monkeypatch.setenv("UNIMOE_AUDIO_CACHE_DIR", os.environ["UNIMOE_AUDIO_TEST_CACHE"])
    from unimoe_audio.daemon.ray_actor import EngineActor
    from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams

    actor = EngineActor({"model": "tiny", "device": "cpu", "dtype": "float32", "dac": None})
    jobs = [{"job_id": f"j{i}", "request": MusicRequest(caption="calm piano", length=Length(seconds=s),
                                                         sampling=SamplingParams(seed=i)), "inputs": {}}
            for i, s in enumerate((0.5, 0.75))]
    events = list(actor.run(jobs))
    results = {job_id: value for kind, job_id, value in events if kind == "result"}
    assert set(results) == {"j0", "j1"}
    for job_id, s in (("j0", 0.5), ("j1", 0.75)):
        res = results[job_id]
        assert not hasattr(res, "code"), res  # not a RemoteFailure
        assert res.codes is None and res.sample_rate == 16000  # the daemon writes audio only
        assert res.info["target_samples"] == round(s * 16000) and not res.info["length_fitted"]
    progress = [v for kind, _, v in events if kind == "progress"]
    assert progress and all(0.0 <= p["fraction"] <= 1.0 for p in progress)
    assert actor.jobs_done == 2 and actor.running == []
