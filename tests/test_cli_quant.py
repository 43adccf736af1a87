"""``models import --quant`` stores a quantized model once; the daemon serves it and ``status`` says
which weights are loaded; a memory budget the model cannot fit fails the job with the advice."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _client_harness import cli, make_env  # noqa: E402
from _daemon_harness import DaemonProc, music, wait_final  # noqa: E402

from unimoe_audio.client import protocol as P  # noqa: E402


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    return ensure_tiny_model(tmp_path_factory.mktemp("src") / "tiny-src")


def test_models_import_quant_stores_quantized_weights(tmp_path, tiny_src):
    env = make_env(tmp_path / "home")
    r = cli(env, "models", "import", str(tiny_src), "--name", "tq", "--quant", "int8", "--json", timeout=300).ok().json()
    assert r["check"]["ok"] and "I8" in r["check"]["dtypes"]
    dest = Path(r["path"])
    assert json.loads((dest / "config.json").read_text())["unimoe_audio_quant"]["method"] == "int8"
    assert (dest / "dac").is_dir()  # the codec and tokenizer come along
    names = {m["name"]: m for m in cli(env, "models", "ls", "--json").ok().json()["models"]}
    assert names["tq"]["ok"]
    bad = cli(env, "models", "import", str(tiny_src), "--name", "tq2", "--quant", "int4", "--link")
    assert bad.code == 2 and "exclude each other" in bad.err
    # a failed quantized import (already quantized source) leaves the existing model in place
    again = cli(env, "models", "import", str(dest), "--name", "tq", "--quant", "int4", "--force")
    assert again.code == 2 and "already quantized" in again.err
    assert json.loads((dest / "config.json").read_text())["unimoe_audio_quant"]["method"] == "int8"


def test_daemon_serves_quantized_model_and_reports_it(tmp_path, tiny_src):
    home = tmp_path / "home"
    env = make_env(home)
    r = cli(env, "models", "import", str(tiny_src), "--name", "tq4", "--quant", "int4", "--json", timeout=300).ok().json()
    d = DaemonProc(home, model="tq4", models_dir=Path(r["path"]).parent, keep_alive=0, dtype="float32").start()
    try:
        ch, sub = d.channel(timeout=30), d.subscribe(["job.", "daemon"])
        job = ch.request("submit", music(0.5, spec={"task": "music", "caption": "calm", "length": {"seconds": 0.5},
                                                    "sampling": {"seed": 1}}))
        final, _ = wait_final(sub, job["job_id"], timeout=300)
        assert final.msg_type == "done", final.content
        st = ch.call("status", control=True)
        assert isinstance(st, P.StatusReply)
        # The imported folder is a quantized copy of a make-tiny model: it is the folder that serves (not the
        # built-in fallback), and its own config still flags it as random weights, so the banner stays on.
        assert (st.device, st.dtype, st.quant, st.tiny) == ("cpu", "float32", "int4", True)
        assert st.model_dir == str(Path(r["path"]).resolve()) and "model =" not in (st.tiny_reason or "")
        assert st.memory.estimate_bytes and st.memory.available_bytes and st.memory.available_source
        assert st.memory.peak_bytes >= st.memory.rss_bytes > 0 and st.memory.peak_source.startswith("process peak RSS")
        assert st.memory.max_rows == 16 and st.memory.batch_invariant is True
        assert st.kernels["linears"]["attention"] == {"int4pack_cpu": 8} and st.kernels["fallbacks"] == 0
        human = cli(dict(env, UNIMOE_AUDIO_MODELS_DIR=str(Path(r["path"]).parent)), "status").ok().out
        assert "quant int4" in human and "model estimate" in human
        assert "process peak RSS" in human and "up to 16 rows, batch-invariant" in human and "attention int4pack_cpu 8" in human
        sub.close()
    finally:
        d.close()


def test_daemon_refuses_a_model_over_the_memory_budget(tmp_path):
    (tmp_path / "home").mkdir()
    d = DaemonProc(tmp_path / "home", keep_alive=0, memory_budget=0.01, dtype="float32").start()
    try:
        ch, sub = d.channel(timeout=30), d.subscribe(["job.", "daemon"])
        job = ch.request("submit", music(0.5))
        final, _ = wait_final(sub, job["job_id"], timeout=300)
        assert final.msg_type == "failed", final.content
        err = final.content["error"]
        assert err["code"] == "out_of_memory" and "needs" in err["message"] and "0.01 GB free" in err["message"]
        st = ch.call("status", control=True)
        assert st.memory.estimate_bytes > 0.01e9 and st.memory.available_source == "memory_budget setting"
        sub.close()
    finally:
        d.close()
