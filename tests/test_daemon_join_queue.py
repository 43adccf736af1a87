"""The queue side of continuous batching: which queued job may join a running batch (daemon/queue.py
``claim_next``) and the join key of a request (daemon/worker.py ``batch_key``). Real SQLite files."""
from __future__ import annotations

from unimoe_audio.client.protocol import SubmitRequest
from unimoe_audio.daemon.queue import JobStore
from unimoe_audio.daemon.worker import batch_key


def _req(task: str = "music", **sampling):
    spec = {"music": {"task": "music", "caption": "x"},
            "speech": {"task": "speech", "text": "hi", "voice": "v"}}[task]
    return SubmitRequest.model_validate({"spec": {**spec, "sampling": sampling}})


def test_batch_key_is_task_and_cfg_on_off():
    assert batch_key(_req()) == batch_key(_req(cfg_scale=3.0)) == "music:cfg"
    assert batch_key(_req(cfg_scale=0)) == "music:nocfg"
    assert batch_key(_req("speech")) == "speech:cfg" != batch_key(_req())
    assert batch_key(_req(seed=4, temperature=0.5)) == "music:cfg"  # other sampling settings share a batch


def test_claim_next_takes_the_head_only_when_it_may_join(tmp_path):
    db = JobStore(tmp_path / "jobs.sqlite3")
    db.add("a", "music", 0, {}, tag=None, batch_key="music:cfg")
    db.add("b", "music", 0, {}, tag=None, batch_key="music:cfg")
    db.add("s", "speech", 3, {}, tag=None, batch_key="speech:cfg")
    db.add("c", "music", 0, {}, tag=None, batch_key="music:cfg")
    db.add("old", "music", 0, {}, tag=None, batch_key="")  # a row of an older database: never joins
    # an empty batch takes the head (priority first)
    first = db.claim_next(None)
    assert first["id"] == "s" and first["state"] == "running" and first["attempts"] == 1
    assert db.state("s") == "running"
    # a speech batch: the head is music, so nothing joins (and nothing behind it jumps the queue)
    assert db.claim_next("speech:cfg") is None and db.state("a") == "queued"
    # a music batch takes the music jobs in order
    assert [db.claim_next("music:cfg")["id"] for _ in range(3)] == ["a", "b", "c"]
    # the empty-key row joins no batch, but starts one of its own
    assert db.claim_next("music:cfg") is None and db.claim_next("") is None
    assert db.claim_next(None)["id"] == "old"
    assert db.claim_next(None) is None
