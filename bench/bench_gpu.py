"""GPU benchmark of the model core: parity on CUDA, decode steps/s, prefill, memory.

    python bench/bench_gpu.py [--steps 64] [--grouped-steps 24] [--prompt 600] [--sizes small,full]
    python bench/bench_gpu.py --smoke        # CPU: tiny config, few steps (checks the script itself)

On a CUDA machine, in one run:

1. **Parity (fp32, CUDA).** The golden tiny checkpoint (tests/fixtures/model) through the full
   forward of the t2m and tts prompts, with the MoE's grouped path and with its fast (sync-free) path:
   max |logit - golden| of the last position and whether every layer's routing (expert mask, Top-P
   count) equals the golden one. Then decode steps with the grouped path, the fast path and the
   production static step (StaticRows, CUDA graph; rows leave in the middle): max |logit difference| between them.
2. **Host syncs.** One eager decode step under ``torch.cuda.set_sync_debug_mode("error")`` per MoE
   path: the grouped path must sync (its group sizes), the fast path must not.
3. **Speed (bf16, random weights built directly on the GPU: std 0.02, router gates 0.08, norms 1).**
   Configs "small" (the CPU benchmark's) and "full" (the published architecture, 7.16 B parameters
   with the vision tower and lm_head). CFG pairs at batch 1 and 4 (2 and 8 rows, uncond rows
   left-padded), after a prompt of ``--prompt`` tokens: decode steps/s for
   * ``grouped``: eager forward, grouped MoE (one host sync per layer) - the path before this work;
   * ``fast``: eager forward, sync-free MoE (all experts as stacked batched matmuls);
   * ``graph``: the production static step (``decode_rows.StaticRows`` on a ``StaticDecoder``
     bucket, what generation runs on CUDA), captured once as a CUDA graph.
   A step is what generation does: embed the previous frame, the forward, greedy next frame.
   Also the prefill time of the prompt (one CFG pair and 4 pairs) and peak GPU memory.
   Real-time factor: 50 frames make one second of audio, so steps/s / 50 = times faster than real
   time for each item of the batch (x batch for the whole batch).

Prints a table and writes bench/results/gpu-<device name>.json.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import statistics
import sys
import time
import traceback
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import unimoe_audio.model  # noqa: F401  (installed: pip install --no-deps -e .)
except ImportError:  # a bare checkout: map the package onto the root folders like pyproject does
    import importlib.util

    pkg = types.ModuleType("unimoe_audio")
    pkg.__path__ = []
    sys.modules["unimoe_audio"] = pkg
    spec = importlib.util.spec_from_file_location("unimoe_audio.model", ROOT / "model" / "__init__.py",
                                                  submodule_search_locations=[str(ROOT / "model")])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["unimoe_audio.model"] = mod
    spec.loader.exec_module(mod)
    pkg.model = mod

from unimoe_audio.model import layers as layers_mod  # noqa: E402
from unimoe_audio.model import moe as moe_mod  # noqa: E402
from unimoe_audio.model.config import ModelConfig, config_dict  # noqa: E402
from unimoe_audio.model.decode_rows import StaticRows  # noqa: E402
from unimoe_audio.model.decoder import StaticDecoder, UniMoEAudioModel  # noqa: E402
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model.generation import backend_for  # noqa: E402
from unimoe_audio.model.moe import SparseMoE, moe_path  # noqa: E402
from unimoe_audio.model.rope_index import positions_from_mask  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "model"
FRAME_RATE = 50  # codec frames per second of audio
BOS = 1026
NORM_SUFFIXES = ("norm.weight", "layernorm.weight", "ln_q.weight", "norm1.weight", "norm2.weight")


def log(*a) -> None:
    print(*a, flush=True)


class Timer:
    """Device-event timing on CUDA, perf_counter elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            self.a, self.b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.a.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self.b.record()
            self.b.synchronize()
            self.s = self.a.elapsed_time(self.b) / 1e3
        else:
            self.s = time.perf_counter() - self.t0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- 1. parity ------------------------------------------------------------------------------------------

def static_rows(model, cache, need: int, use_graph: bool | None = None) -> tuple[StaticRows, list[int]]:
    """The production static decode holding the rows of a prefilled ``cache`` (its own decoder, so
    every variant starts without captured buckets); returns (rows, row ids)."""
    rows = StaticRows(backend_for(model), StaticDecoder(model, use_graph=use_graph))
    return rows, rows.add(cache, need)


def parity(device: torch.device) -> dict:
    g = dict(np.load(FIXTURE / "golden.npz"))
    m = load_model(FIXTURE, device=device, dtype=torch.float32, load_vision=False)
    res: dict = {}
    for name in ("t2m", "tts"):
        ids = torch.from_numpy(g[f"{name}_forward_input_ids"]).to(device)
        mask = torch.from_numpy(g[f"{name}_forward_attention_mask"]).to(device)
        codec = torch.from_numpy(g[f"{name}_forward_codec_input_ids"]).to(device)
        gold = torch.from_numpy(g[f"{name}_logits_last"])
        for path in ("grouped", "fast"):
            with torch.inference_mode(), moe_path(m, path):
                out = m(m.embed(ids, codec_frames=codec), positions_from_mask(mask), attention_mask=mask,
                        logits="last", output_routing=True)
            rows, L = ids.shape
            same = all(
                np.array_equal(rt.expert_mask.view(rows, L, -1).cpu().numpy(), g[f"{name}_router_expert_mask"][i])
                and np.array_equal(rt.top_k.view(rows, L).cpu().numpy(), g[f"{name}_router_dyn_top_k"][i])
                for i, rt in enumerate(out.routing))
            d = float((out.logits[:, 0].cpu() - gold).abs().max())
            res[f"{name}_{path}"] = dict(max_abs_logit_diff=d, routing_equal=bool(same), tokens=rows * L)
            log(f"  parity {name:4} {path:8} tokens {rows * L:4d}  max|dlogit| {d:.2e}  routing equal {same}")
    # decode: grouped vs fast vs the production static step (graph on CUDA), rows leave after 3 steps
    ids = torch.from_numpy(g["t2m_input_ids"]).to(device)
    mask = torch.from_numpy(g["t2m_attention_mask"]).to(device)
    gen = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 1024, (ids.shape[0], 8, 12), generator=gen).to(device)
    frames[:, 0] = BOS
    keep = torch.tensor([3, 1], device=device)

    def run(variant: str) -> torch.Tensor:
        with torch.inference_mode(), moe_path(m, "grouped" if variant == "grouped" else "fast"):
            cache = m.new_cache(ids.shape[0], ids.shape[1] + 8)
            m(m.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
            rows, rid = static_rows(m, cache, 8) if variant == "graph" else (None, None)
            n_real, fr, outs = mask.sum(-1), frames, []
            for s in range(8):
                if s == 3:
                    if rows is not None:  # rows leave the static batch as finished items do
                        rows.remove([r for i, r in enumerate(rid) if i not in keep.tolist()])
                        rid = [rid[i] for i in keep.tolist()]
                    else:
                        cache.keep(keep)
                    n_real, fr, outs = n_real[keep], fr[keep], [o[keep] for o in outs]
                e = m.embed_codec(fr[:, s:s + 1])
                lg = rows.step(rid, e, n_real)[:, None] if rows else m(e, n_real[:, None], cache=cache,
                                                                        logits="last").logits
                outs.append(lg[:, 0])
                n_real = n_real + 1
            res[f"decode_{variant}_captures"] = rows.dec.captures if rows else 0
            return torch.stack(outs, 1).cpu()

    ref = run("grouped")
    for variant in ("fast", "graph"):
        d = float((run(variant) - ref).abs().max())
        res[f"decode_{variant}_vs_grouped_max_abs"] = d
        log(f"  decode fp32 {variant:5} vs grouped: max|dlogit| {d:.2e} (8 steps, keep() after 3)"
            + (f", {res['decode_graph_captures']} graph captures" if variant == "graph" else ""))
    del m
    return res


# --- model building -------------------------------------------------------------------------------------

def build_on_device(size: str, device: torch.device, dtype: torch.dtype, seed: int = 0,
                    vision: bool = True, lm_head: bool = True) -> UniMoEAudioModel:
    """The architecture of ``config_dict(size)`` with random weights made directly on ``device``
    (meta construction, then in-place normal_: no CPU copy). std 0.02, router gates 0.08, norms 1."""
    cfg = ModelConfig.from_dict(config_dict(size), source=size)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = UniMoEAudioModel(cfg, vision=vision, lm_head=lm_head)
    finally:
        torch.set_default_dtype(prev)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(NORM_SUFFIXES):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.08 if name.endswith("mlp.gate.weight") else 0.02, generator=gen)
    return model.eval()


def decode_weight_bytes(model: UniMoEAudioModel) -> tuple[int, int]:
    """(bytes of the weights a decode step reads apart from routed experts, bytes of one routed expert
    in one layer)."""
    lm = model.language_model
    el = model.dtype.itemsize if hasattr(model.dtype, "itemsize") else 2
    body = sum(p.numel() for n, p in lm.named_parameters()
               if "deepspeed_experts" not in n and not n.startswith("embed_tokens"))
    body += model.codec_head.weight.numel()
    one = sum(p.numel() for p in lm.layers[0].mlp.experts[0].parameters())
    return body * el, one * el


# --- 3. speed -------------------------------------------------------------------------------------------

def make_prompt(rows: int, length: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 479, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    mask[0::2, : max(1, length // 15)] = 0  # uncond rows a little shorter: left padding, as in CFG batches
    return ids.to(device), mask.to(device)


def time_prefill(model, rows: int, length: int, device, repeats: int = 3) -> float:
    ids, mask = make_prompt(rows, length, device, seed=1)
    with torch.inference_mode():
        emb, pos = model.embed(ids), positions_from_mask(mask)
        model(emb, pos, attention_mask=mask, logits="last")  # warm-up
        times = []
        for _ in range(repeats):
            with Timer(device) as t:
                model(emb, pos, attention_mask=mask, logits="last")
            times.append(t.s)
    return statistics.median(times)


@contextlib.contextmanager
def cudnn_sdpa(mode: str):
    """Set layers.AVOID_CUDNN_SDPA ("decode", "always", "never") for a block."""
    prev = layers_mod.AVOID_CUDNN_SDPA
    layers_mod.AVOID_CUDNN_SDPA = mode
    try:
        yield
    finally:
        layers_mod.AVOID_CUDNN_SDPA = prev


_COMPILED: dict = {}


@contextlib.contextmanager
def compiled_pieces():
    """Experiment, not the library's behaviour: torch.compile the small-kernel pieces that every layer
    repeats (routing, RMSNorm, rotary) so inductor fuses them; bf16 rounding of intermediates
    emulated. Restores the eager functions after."""
    import torch._dynamo
    import torch._inductor.config as ic

    if hasattr(ic, "emulate_precision_casts"):
        ic.emulate_precision_casts = True
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    if not _COMPILED:
        _COMPILED["route"] = torch.compile(moe_mod.route, dynamic=False)
        _COMPILED["rotary"] = torch.compile(layers_mod.apply_rotary, dynamic=False)
        _COMPILED["norm"] = torch.compile(layers_mod.RMSNorm.forward, dynamic=False)
    saved = (moe_mod.route, layers_mod.apply_rotary, layers_mod.RMSNorm.forward)
    moe_mod.route, layers_mod.apply_rotary = _COMPILED["route"], _COMPILED["rotary"]
    layers_mod.RMSNorm.forward = _COMPILED["norm"]
    try:
        yield
    finally:
        moe_mod.route, layers_mod.apply_rotary, layers_mod.RMSNorm.forward = saved


def variant_context(variant: str):
    """"grouped" | "fast" | "graph", with "+cudnn" (torch's own SDPA choice: the behaviour before
    this work) or "+compile" (compiled_pieces)."""
    base, *mods = variant.split("+")
    stack = contextlib.ExitStack()
    if "cudnn" in mods:
        stack.enter_context(cudnn_sdpa("never"))
    if "compile" in mods:
        stack.enter_context(compiled_pieces())
    return base, stack


def time_decode(model, rows: int, prompt: int, variant: str, steps: int, warmup: int, device) -> dict:
    """Steps/s of the generation loop's step: embed previous frame, forward, greedy frame."""
    ids, mask = make_prompt(rows, prompt, device)
    out: dict = {}
    base, ctx = variant_context(variant)
    with ctx, torch.inference_mode(), moe_path(model, "grouped" if base == "grouped" else "fast"):
        cache = model.new_cache(rows, prompt + warmup + steps + 2)
        model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
        n_real = mask.sum(-1)
        frame = torch.full((rows, 1, 12), BOS, device=device)
        runner, rid = (static_rows(model, cache, warmup + steps + 1, use_graph=device.type == "cuda")
                       if base == "graph" else (None, None))
        sync(device)
        first = None
        for s in range(warmup + steps):
            if s == 0 or s == warmup:
                tm = Timer(device).__enter__()
            emb = model.embed_codec(frame)
            if runner is not None:
                lg = runner.step(rid, emb, n_real)[:, None]
            else:
                lg = model(emb, n_real[:, None], cache=cache, logits="last").logits
            if first is None:
                first = lg[:, 0].float().clone()
            frame = lg[:, :, :, :1024].argmax(-1)
            n_real = n_real + 1
            if s == 0:
                tm.__exit__(None, None, None)
                out["first_step_ms"] = tm.s * 1e3
        tm.__exit__(None, None, None)
    out.update(steps=steps, step_ms=tm.s / steps * 1e3, steps_per_s=steps / tm.s)
    out["first_logits"] = first
    return out


def sync_check(model, rows: int, device) -> dict:
    """One eager decode step per MoE path under set_sync_debug_mode("error")."""
    res = {}
    if device.type != "cuda":
        return res
    ids, mask = make_prompt(rows, 32, device)
    for path in ("grouped", "fast"):
        with torch.inference_mode(), moe_path(model, path):
            cache = model.new_cache(rows, 40)
            model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
            n_real = mask.sum(-1)
            frame = torch.full((rows, 1, 12), BOS, device=device)
            emb = model.embed_codec(frame)
            model(emb, n_real[:, None], cache=cache, logits="last")  # warm (stacking, kernels)
            sync(device)
            torch.cuda.set_sync_debug_mode("error")
            try:
                model(emb, n_real[:, None] + 1, cache=cache, logits="last")
                res[path] = "no host sync"
            except RuntimeError as exc:
                res[path] = "syncs: " + str(exc).splitlines()[0][:80]
                if path == "fast":
                    log("".join(traceback.format_exc().splitlines(True)[-8:]))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        log(f"  sync check ({path:7}): {res[path]}")
    return res


def speed(size: str, device, dtype, args, results: dict) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    model = build_on_device(size, device, dtype, vision=size == "full", lm_head=size == "full")
    sync(device)
    n_params = sum(p.numel() for p in model.parameters())
    info = dict(size=size, dtype=str(dtype).replace("torch.", ""), params=n_params,
                param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
                build_s=time.perf_counter() - t0)
    body_bytes, expert_bytes = decode_weight_bytes(model)
    info.update(decode_body_bytes=body_bytes, routed_expert_bytes=expert_bytes,
                routed_experts_per_layer=model.config.text.num_routed_experts,
                layers=model.config.text.num_hidden_layers)
    if device.type == "cuda":
        info["memory_after_build_gib"] = torch.cuda.memory_allocated(device) / 2**30
    log(f"[{size}] built {n_params / 1e9:.3f} B params ({info['param_bytes'] / 1e9:.2f} GB) in {info['build_s']:.1f} s")
    results["models"][size] = info
    info["sync_check"] = sync_check(model, 2, device)
    if device.type == "cuda" and args.profile:
        try:
            info["profile_prefill"] = profile_prefill(model, 2, args.prompt, device)
        except Exception as exc:
            traceback.print_exc()
            results["errors"].append(f"{size} prefill profile: {exc!r}")
        for rows in (2, 8):
            try:
                info[f"profile_rows{rows}"] = profile_step(model, rows, device, args.prompt)
            except Exception as exc:
                traceback.print_exc()
                results["errors"].append(f"{size} profile: {exc!r}")
    prompt = args.prompt
    for batch in args.batches:
        rows = 2 * batch
        # torch's SDPA choice (cuDNN on an H100) or cuDNN avoided; grouped MoE (auto) or the dense fast one
        for sdpa, path in (("never", "grouped"), ("always", "grouped"), ("always", "fast")):
            with cudnn_sdpa(sdpa), moe_path(model, path):
                p = time_prefill(model, rows, prompt, device)
            sd = "torch default" if sdpa == "never" else "no cuDNN"
            results["prefill"].append(dict(size=size, batch=batch, rows=rows, prompt=prompt, tokens=rows * prompt,
                                           sdpa=sd, moe=path, ms=p * 1e3, tokens_per_s=rows * prompt / p))
            log(f"[{size}] prefill {rows} rows x {prompt} tokens ({sd} SDPA, {path} MoE): {p * 1e3:.1f} ms")
        firsts = {}
        for variant in args.variants:
            if "+" in variant and size != "full" and not args.smoke:
                continue  # the modifier variants only for the full model (device time)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            steps = args.grouped_steps if variant.startswith("grouped") else args.steps
            try:
                r = time_decode(model, rows, prompt, variant, steps, args.warmup, device)
            except Exception as exc:  # keep going: report what failed
                traceback.print_exc()
                results["errors"].append(f"{size} b{batch} {variant}: {exc!r}")
                continue
            firsts[variant] = r.pop("first_logits")
            row = dict(size=size, batch=batch, rows=rows, dtype=info["dtype"], variant=variant, prompt=prompt, **r)
            row["x_realtime_per_item"] = row["steps_per_s"] / FRAME_RATE
            row["x_realtime_batch"] = row["steps_per_s"] * batch / FRAME_RATE
            if not variant.startswith("grouped"):
                # the fast path reads every routed expert's weights once per step
                nbytes = body_bytes + expert_bytes * info["routed_experts_per_layer"] * info["layers"]
                row["weight_gb_per_step"] = nbytes / 1e9
                row["weight_read_tb_per_s"] = nbytes / (row["step_ms"] / 1e3) / 1e12
            if device.type == "cuda":
                row["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if "grouped" in firsts and variant != "grouped" and not variant.startswith("grouped"):
                row["first_step_max_abs_logit_diff_vs_grouped"] = float((firsts[variant] - firsts["grouped"]).abs().max())
            results["decode"].append(row)
            log(f"[{size}] decode b{batch} {variant:13}: {row['step_ms']:7.2f} ms/step  {row['steps_per_s']:7.1f} steps/s"
                f"  first step {row['first_step_ms']:.0f} ms  x{row['x_realtime_per_item']:.2f} RT/item"
                + (f"  |dlogit| vs grouped {row['first_step_max_abs_logit_diff_vs_grouped']:.2e}"
                   if "first_step_max_abs_logit_diff_vs_grouped" in row else ""))
    if device.type == "cuda":
        info["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del model


def profile_step(model, rows: int, device, prompt: int) -> dict:
    """Kernels of one eager fast decode step (torch.profiler): how many, their summed GPU time and the
    top ones. The summed time is what a CUDA graph replay of the step can at best approach."""
    from torch.profiler import ProfilerActivity, profile

    ids, mask = make_prompt(rows, prompt, device)
    with torch.inference_mode(), moe_path(model, "fast"):
        cache = model.new_cache(rows, prompt + 8)
        model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
        n_real = mask.sum(-1)
        emb = model.embed_codec(torch.full((rows, 1, 12), BOS, device=device))
        for _ in range(2):
            model(emb, n_real[:, None], cache=cache, logits="last")
            n_real = n_real + 1
        sync(device)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(emb, n_real[:, None], cache=cache, logits="last")
            sync(device)
    kern = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    tot: dict[str, list] = {}
    for e in kern:
        t = tot.setdefault(e.name[:90], [0, 0.0])
        t[0] += 1
        t[1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    busy = sum(v[1] for v in tot.values())
    top = sorted(tot.items(), key=lambda kv: -kv[1][1])[:14]
    res = dict(rows=rows, kernels=len(kern), kernel_us=busy,
               top=[dict(name=k, count=v[0], us=v[1]) for k, v in top])
    log(f"  profile (eager fast step, {rows} rows): {len(kern)} kernels, {busy / 1e3:.2f} ms summed GPU time")
    for k, v in top:
        log(f"    {v[1] / 1e3:7.3f} ms {v[0]:5d}x  {k}")
    return res


def profile_prefill(model, rows: int, length: int, device) -> dict:
    """Kernels of one prefill forward (torch's SDPA choice, grouped MoE) against its wall time."""
    from torch.profiler import ProfilerActivity, profile

    ids, mask = make_prompt(rows, length, device, seed=1)
    with torch.inference_mode():
        emb, pos = model.embed(ids), positions_from_mask(mask)
        model(emb, pos, attention_mask=mask, logits="last")
        sync(device)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(emb, pos, attention_mask=mask, logits="last")
            sync(device)
        wall = time.perf_counter() - t0
    kern = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    tot: dict[str, list] = {}
    for e in kern:
        t = tot.setdefault(e.name[:90], [0, 0.0])
        t[0] += 1
        t[1] += e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total
    busy = sum(v[1] for v in tot.values())
    top = sorted(tot.items(), key=lambda kv: -kv[1][1])[:8]
    cpu_top = sorted(((e.key, e.cpu_time_total, e.count) for e in prof.key_averages()), key=lambda t: -t[1])[:8]
    log(f"  profile prefill {rows}x{length}: {len(kern)} kernels, {busy / 1e3:.2f} ms GPU, {wall * 1e3:.1f} ms wall (profiled)")
    for k, v in top:
        log(f"    {v[1] / 1e3:7.3f} ms {v[0]:5d}x  {k}")
    for k, us, n in cpu_top:
        log(f"    cpu {us / 1e3:8.2f} ms {n:5d}x  {k[:80]}")
    return dict(rows=rows, length=length, kernels=len(kern), kernel_us=busy, wall_ms=wall * 1e3,
                top=[dict(name=k, count=v[0], us=v[1]) for k, v in top],
                cpu_top=[dict(name=k, us=us, count=n) for k, us, n in cpu_top])


def bandwidth(device) -> float | None:
    """Device-to-device copy rate (bytes read + written), the ceiling for decode steps."""
    if device.type != "cuda":
        return None
    a = torch.empty(2 * 2**30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    with Timer(device) as t:
        for _ in range(10):
            b.copy_(a)
    del a, b
    torch.cuda.empty_cache()
    return 2 * 2 * 2**30 * 10 / t.s / 1e12


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--grouped-steps", type=int, default=24)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=600)
    ap.add_argument("--sizes", default="small,full")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--variants", default="grouped+cudnn,grouped,fast,graph,graph+compile")
    ap.add_argument("--smoke", action="store_true", help="CPU smoke test of this script (tiny config)")
    ap.add_argument("--skip-parity", action="store_true")
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                    help="profile one eager fast step's kernels per config")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    args.variants = args.variants.split(",")
    if args.smoke:
        device, dtype = torch.device("cpu"), torch.float32
        sizes = ["tiny"]
        args.steps, args.grouped_steps, args.warmup, args.prompt = 4, 4, 1, 24
    else:
        if not torch.cuda.is_available():
            log("no CUDA device: nothing to measure (use --smoke to test the script on CPU)")
            return 0
        device, dtype = torch.device("cuda"), torch.bfloat16
        sizes = args.sizes.split(",")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu-smoke"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    out_path = Path(args.out) if args.out else ROOT / "bench" / "results" / f"gpu-{slug}.json"
    meta = dict(device=name, torch=torch.__version__, cuda=torch.version.cuda, python=platform.python_version(),
                prompt=args.prompt, steps=args.steps, grouped_steps=args.grouped_steps, warmup=args.warmup,
                init="random, std 0.02, router gates 0.08, norms 1, made on the device",
                frame_rate=FRAME_RATE)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(sm_count=props.multi_processor_count, memory_gib=props.total_memory / 2**30)
        meta["copy_tb_per_s"] = bandwidth(device)
        log(f"device {name}: {meta['memory_gib']:.1f} GiB, copy {meta['copy_tb_per_s']:.2f} TB/s (read+write)")
    results: dict = dict(meta=meta, parity=None, models={}, prefill=[], decode=[], errors=[])
    t_all = time.perf_counter()
    if not args.skip_parity:
        log("parity (fp32):")
        try:
            results["parity"] = parity(device)
        except Exception as exc:
            traceback.print_exc()
            results["errors"].append(f"parity: {exc!r}")
    for size in sizes:
        try:
            speed(size, device, dtype, args, results)
        except Exception as exc:
            traceback.print_exc()
            results["errors"].append(f"{size}: {exc!r}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=1))  # partial results survive a later failure
    meta["total_s"] = time.perf_counter() - t_all

    # table
    log("")
    log(f"{name}, {dtype}, prompt {args.prompt} tokens, CFG pairs (rows = 2 x batch)")
    hdr = f"{'config':6} {'batch':>5} {'variant':13} {'ms/step':>8} {'steps/s':>8} {'xRT/item':>8} {'xRT/batch':>9} {'1st ms':>7} {'GB/step':>7} {'TB/s':>5} {'peak GiB':>8}"
    log(hdr)
    log("-" * len(hdr))
    for r in results["decode"]:
        log(f"{r['size']:6} {r['batch']:5d} {r['variant']:13} {r['step_ms']:8.2f} {r['steps_per_s']:8.1f} "
            f"{r['x_realtime_per_item']:8.2f} {r['x_realtime_batch']:9.2f} {r['first_step_ms']:7.0f} "
            f"{r.get('weight_gb_per_step', float('nan')):7.2f} {r.get('weight_read_tb_per_s', float('nan')):5.2f} "
            f"{r.get('peak_mem_gib', float('nan')):8.2f}")
    by = {}
    for r in results["decode"]:
        by.setdefault((r["size"], r["batch"]), {})[r["variant"]] = r["steps_per_s"]
    for (size, batch), v in by.items():
        base = "grouped+cudnn" if "grouped+cudnn" in v else "grouped"
        if base in v:
            log(f"speed-up {size} b{batch} over {base}: "
                + ", ".join(f"{k} {v[k] / v[base]:.1f}x" for k in v if k != base))
    log("")
    for p in results["prefill"]:
        log(f"prefill {p['size']:6} {p['rows']} rows x {p['prompt']} ({p['sdpa']:13} SDPA, {p['moe']:7} MoE): {p['ms']:8.1f} ms "
            f"({p['tokens_per_s']:.0f} tokens/s)")
    for size, info in results["models"].items():
        log(f"model {size}: {info['params'] / 1e9:.3f} B params, {info['param_bytes'] / 1e9:.2f} GB, "
            f"peak {info.get('peak_mem_gib', float('nan')):.2f} GiB, syncs {info.get('sync_check')}")
    if results["errors"]:
        log("ERRORS: " + "; ".join(results["errors"]))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=1))
    log(f"wrote {out_path} ({meta['total_s']:.0f} s)")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
