"""Kernels chosen by what they do on the real shapes (model/kernels.py) and quantized weights that
load anywhere (aligned shards, aligned copies at load, per-weight fallback).

The crash this guards against is a segfault in native code, so whatever could crash runs in a
subprocess: the raw kernel on an 8-byte-aligned int8 weight (reproduced first, on a small tensor),
then the same tensor through the project's load path. The CUDA rules are pure functions, checked for
every (K, N) the small and full configurations use."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from unimoe_audio.model import kernels as K
from unimoe_audio.model.kernel_check import check_model
from unimoe_audio.model import quant as Q
from unimoe_audio.model.convert import convert_folder
from unimoe_audio.model.config import ModelConfig, config_dict
from unimoe_audio.model.decoder import UniMoEAudioModel
from unimoe_audio.model.tiny import random_model

pytestmark = pytest.mark.usefixtures("one_thread")
AVX512 = torch.backends.cpu.get_cpu_capability() == "AVX512"


def _linear_shapes(size: str) -> set[tuple[int, int]]:
    """(N, K) of every quantized linear of a configuration (built on the meta device)."""
    with torch.device("meta"):
        m = UniMoEAudioModel(ModelConfig.from_dict(config_dict(size), source=size), vision=True)
    return {(lin.out_features, lin.in_features) for _, lin in Q.quantizable(m)}


def test_int8_cpu_rule_covers_k_mod_16_and_alignment():
    assert K.int8_refusal("cpu", 344, 0) and "multiple of 16" in K.int8_refusal("cpu", 344, 0)
    assert K.int8_refusal("cpu", 264, 64)  # K % 16 == 8
    assert "aligned" in K.int8_refusal("cpu", 2048, 4096 + 8) or "boundary" in K.int8_refusal("cpu", 2048, 4096 + 8)
    assert K.int8_refusal("cpu", 2048, 4096 + 16) is None and K.int8_refusal("cpu", 2048, 4096) is None
    assert K.int8_refusal("cuda", 344, 8) is None  # the CUDA kernel takes any shape
    assert K.int8_refusal("mps", 2048, 0)


def test_int4_inner_k_tiles_per_k_keep_every_full_size_down_proj_fused():
    assert [K.int4_inner_k_tiles(k) for k in (2048, 2752, 1376, 96, 344, 16)] == [8, 4, 2, 2, None, None]
    full = _linear_shapes("full")
    assert {k for _, k in full} >= {2048, 2752, 1376}
    for n, k in full | _linear_shapes("small"):
        g, np_, kp = Q.int4_layout(n, k)
        assert K.int4_refusal("cuda", np_, kp, g) is None, (n, k, g)  # no int4 fallback on CUDA
        assert K.int4_refusal("cpu", np_, kp, g) is None, (n, k, g)
    assert K.int4_refusal("cuda", 2048, 1376, 128)  # a group that does not divide K
    assert K.int4_refusal("cuda", 2044, 2048, 128)  # N not a multiple of 8
    assert K.int4_refusal("cuda", 2048, 1360, 16)  # K = 85 k-tiles: no inner tiling, odd group


def test_int8_rules_on_every_shape_of_the_configs():
    """On the CPU, full size: every language-model K is a multiple of 16; only the vision tower's
    down_proj (K = 3420, video only) falls back. Small config: the shared experts' down_proj (K = 344)."""
    full = {k for _, k in _linear_shapes("full") if K.int8_refusal("cpu", k, 0)}
    assert full == {3420}
    small = {k for _, k in _linear_shapes("small") if K.int8_refusal("cpu", k, 0)}
    assert small == {344} | ({3420} if 3420 in {k for _, k in _linear_shapes("small")} else set())


def test_int8_on_the_small_config_falls_back_per_shape_and_runs():
    m = random_model("small", seed=0, vision=False, lm_head=False)
    Q.quantize_model(m, "int8")
    rep = check_model(m, torch.float32)
    lin = rep["linears"]
    assert lin["attention"] == {"int8pack": 32}
    assert lin["shared experts"] == {"dequant": 16, "int8pack": 32}  # 2 shared experts x 8 layers
    assert rep["fallbacks"] == 16 and "K=344" in rep["fallback_reasons"][0]
    assert lin["routed experts"] == {"int8pack": sum(lin["routed experts"].values())}
    assert rep["experts_decode"] == "grouped"  # a CPU decode step: each chosen expert on its rows
    moe = m.language_model.layers[0].mlp
    assert moe.fast_path(torch.device("cpu"), torch.float32) == "all"  # quantized experts do not stack
    x = torch.randn(2, 5, m.hidden_size)
    with torch.inference_mode():
        y = m.language_model.layers[0].mlp(x)  # prefill-sized (more than 4 rows): no crash
    assert torch.isfinite(y).all()


def test_trial_reference_builds_no_full_weight_and_matches_dequant():
    lin = torch.nn.Linear(96, 40)
    for method in ("int8", "int4"):
        q = Q.QuantLinear.from_linear(lin, method)
        x = torch.randn(3, 96)
        ref = torch.nn.functional.linear(x, q.dequantized(torch.float32), q.bias.float())
        torch.testing.assert_close(q.reference(x), ref, rtol=1e-5, atol=1e-5)


def test_grouped_expert_matmul_is_chosen_by_its_trial():
    def ok():
        return torch.ones(2, 2), torch.ones(2, 2)

    def syncs():
        raise RuntimeError("called a synchronizing CUDA operation")

    def capturing():
        raise RuntimeError("operation not permitted when stream is capturing")

    def unsupported():
        raise RuntimeError("grouped gemm is not supported on this device")

    def wrong():
        return torch.zeros(2, 2), torch.ones(2, 2)

    got = [K.classify_trial(f) for f in (ok, syncs, capturing, unsupported, wrong)]
    assert got == ["ok", "syncs", "syncs", "fails", "wrong"]
    # the real trial on the CPU (its grouped mm is correct there; sync-freeness only matters on CUDA)
    assert K.grouped_mm_trial(torch.device("cpu"), torch.float32, 4, 64, 32) == "ok"
    from unimoe_audio.model.moe import grouped_mm_sync_free

    assert not grouped_mm_sync_free(torch.device("cpu"), torch.bfloat16, 4, 64, 32)


def test_misaligned_weight_falls_back_for_that_weight_alone():
    lin = torch.nn.Linear(64, 32)
    q = Q.QuantLinear.from_linear(lin, "int8")
    buf = torch.empty(q.qweight.numel() + 128, dtype=torch.int8)
    off = (-buf.data_ptr()) % 64 + 8
    mis = buf[off:off + q.qweight.numel()].view(q.qweight.shape)
    mis.copy_(q.qweight)
    q.qweight = mis
    assert q.prepare(torch.float32) == "dequant" and "boundary" in q.refusal
    q.qweight = K.aligned(mis)
    assert q.qweight.data_ptr() % 64 == 0 and torch.equal(q.qweight, mis)
    assert q.prepare(torch.float32) == "int8pack" and q.refusal is None


_RAW = textwrap.dedent("""
    import sys, torch
    from safetensors import safe_open
    with safe_open(sys.argv[1], "pt", device="cpu") as h:
        w = h.get_tensor("w")
    print("offset", w.data_ptr() % 64, flush=True)
    x = torch.randn(8, w.shape[1]).bfloat16()
    torch.ops.aten._weight_int8pack_mm(x, w, torch.ones(w.shape[0]).bfloat16())
    print("ran", flush=True)
""")


def _misaligned_file(path: Path) -> Path:
    """A safetensors file (written by the safetensors package) whose int8 "w" [16, 32] lands 8 bytes
    past a 16-byte boundary: a pad tensor "a" before it is sized until it does."""
    from safetensors.torch import save_file

    for n in range(1, 64):
        save_file({"a": torch.zeros(n, dtype=torch.int8), "w": torch.ones(16, 32, dtype=torch.int8)}, str(path))
        with open(path, "rb") as fh:
            (hl,) = struct.unpack("<Q", fh.read(8))
            head = json.loads(fh.read(hl))
        if (8 + hl + head["w"]["data_offsets"][0]) % 16 == 8:
            return path
    raise AssertionError("no pad size gives an 8-aligned weight")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600)


def test_raw_kernel_crashes_on_an_8_aligned_mapped_weight(tmp_path):
    """The bug, reproduced on a small tensor: the mmap'd weight is 8-byte aligned and the CPU int8
    kernel dies with SIGSEGV (on AVX-512 CPUs; others may read it unharmed)."""
    f = _misaligned_file(tmp_path / "m.safetensors")
    r = _run(_RAW, str(f))
    assert "offset 8" in r.stdout or "offset 24" in r.stdout or "offset 40" in r.stdout or "offset 56" in r.stdout
    if AVX512:
        assert r.returncode == -11 and "ran" not in r.stdout, (r.returncode, r.stdout, r.stderr[-500:])


_LOADED = textwrap.dedent("""
    import sys, torch
    from unimoe_audio.model.checkpoint import load_model
    from unimoe_audio.model.kernel_check import check_model
    m = load_model(sys.argv[1], device="cpu", dtype=torch.float32)
    rep = check_model(m)
    from unimoe_audio.model.quant import QuantLinear
    qs = [q for q in m.modules() if isinstance(q, QuantLinear)]
    assert all(q.qweight.data_ptr() % 16 == 0 for q in qs)
    x = torch.randn(2, 6, m.hidden_size)
    with torch.inference_mode():
        for layer in m.language_model.layers:
            assert torch.isfinite(layer.mlp(x)).all()
            assert torch.isfinite(layer.self_attn.o_proj(x)).all()
    print("copies", rep["aligned_copies"], "fallbacks", rep["fallbacks"], flush=True)
""")


def _offsets(f: Path) -> dict[str, int]:
    """File offset of every int8 tensor's data."""
    with open(f, "rb") as fh:
        (hl,) = struct.unpack("<Q", fh.read(8))
        head = json.loads(fh.read(hl))
    return {k: 8 + hl + v["data_offsets"][0] for k, v in head.items() if k != "__metadata__" and v["dtype"] == "I8"}


def _reshard_plain(src: Path, dest: Path) -> None:
    """``dest``: the stored int8 folder rewritten by the safetensors package (which ignores
    alignment), its header grown by metadata until some int8 codes sit 8 bytes off a 16-byte
    boundary, as 163 of the full-size shards' do."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest, dirs_exist_ok=True)
    for f in sorted(dest.glob("*.safetensors")):
        ts = load_file(str(f))
        for n in range(64):
            save_file(ts, str(f), metadata={"format": "pt", Q.MARKER: "int8", "note": "x" * n})
            if any(o % 16 == 8 for o in _offsets(f).values()):
                break
        else:
            raise AssertionError("no header size misaligns an int8 tensor")


def test_stored_int8_is_aligned_on_disk_and_copied_when_not(tmp_path):
    from unimoe_audio.model.checkpoint import normalize_key  # noqa: F401  (same key rules as the loader)
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    src = ensure_tiny_model(tmp_path / "tiny")
    dest = convert_folder(src, tmp_path / "int8", "int8")
    # on disk: every stored int8 code tensor starts on a 16-byte file offset (64 where sizes allow)
    for f in dest.glob("*.safetensors"):
        offs = _offsets(f)
        assert offs and all(o % 16 == 0 for o in offs.values()), offs
    r = _run(_LOADED, str(dest))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "copies 0 " in r.stdout  # aligned files need no alignment copy
    # the same weights written without alignment: some land 8 bytes off; the loader copies those
    plain = tmp_path / "plain"
    _reshard_plain(dest, plain)
    r = _run(_LOADED, str(plain))
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    assert int(r.stdout.split("copies ")[1].split()[0]) > 0
