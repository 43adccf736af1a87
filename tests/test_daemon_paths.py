"""Allowed roots, unique names and crash-safe name reservation (daemon/outputs.py), and the job store."""
from __future__ import annotations

import json
import os

import pytest

from unimoe_audio.client.protocol import ProtocolError
from unimoe_audio.daemon import outputs
from unimoe_audio.daemon.queue import MAX_ATTEMPTS, JobStore


def test_paths_outside_roots_are_refused(tmp_path):
    root = (tmp_path / "root").resolve()
    root.mkdir()
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    ok = outputs.check_allowed(str(root / "a" / "b.wav"), [root], "f")
    assert ok == root / "a" / "b.wav"
    for bad in (str(root / ".." / "secret"), str(root / "escape" / "x.wav"), "/etc/passwd"):
        with pytest.raises(ProtocolError) as ei:
            outputs.check_allowed(bad, [root], "spec.video")
        assert ei.value.code == "path_not_allowed" and ei.value.field == "spec.video"
    with pytest.raises(ProtocolError) as ei:
        outputs.check_allowed("relative/x.wav", [root], "output.folder")
    assert ei.value.code == "invalid_input"
    with pytest.raises(ProtocolError) as ei:
        outputs.check_input_file(str(root / "missing.wav"), [root], "spec.reference_audio")
    assert ei.value.code == "not_found"


def test_reserve_name_is_unique_and_reuses_own_placeholder(tmp_path):
    first = outputs.reserve_name(tmp_path, "cue", "job1")
    assert first == tmp_path / "cue.wav" and json.loads((tmp_path / "cue.json").read_text())["job_id"] == "job1"
    # another job never gets or overwrites that name
    assert outputs.reserve_name(tmp_path, "cue", "job2") == tmp_path / "cue-2.wav"
    # a foreign file with no sidecar is not overwritten either
    (tmp_path / "cue-3.wav").write_bytes(b"someone else's")
    assert outputs.reserve_name(tmp_path, "cue", "job3") == tmp_path / "cue-4.wav"
    assert (tmp_path / "cue-3.wav").read_bytes() == b"someone else's"
    # a rerun of job1 (killed after reserving) gets its own name back
    assert outputs.reserve_name(tmp_path, "cue", "job1") == first
    assert not [p for p in os.listdir(tmp_path) if p.startswith(outputs.TMP_PREFIX)]


def test_reserve_name_with_overwrite_takes_a_finished_name_but_not_one_being_written(tmp_path):
    # output.overwrite: the name asked for, even when a finished file holds it (its sidecar is replaced now,
    # its audio when the new file is complete)
    (tmp_path / "cue.wav").write_bytes(b"old take")
    (tmp_path / "cue.json").write_text(json.dumps({"job_id": "old", "seed": 1}))
    assert outputs.reserve_name(tmp_path, "cue", "job1", overwrite=True) == tmp_path / "cue.wav"
    assert json.loads((tmp_path / "cue.json").read_text()) == {"job_id": "job1", "state": "writing"}
    # another job still writing that name keeps it: the next free name is used
    assert outputs.reserve_name(tmp_path, "cue", "job2", overwrite=True) == tmp_path / "cue-2.wav"
    # a user's file without a sidecar is replaced too when overwrite is asked for
    (tmp_path / "mix.wav").write_bytes(b"user file")
    assert outputs.reserve_name(tmp_path, "mix", "job3", overwrite=True) == tmp_path / "mix.wav"
    assert not [p for p in os.listdir(tmp_path) if p.startswith(outputs.TMP_PREFIX)]


def test_safe_stem():
    assert outputs.safe_stem("cue 1.wav") == "cue 1"
    assert outputs.safe_stem("a*b?c") == "a_b_c"
    assert outputs.safe_stem("...") == "audio"


def test_store_priorities_batches_and_recovery(tmp_path):
    db = JobStore(tmp_path / "jobs.sqlite3")
    db.add("a", "music", 0, {"n": 1}, tag=None, batch_key="music")
    db.add("b", "speech", 0, {"n": 2}, tag=None, batch_key="speech")
    db.add("c", "music", 5, {"n": 3}, tag=None, batch_key="music")
    db.add("d", "music", 0, {"n": 4}, tag=None, batch_key="music")
    assert not db.add("e", "music", 0, {}, tag=None, batch_key="music", max_queue=4)
    assert [db.position(j) for j in "cabd"] == [0, 1, 2, 3]
    batch = db.claim(max_batch=4)
    assert [r["id"] for r in batch] == ["c", "a", "d"]  # highest priority first, then same-key jobs in order
    assert db.cancel_queued("b") and not db.cancel_queued("a")
    # a crash: running jobs go back to the queue, until MAX_ATTEMPTS
    for attempt in range(1, MAX_ATTEMPTS):
        requeued, failed = JobStore(tmp_path / "jobs.sqlite3").recover()
        assert sorted(requeued) == ["a", "c", "d"] and failed == []
        assert [r["attempts"] for r in db.claim(4)] == [attempt + 1] * 3
    requeued, failed = db.recover()
    assert requeued == [] and sorted(failed) == ["a", "c", "d"]
    assert db.state("a") == "failed" and db.state("b") == "cancelled"
