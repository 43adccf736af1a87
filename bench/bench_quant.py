"""Memory and quantization: CPU decode speed of fp32 / bf16 / int8 / int4 side by side, quality of the
quantized weights against bf16, peak memory per quantization, full-size memory computed from the tensors.

    python bench/bench_quant.py                 # small config, 2 threads; JSON in bench/results/quant-cpu.json
    python bench/bench_quant.py --quick         # fewer steps and rounds, no memory subprocesses

Random weights (std 0.02, router gates std 0.08, seed 0: the same init as bench_model.py), so the
quality figures say how far the quantized model drifts from bf16, not how it sounds. Speed: one CFG
pair (2 rows) after a 48-token prompt; the variants run interleaved, round after round, so a busy
machine slows them alike; steps/s is the median step. The floor is the bytes a step must read (the
dense weights plus the experts the router chose in that run, at each variant's storage size) divided
by the memory read bandwidth measured in the same run (sum over a 1 GiB tensor).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from bench_model import PROMPT_LEN, _prompt, time_decode  # noqa: E402
from unimoe_audio.model import memory as M  # noqa: E402
from unimoe_audio.model import quant as Q  # noqa: E402
from unimoe_audio.model.convert import convert_folder  # noqa: E402
from unimoe_audio.model import layers as layers_mod  # noqa: E402
from unimoe_audio.model import moe as moe_mod  # noqa: E402
from unimoe_audio.model.moe import moe_path  # noqa: E402
from unimoe_audio.model.rope_index import positions_from_mask  # noqa: E402
from unimoe_audio.model.tiny import random_model  # noqa: E402


def bandwidth_gbs(threads: int, repeats: int = 5) -> float:
    x = torch.ones(1 << 28)  # 1 GiB fp32
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    del x
    return (1 << 30) / statistics.median(times) / 1e9


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def module_bytes(mod: torch.nn.Module) -> int:
    """Bytes a forward of this module reads: parameters and buffers (int4: the kernel's packed copy)."""
    n = sum(_bytes(p) for p in mod.parameters()) + sum(_bytes(b) for b in mod.buffers())
    for m in mod.modules():
        if isinstance(m, Q.QuantLinear) and m._released and m._run is not None:
            n += _bytes(m._run[1])
    return n


def step_bytes(model, distinct_per_layer: float) -> int:
    """Weights one decode step reads: everything but the routed experts, plus the chosen ones."""
    lm = model.language_model
    total = module_bytes(model.codec_head) + module_bytes(lm.norm)
    for layer in lm.layers:
        moe = layer.mlp
        total += module_bytes(layer.self_attn) + module_bytes(layer.input_layernorm)
        total += module_bytes(layer.post_attention_layernorm) + module_bytes(moe.gate)
        total += module_bytes(moe.fixed_real_moe)
        per_expert = module_bytes(moe.experts) / max(len(moe.experts), 1)
        total += per_expert * distinct_per_layer
    return int(total)


def distinct_experts(model, rows: int = 2, steps: int = 20) -> float:
    """Mean number of distinct routed experts per layer per decode step (one CFG pair)."""
    cfg = model.config
    ids, mask = _prompt(cfg, rows)
    counts = []
    with torch.inference_mode():
        cache = model.new_cache(rows, PROMPT_LEN + steps + 1)
        model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
        n_real = mask.sum(-1)
        frame = torch.full((rows, 1, 12), cfg.codec_bos_value)
        nr = cfg.text.num_routed_experts
        for _ in range(steps):
            out = model(model.embed_codec(frame), n_real[:, None], cache=cache, logits="last", output_routing=True)
            for rt in out.routing:
                counts.append(int(rt.expert_mask[:, :nr].any(0).sum()))
            frame = out.logits[:, :, :, :1024].argmax(-1)
            n_real = n_real + 1
    return sum(counts) / len(counts)


def greedy_codes(model, rows: int, steps: int):
    """Prefill logits (last position), per-layer routing of the prompt, and ``steps`` greedy frames."""
    cfg = model.config
    ids, mask = _prompt(cfg, rows)
    codes = []
    with torch.inference_mode():
        cache = model.new_cache(rows, PROMPT_LEN + steps + 1)
        out = model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last",
                    output_routing=True)
        pre_logits = out.logits[:, 0].float().clone()
        routing = [r.expert_mask.clone() for r in out.routing]
        n_real = mask.sum(-1)
        frame = torch.full((rows, 1, 12), cfg.codec_bos_value)
        for _ in range(steps):
            out = model(model.embed_codec(frame), n_real[:, None], cache=cache, logits="last")
            frame = out.logits[:, :, :, :1024].argmax(-1)
            codes.append(frame[:, 0].clone())
            n_real = n_real + 1
    return pre_logits, routing, torch.stack(codes, 1)  # codes [rows, steps, 12]


def quality(variants: dict, ref_name: str, steps: int) -> list[dict]:
    ref_l, ref_r, ref_c = greedy_codes(variants[ref_name], 2, steps)
    out = []
    for name, m in variants.items():
        if name == ref_name:
            continue
        lg, rt, codes = greedy_codes(m, 2, steps)
        agree_route = sum(int((a == b).all(-1).sum()) for a, b in zip(rt, ref_r)) / sum(a.shape[0] for a in rt)
        same = (codes == ref_c)
        diverged = (~same.all(-1)).any(0).nonzero()
        out.append(dict(variant=name, reference=ref_name, max_abs_logit_dev=float((lg - ref_l).abs().max()),
                        ref_logit_absmax=float(ref_l.abs().max()), routing_agreement=agree_route,
                        greedy_code_agreement=float(same.float().mean()), greedy_steps=steps,
                        first_divergent_step=int(diverged[0]) if len(diverged) else None))
    return out


_CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
def vm(key):  # this process's own figures (ru_maxrss would carry the parent's peak across fork+exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
from unimoe_audio.model.checkpoint import load_model
from unimoe_audio.model import quant as Q
folder, dtype, quant = sys.argv[1], getattr(torch, sys.argv[2]), sys.argv[3]
rss0 = vm("VmRSS")
t0 = time.perf_counter()
m = load_model(folder, dtype=dtype, load_vision=False, quant=quant)
load_s = time.perf_counter() - t0
ids = torch.randint(0, 479, (2, 48)); mask = torch.ones_like(ids)
from unimoe_audio.model.rope_index import positions_from_mask
with torch.inference_mode():
    cache = m.new_cache(2, 70)
    m(m.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
    n = mask.sum(-1); f = torch.full((2, 1, 12), 1026)
    for _ in range(20):
        out = m(m.embed_codec(f), n[:, None], cache=cache, logits="last"); f = out.logits[:, :, :, :1024].argmax(-1); n = n + 1
peak = vm("VmHWM")
print(json.dumps(dict(peak_rss_bytes=peak, baseline_rss_bytes=rss0, load_s=load_s, quant=Q.quant_of(m))))
"""


def memory_peaks(tmp: Path) -> list[dict]:
    """Peak RSS of a fresh process that loads the small model and decodes 20 steps, per way of loading."""
    from unimoe_audio.model.tiny import make_tiny_checkpoint

    src = make_tiny_checkpoint(tmp / "small-bf16", size="small")
    stored = {q: convert_folder(src, tmp / f"small-{q}", q) for q in ("int8", "int4")}
    cases = [("bf16 folder", src, "float32", "none"), ("bf16 folder", src, "bfloat16", "none"),
             ("bf16 folder, quantized while loading", src, "float32", "int8"),
             ("stored int8 folder", stored["int8"], "float32", "none"),
             ("bf16 folder, quantized while loading", src, "float32", "int4"),
             ("stored int4 folder", stored["int4"], "float32", "none")]
    out = []
    for label, folder, dtype, quant in cases:
        r = subprocess.run([sys.executable, "-c", _CHILD, str(folder), dtype, quant], capture_output=True, text=True,
                           check=True)
        d = json.loads(r.stdout.strip().splitlines()[-1])
        est = M.estimate(folder, dtype=getattr(torch, dtype), quant=quant, load_vision=False)
        size = sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))
        out.append(dict(source=label, dtype=dtype, quant=d["quant"], device="cpu",
                        peak_rss_mb=d["peak_rss_bytes"] / 1e6, baseline_rss_mb=d["baseline_rss_bytes"] / 1e6,
                        peak_over_baseline_mb=(d["peak_rss_bytes"] - d["baseline_rss_bytes"]) / 1e6,
                        load_s=d["load_s"], weights_on_disk_mb=size / 1e6, estimate_total_mb=est.total_bytes / 1e6,
                        estimate_weights_mb=est.weights_bytes / 1e6))
    return out


def full_size_computed() -> list[dict]:
    """Full-size memory from the tensors' shapes (meta model), per device, dtype and quantization."""
    from unimoe_audio.model.checkpoint import to_disk_key
    from unimoe_audio.model.config import ModelConfig, config_dict
    from unimoe_audio.model.decoder import UniMoEAudioModel

    cfg = config_dict("full")
    with torch.device("meta"):
        m = UniMoEAudioModel(ModelConfig.from_dict(cfg, source="full"), vision=True)
    specs = [(to_disk_key(n), "BF16", list(p.shape)) for n, p in m.named_parameters()]
    rows = []
    for device, dtype in (("cuda", torch.bfloat16), ("cpu", torch.bfloat16), ("cpu", torch.float32)):
        for vision in (True, False):
            for q in ("none", "int8", "int4"):
                e = M.estimate_specs(specs, cfg, stored="none", dtype=dtype, quant=q, device=device, load_vision=vision,
                                     dac_bytes=300_000_000)
                rows.append(dict(device=device, dtype=str(dtype).replace("torch.", ""), quant=q, vision=vision,
                                 weights_gb=e.weights_bytes / 1e9, peak_gb=e.total_bytes / 1e9,
                                 transient_gb=e.transient_bytes / 1e9, runtime_gb=e.runtime_bytes / 1e9,
                                 parts_gb={k: v / 1e9 for k, v in e.parts.items()},
                                 max_rows=e.decode.max_rows, warm_buckets=len(e.decode.warm)))
    return rows


CARDS_GB = (8, 10, 12, 16, 24, 48, 80)
CARD_RESERVED_GB = 0.5  # what the driver's context takes before the daemon loads (not measured here)


def card_advice() -> list[dict]:
    """Per card size (CUDA bf16, with the vision tower): the first of bf16, int8, int4 whose estimate
    fits the card's memory less the driver's context, with its row cap and warm-up buckets."""
    from unimoe_audio.model.checkpoint import to_disk_key
    from unimoe_audio.model.config import ModelConfig, config_dict
    from unimoe_audio.model.decoder import UniMoEAudioModel

    cfg = config_dict("full")
    with torch.device("meta"):
        m = UniMoEAudioModel(ModelConfig.from_dict(cfg, source="full"), vision=True)
    specs = [(to_disk_key(n), "BF16", list(p.shape)) for n, p in m.named_parameters()]
    out = []
    for card in CARDS_GB:
        avail = int((card - CARD_RESERVED_GB) * 1e9)
        pick = None
        for q in ("none", "int8", "int4"):
            e = M.estimate_specs(specs, cfg, stored="none", dtype=torch.bfloat16, quant=q, device="cuda",
                                 load_vision=True, dac_bytes=300_000_000, avail=avail)
            if e.total_bytes <= avail:
                pick = dict(card_gb=card, quant=q, estimate_gb=e.total_bytes / 1e9, max_rows=e.decode.max_rows,
                            warm_buckets=len(e.decode.warm), buckets_gb=e.parts.get("buckets", 0) / 1e9)
                break
        out.append(pick or dict(card_gb=card, quant=None))
    return out


def print_cards(cards: list[dict]) -> None:
    print(f"Card sizes, full size, CUDA bf16 with the vision tower, ESTIMATED (not measured on a GPU); "
          f"{CARD_RESERVED_GB} GB left to the driver")
    print(f"{'card GB':>7} {'quant':5} {'estimate GB':>11} {'rows':>4} {'buckets':>7} {'buckets GB':>10}")
    for c in cards:
        if c["quant"] is None:
            print(f"{c['card_gb']:7d} does not fit")
        else:
            print(f"{c['card_gb']:7d} {c['quant']:5} {c['estimate_gb']:11.2f} {c['max_rows']:4d} {c['warm_buckets']:7d} "
                  f"{c['buckets_gb']:10.2f}")


def print_memory(peaks: list[dict], full: list[dict]) -> None:
    if peaks:
        print("Peak memory, small config, CPU (fresh process: load + 48-token prefill + 20 decode steps)")
        print(f"{'source':38} {'dtype':9} {'quant':5} {'peak MB':>8} {'over base':>9} {'estimate':>8} {'disk MB':>8} "
              f"{'load s':>6}")
        for r in peaks:
            print(f"{r['source']:38} {r['dtype']:9} {r['quant']:5} {r['peak_rss_mb']:8.0f} "
                  f"{r['peak_over_baseline_mb']:9.0f} {r['estimate_total_mb']:8.0f} {r['weights_on_disk_mb']:8.0f} "
                  f"{r['load_s']:6.2f}")
        print()
    print("Full size (7 B), COMPUTED from the tensors' shapes (no GPU here): GB")
    print(f"{'device':6} {'dtype':9} {'quant':5} {'vision':6} {'weights':>8} {'peak':>6} {'rows':>4} {'buckets':>7}")
    for r in full:
        print(f"{r['device']:6} {r['dtype']:9} {r['quant']:5} {str(r['vision']):6} {r['weights_gb']:8.2f} "
              f"{r['peak_gb']:6.2f} {r['max_rows']:4d} {r['warm_buckets']:7d}")


def only_memory(out: Path, small: bool = True) -> int:
    data = json.loads(out.read_text()) if out.is_file() else {"meta": {}}
    if small:
        with tempfile.TemporaryDirectory() as tmp:
            data["memory_small_cpu"] = memory_peaks(Path(tmp))
    data["full_size_computed"] = full_size_computed()
    data["card_advice"] = card_advice()
    print_memory(data.get("memory_small_cpu") or [], data["full_size_computed"])
    print()
    print_cards(data["card_advice"])
    out.write_text(json.dumps(data, indent=1))
    print(f"updated {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed decode steps per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quality-steps", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory parts (keep them from --out)")
    ap.add_argument("--only-memory", action="store_true",
                    help="rerun only the memory parts and update them in an existing --out JSON")
    ap.add_argument("--full-size-only", action="store_true",
                    help="only the computed full-size estimates and card advice (seconds), into --out")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quant-cpu.json"))
    a = ap.parse_args(argv)
    if a.quick:
        a.steps, a.rounds, a.quality_steps = 10, 1, 30
    torch.set_num_threads(a.threads)
    if a.only_memory or a.full_size_only:
        return only_memory(Path(a.out), small=not a.full_size_only)

    base = random_model("small", seed=0, gate_std=0.08, norm_jitter=0.0, vision=False, lm_head=False)
    variants = {"float32": base, "bfloat16": copy.deepcopy(base).to(torch.bfloat16)}
    for q in ("int8", "int4"):
        variants[q] = Q.quantize_model(copy.deepcopy(base), q)  # fp32 activations (the CPU default here)
        Q.prepare_kernels(variants[q], torch.float32)
    kernels = {q: sorted({m.kernel for m in variants[q].modules() if isinstance(m, Q.QuantLinear)}) for q in ("int8", "int4")}

    distinct = distinct_experts(base)
    # the same fp32 weights through the chosen-experts grouped matmul (the sync-free path's kernel)
    # and the same weights with the fusions off (one Linear per projection, as before this bench)
    timed = dict(variants, **{"fp32 chosen": base, "fp32 unfused": base})
    times: dict[str, list[float]] = {k: [] for k in timed}
    bws = []
    for _ in range(a.rounds):
        bws.append(bandwidth_gbs(a.threads))
        for name, m in timed.items():
            moe_mod.FUSED = layers_mod.FUSE_QKV = name != "fp32 unfused"
            with moe_path(m, "chosen" if name == "fp32 chosen" else "auto"):
                t, _ = time_decode(m, 2, a.steps)
            moe_mod.FUSED = layers_mod.FUSE_QKV = True
            times[name] += t
    bw = statistics.median(bws)
    speed = []
    hdr = f"{'weights':11} {'ms/step':>8} {'steps/s':>8} {'MB/step':>8} {'floor ms':>8} {'% floor':>8} {'vs fp32':>8}"
    print(f"CPU decode, small config, 1 CFG pair, {a.threads} threads, read bandwidth {bw:.1f} GB/s, "
          f"{distinct:.2f} distinct experts/layer/step")
    print(hdr)
    print("-" * len(hdr))
    fp32_ms = statistics.median(times["float32"]) * 1e3
    for name, m in timed.items():
        ms = statistics.median(times[name]) * 1e3
        nbytes = step_bytes(m, distinct)
        floor = nbytes / (bw * 1e9) * 1e3
        r = dict(weights=name, ms_per_step=ms, steps_per_s=1e3 / ms, bytes_per_step=nbytes, floor_ms=floor,
                 percent_of_floor=100 * floor / ms, x_floor=ms / floor, speedup_vs_fp32=fp32_ms / ms)
        speed.append(r)
        print(f"{name:11} {ms:8.2f} {1e3 / ms:8.1f} {nbytes / 1e6:8.1f} {floor:8.2f} {r['percent_of_floor']:7.1f}% "
              f"{r['speedup_vs_fp32']:7.2f}x")

    print()
    qual = quality(variants, "bfloat16", a.quality_steps)
    print(f"Quality vs bf16 (prompt logits, prompt routing, {a.quality_steps} greedy steps of one CFG pair)")
    print(f"{'weights':9} {'max|dlogit|':>11} {'|logit|max':>10} {'routing':>8} {'codes':>7} {'1st diff':>8}")
    for r in qual:
        print(f"{r['variant']:9} {r['max_abs_logit_dev']:11.4f} {r['ref_logit_absmax']:10.3f} "
              f"{100 * r['routing_agreement']:7.1f}% {100 * r['greedy_code_agreement']:6.1f}% "
              f"{str(r['first_divergent_step']):>8}")

    peaks: list[dict] = []
    print()
    if a.no_memory and Path(a.out).is_file():
        peaks = json.loads(Path(a.out).read_text()).get("memory_small_cpu", [])
    elif not a.quick:
        with tempfile.TemporaryDirectory() as tmp:
            peaks = memory_peaks(Path(tmp))
    full = full_size_computed()
    print_memory(peaks, full)

    meta = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                cpu_capability=torch.backends.cpu.get_cpu_capability(), threads=a.threads, steps=a.steps,
                rounds=a.rounds, bandwidth_gbs=bw, distinct_experts_per_layer=distinct, kernels=kernels,
                init="random: std 0.02, router gates std 0.08, norms 1 (seed 0)",
                note="speed and quality from random weights; full-size memory computed from tensor shapes, not measured")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(meta=meta, speed=speed, quality=qual, memory_small_cpu=peaks, full_size_computed=full),
                              indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
