"""Device and dtype that fit: the ``auto`` rules (a pure function of what the machine has), the memory
estimate from config + safetensors headers, and the refusal with advice under a memory budget
(``memory_budget`` / ``UNIMOE_AUDIO_MEMORY_BUDGET``), through the engine and the daemon's model host."""
from __future__ import annotations

import pytest
import torch

from unimoe_audio.client.settings import Settings
from unimoe_audio.daemon.model_host import ModelHost, ModelLoadFailed
from unimoe_audio.model import memory as M
from unimoe_audio.model import quant as Q
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.engine import Engine, auto_device_dtype, cpu_has_fast_bf16, pick_dtype
from unimoe_audio.model.tiny_bundle import ensure_tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def test_auto_device_and_dtype_rules():
    avx2 = frozenset({"fpu", "sse4_2", "avx2", "avx512f"})
    assert auto_device_dtype(cuda=True, mps=True, flags=avx2) == ("cuda", torch.bfloat16)
    assert auto_device_dtype(cuda=False, mps=True, flags=avx2) == ("mps", torch.bfloat16)
    assert auto_device_dtype(cuda=False, mps=False, flags=avx2) == ("cpu", torch.float32)
    assert auto_device_dtype(cuda=False, mps=False, flags=avx2 | {"avx512_bf16"}) == ("cpu", torch.bfloat16)
    assert auto_device_dtype(cuda=False, mps=False, flags=avx2 | {"amx_bf16", "amx_tile"}) == ("cpu", torch.bfloat16)
    assert not cpu_has_fast_bf16(frozenset())
    cpu = torch.device("cpu")
    assert pick_dtype("auto", cpu, flags=avx2) == torch.float32
    assert pick_dtype("auto", cpu, flags={"avx512_bf16"}) == torch.bfloat16
    assert pick_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("float32", torch.device("cuda")) == torch.float32  # explicit wins


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("quant", ["none", "int8", "int4"])
def test_estimate_matches_loaded_weights(bundle, dtype, quant):
    est = M.estimate(bundle, dtype=dtype, quant=quant)
    m = load_model(bundle, dtype=dtype, quant=quant, prepare=False)
    real = Q.tensor_bytes(m)
    assert est.quant == quant and est.dtype == str(dtype).replace("torch.", "")
    # int4's scale/zero pairs are counted in the activation dtype (what the kernel holds)
    assert abs(est.weights_bytes - real) <= 0.05 * real, (est.weights_bytes, real)
    assert est.runtime_bytes > est.parts["kv_cache"] > 0 and est.parts["codec"] > 0
    assert est.total_bytes == est.weights_bytes + max(est.transient_bytes, est.runtime_bytes)


def test_quantized_estimates_are_smaller_on_a_model_of_linears(tmp_path):
    """On the small config (experts dominate, as in the full model) int8 < bf16 < fp32 and int4 < int8."""
    from unimoe_audio.model.config import config_dict
    from unimoe_audio.model.decoder import UniMoEAudioModel
    from unimoe_audio.model.checkpoint import to_disk_key
    from unimoe_audio.model.config import ModelConfig

    cfg = config_dict("small")
    with torch.device("meta"):
        m = UniMoEAudioModel(ModelConfig.from_dict(cfg, source="small"), vision=False)
    specs = [(to_disk_key(n), "BF16", list(p.shape)) for n, p in m.named_parameters()]
    w = {}
    for dt in (torch.float32, torch.bfloat16):
        for q in ("none", "int8", "int4"):
            w[dt, q] = M.estimate_specs(specs, cfg, stored="none", dtype=dt, quant=q, device="cpu",
                                        load_vision=False, dac_bytes=0).weights_bytes
    assert w[torch.bfloat16, "none"] * 2 == w[torch.float32, "none"]
    assert w[torch.bfloat16, "int4"] < w[torch.bfloat16, "int8"] < 0.65 * w[torch.bfloat16, "none"]


def test_engine_refuses_what_cannot_fit_and_names_what_would(bundle):
    # avail=0: the least each needs (the decode plan shrinks to its smallest row cap)
    fp32 = M.estimate(bundle, dtype=torch.float32, quant="none", avail=0).total_bytes
    bf16 = M.estimate(bundle, dtype=torch.bfloat16, quant="none", avail=0).total_bytes
    int8 = M.estimate(bundle, dtype=torch.float32, quant="int8", avail=0).total_bytes
    assert bf16 < fp32 and int8 < fp32
    budget = (max(bf16, int8) + 1) / M.GB
    with pytest.raises(M.MemoryTooSmall) as ei:
        Engine.load(bundle, device="cpu", dtype="fp32", memory_budget_gb=budget)
    msg = str(ei.value)
    assert ei.value.code == "out_of_memory" and "needs" in msg and "free (memory_budget setting)" in msg
    assert "use dtype bfloat16" in msg and "quant int8" in msg
    # what it advised loads under the same budget
    eng = Engine.load(bundle, device="cpu", dtype="bf16", memory_budget_gb=budget)
    assert eng.info["memory_estimate"]["total_bytes"] <= budget * M.GB
    assert eng.info["memory_available_source"] == "memory_budget setting"
    eng.close()
    # nothing fits: say so
    with pytest.raises(M.MemoryTooSmall, match="even quant int4 does not fit"):
        Engine.load(bundle, device="cpu", dtype="fp32", memory_budget_gb=0.01)


def test_model_host_refusal_and_status_fields(bundle, tmp_path):
    s = Settings(home=tmp_path, model=str(bundle), device="cpu", dtype="float32", memory_budget=0.01)
    host = ModelHost(s)
    with pytest.raises(ModelLoadFailed) as ei:
        host.ensure_loaded()
    err = ei.value.error
    assert err.code == "out_of_memory" and "needs" in err.message and err.field == "memory"
    assert host.state == "error"
    mem = host.memory()
    assert mem["estimate_bytes"] > 0.01 * M.GB and mem["available_bytes"] == int(0.01 * M.GB)
    assert mem["available_source"] == "memory_budget setting"
    # a quantized load reports which weights are loaded
    s2 = Settings(home=tmp_path, model=str(bundle), device="cpu", dtype="float32", quant="int8")
    host2 = ModelHost(s2)
    host2.ensure_loaded()
    try:
        assert (host2.device, host2.dtype, host2.quant) == ("cpu", "float32", "int8")
        mem2 = host2.memory()
        assert mem2["estimate_bytes"] > 0 and mem2["available_source"] == "system available memory"
        assert mem2["peak_bytes"] >= mem2["rss_bytes"] > 0 and mem2["peak_source"].startswith("process peak RSS")
        assert mem2["max_rows"] == 16
    finally:
        host2.unload()


def test_memory_budget_setting_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UNIMOE_AUDIO_MEMORY_BUDGET", "12.5")
    monkeypatch.setenv("UNIMOE_AUDIO_QUANT", "int4")
    from unimoe_audio.client.settings import load_settings

    s = load_settings(home=tmp_path)
    assert s.memory_budget == 12.5 and s.quant == "int4"
    assert M.available_bytes(torch.device("cpu"), s.memory_budget) == (int(12.5e9), "memory_budget setting")
