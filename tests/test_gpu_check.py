"""``bench/gpu_check.py --device cpu``: the GPU check's sections on the small config, so the script that
proves the GPU path cannot rot between GPU runs. Checks the JSON it writes, section by section."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("load", "decode_join", "invariance", "moe_agreement", "kernels", "speed", "first_audio", "daemon", "memory")


@pytest.mark.slow
def test_gpu_check_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu-check-cpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--out", str(out)],
                          capture_output=True, text=True)
    assert out.is_file(), proc.stderr[-4000:]
    r = json.loads(out.read_text())
    failed = {k: r[k].get("error") for k in SECTIONS if not r.get(k, {}).get("ok")}
    assert not failed, f"{failed}\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0 and r["ok"] and r["card"] == "cpu" and r["size"] == "small" and r["random_weights"]
    # the daemon rendered the three default sampled tasks
    for task in ("music", "speech", "video_score"):
        assert r["daemon"][task]["ok"] and r["daemon"][task]["seconds"] > 0
    # a job joined a running batch (more rows after) and both came out at their lengths
    j = r["decode_join"]
    assert j["rows_after_join"] > j["rows_before_join"] and set(j["lengths_s"]) == {"first", "joined"}
    # a seeded item alone = joined by neighbours (one cancelled) = again; the cost measured at 8 and 16 rows
    inv = r["invariance"]
    assert inv["joined_equals_solo"] and inv["again_equals_solo"] and inv["frames"] >= 10
    assert [c["rows"] for c in inv["cost"]] == [8, 16] and all(c["ratio"] > 0 for c in inv["cost"])
    assert r["moe_agreement"]["layers"] == 8 and r["moe_agreement"]["max_rel_diff"] <= r["moe_agreement"]["tolerance"]
    # every distinct (N, K) of the small config's quantized linears, both methods, kernel named
    k = r["kernels"]
    assert k["shapes"] >= 4 and len(k["rows"]) == 2 * k["shapes"]
    assert all(row["kernel"] in ("int8pack", "int4pack_cpu", "dequant") for row in k["rows"])
    for label in ("float32", "int8", "int4"):
        m = r["memory"][label]
        assert m["peak_bytes"] > 0 and m["estimate_bytes"] > 0 and m["ratio"] > 0
    assert r["speed"]["x_realtime_1_item"] > 0 and r["speed"]["items"] == 8
    assert 0 < r["first_audio"]["first_audio_s"] and r["first_audio"]["request_seconds"] == 10.0
    assert "section" in proc.stdout and "wrote" in proc.stdout  # the printed table
