"""Weight-only int8/int4 (model/quant.py): kernels equal the dequantised reference, quantized models
load (from a full-precision folder, or a folder stored quantized without ever building the
full-precision weights) and generate exact lengths, and the static decode step runs on them."""
from __future__ import annotations

import copy
import json
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from unimoe_audio.model import quant as Q
from unimoe_audio.model.convert import convert_folder
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.decoder import _weight_ptrs
from unimoe_audio.model.engine import Engine
from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams
from unimoe_audio.model.rope_index import positions_from_mask
from unimoe_audio.model.tiny import random_model
from unimoe_audio.model.tiny_bundle import ensure_tiny_model

from test_model_fastpath import static_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return ensure_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.mark.parametrize("method", ["int8", "int4"])
@pytest.mark.parametrize("n,k", [(64, 128), (40, 100), (688, 512), (512, 688)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_equals_dequantized_reference(method, n, k, dtype):
    g = torch.Generator().manual_seed(n + k)
    lin = torch.nn.Linear(k, n, bias=True)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n, k, generator=g) * 0.02)
        lin.bias.copy_(torch.randn(n, generator=g) * 0.02)
    lin = lin.to(dtype)
    q = Q.QuantLinear.from_linear(lin, method)
    w = q.dequantized(torch.float32)
    assert w.shape == (n, k)
    # the quantisation error itself is bounded by half a step of the scale
    err = (w - lin.weight.float()).abs().max().item()
    step = lin.weight.float().abs().max().item() / (127 if method == "int8" else 7)
    assert err <= step, (err, step)
    x = torch.randn(5, k, generator=g).to(dtype)
    ref = F.linear(x.float(), w, lin.bias.detach().float())
    kernel = q.prepare(dtype)
    # the fused CPU kernels run here (int8's needs K % 8 == 0, else the dequantising fallback)
    assert kernel == ("int4pack_cpu" if method == "int4" else "int8pack" if k % 8 == 0 else "dequant")
    y = q(x)
    assert y.dtype == dtype and y.shape == (5, n)
    tol = 1e-5 if kernel == "dequant" and dtype == torch.float32 else 2e-2  # the kernels take bf16 input
    np.testing.assert_allclose(y.float().numpy(), ref.numpy(), atol=tol * max(1.0, ref.abs().max().item()), rtol=0)


def test_int4_dequant_fallback_equals_kernel():
    lin = torch.nn.Linear(96, 48)
    q = Q.QuantLinear.from_linear(lin, "int4")
    x = torch.randn(3, 96)
    ref = q._call(q._build("dequant", torch.float32), x)
    np.testing.assert_allclose(q(x).detach().numpy(), ref.detach().numpy(), atol=2e-2 * ref.abs().max().item(), rtol=0)


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_quantized_model_stays_close_and_static_decode_matches(method):
    base = random_model("tiny", seed=2, vision=False, lm_head=False)
    qm = Q.quantize_model(copy.deepcopy(base), method)
    assert Q.quant_of(qm) == method
    assert all(isinstance(qm.get_submodule(n), Q.QuantLinear) for n, _ in Q.quantizable(base))
    assert isinstance(qm.language_model.layers[0].mlp.gate, torch.nn.Linear)  # the router stays exact
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 479, (2, 10), generator=g)
    mask = torch.ones_like(ids)
    frames = torch.randint(0, 1024, (2, 5, 12), generator=g)
    with torch.inference_mode():
        ref = base(base.embed(ids), positions_from_mask(mask), logits="last").logits
        out = qm(qm.embed(ids), positions_from_mask(mask), logits="last").logits
        assert (out - ref).abs().max() < (0.05 if method == "int8" else 0.3) * ref.abs().max()
        # eager decode vs the static decode step (what a CUDA graph captures), both quantized
        logits = {}
        for static in (False, True):
            cache = qm.new_cache(2, 16)
            qm(qm.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
            rows, rid = static_rows(qm, cache, frames.shape[1]) if static else (None, None)
            if static:
                assert all(_weight_ptrs(qm))  # the graph's recapture check works on packed weights
            n_real, outs = mask.sum(-1), []
            for s in range(frames.shape[1]):
                emb = qm.embed_codec(frames[:, s:s + 1])
                lg = rows.step(rid, emb, n_real)[:, None] if static else qm(emb, n_real[:, None], cache=cache,
                                                                           logits="last").logits
                outs.append(lg)
                n_real = n_real + 1
            logits[static] = torch.cat(outs, 1)
    np.testing.assert_allclose(logits[True].numpy(), logits[False].numpy(), atol=1e-5, rtol=0)


def _header(path):
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(n))


class _Shapes(TorchDispatchMode):
    """Records (dtype, shape) of every real (not meta) tensor an aten op produces (instrumentation)."""

    def __init__(self):
        super().__init__()
        self.seen: set[tuple[torch.dtype, tuple[int, ...]]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.seen.add((t.dtype, tuple(t.shape)))
        return out


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_stored_quantized_folder_loads_without_full_precision_weights(bundle, tmp_path, method):
    dest = convert_folder(bundle, tmp_path / method, method)
    cfg = json.loads((dest / "config.json").read_text())
    assert cfg[Q.MARKER]["method"] == method and Q.folder_quant(dest) == method
    assert (dest / "tokenizer_config.json").is_file() or (dest / "tokenizer").is_dir()
    headers = {}
    for f in dest.glob("*.safetensors"):
        headers.update(_header(f))
    qkey = "model.layers.0.mlp.dynamic_real_moe.deepspeed_moe.experts.deepspeed_experts.1.down_proj"
    assert headers[f"{qkey}.qweight"]["dtype"] == ("I8" if method == "int8" else "U8")
    assert f"{qkey}.weight" not in headers

    ref = load_model(bundle, dtype=torch.float32)
    q_shapes = {tuple(m.weight.shape) for n, m in Q.quantizable(ref)}
    other = {tuple(p.shape) for n, p in ref.named_parameters() if not Q.is_quantized_linear(n.rpartition(".")[0])}
    watch = q_shapes - other  # shapes only a quantized linear's full-precision weight has
    assert watch

    def float_weights_built(folder, quant):
        with _Shapes() as rec:
            m = load_model(folder, dtype=torch.float32, quant=quant)
        return m, {s for dt, s in rec.seen if dt.is_floating_point} & watch

    m, built = float_weights_built(dest, None)
    assert not built, built
    assert Q.quant_of(m) == method
    # control: loading the full-precision folder does build them (the instrument can see them)
    _, built_fp = float_weights_built(bundle, None)
    assert built_fp == watch
    # stored = quantized at load time from the full-precision folder: the same codes
    a = load_model(dest, dtype=torch.float32, prepare=False)
    b = load_model(bundle, dtype=torch.float32, quant=method, prepare=False)
    sa, sb = dict(Q.stored_tensors(a)), dict(Q.stored_tensors(b))
    assert sa.keys() == sb.keys()
    for k in sa:
        if sa[k].dtype in (torch.int8, torch.uint8):
            assert torch.equal(sa[k], sb[k]), k
    with pytest.raises(Exception, match="stored as"):
        load_model(dest, quant="int4" if method == "int8" else "int8")


@pytest.mark.parametrize("method", ["int8", "int4"])
def test_engine_generates_exact_lengths_quantized(bundle, method):
    eng = Engine.load(bundle, device="cpu", dtype="fp32", quant=method, window_frames=40, context_frames=10)
    try:
        assert eng.info["quant"] == method and eng.info["memory_estimate"]["quant"] == method
        for seconds in (0.5, 1.3):
            res = eng.music(MusicRequest(caption="calm piano", length=Length(seconds=seconds),
                                         sampling=SamplingParams(seed=3)))
            assert res.audio.shape == (1, round(seconds * 16000))
            assert np.isfinite(res.audio).all()
    finally:
        eng.close()
