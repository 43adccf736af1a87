"""Decode-step benchmark of the model core on CPU.

    python bench/bench_model.py [--steps 40] [--threads 2] [--quick]

Prints a table and writes bench/results/model-cpu.json: per config (tiny, small), CFG batch (1 and 4
items = 2 and 8 rows), dtype (float32, bfloat16) and MoE dispatch ("ours" vs "reference-style"),
the median decode-step latency and steps/s after a 48-token prefill. Weights are random as
../shared/golden/bench/README.md prescribes: std 0.02, router gates std 0.08, norms 1.

"reference-style" swaps only the MoE block for an implementation of the reference's dispatch as the
spec describes it (sections 4.1, 4.3, D9): a Python loop over k groups with a k-round mixer per group,
the aux-loss computation, compress to a [capacity, experts, H] buffer (capacity = max expert load),
every routed expert run on capacity rows, decompress and a combine einsum. Everything else (attention,
KV cache, embeddings, head) is the same code, so the ratio isolates the MoE dispatch.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from unimoe_audio.model.config import ModelConfig  # noqa: E402
from unimoe_audio.model.moe import SparseMoE  # noqa: E402
from unimoe_audio.model.rope_index import positions_from_mask  # noqa: E402
from unimoe_audio.model.tiny import random_model  # noqa: E402

PROMPT_LEN = 48


# --- reference-style MoE dispatch (benchmark baseline only) --------------------------------------------

def _reference_style_forward(self: SparseMoE, x: torch.Tensor, token_mask=None, return_routing=False):
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    T = x.shape[0]
    nd, nr = self.num_dynamic, self.num_routed
    z = self.gate(x)
    slots = z.shape[1]
    zd = z[:, :nd]
    p_sorted, _ = torch.sort(torch.softmax(zd, -1), -1, descending=True)
    top_k = (~(p_sorted.cumsum(-1) >= self.top_p)).sum(-1) + 1
    mask = torch.zeros((T, slots), dtype=torch.int32)
    rw = torch.zeros((T, nd), dtype=x.dtype)
    for k in range(1, nd + 1):  # one group per k, each with a k-round mixer
        idx = torch.nonzero(top_k == k, as_tuple=True)[0]
        if len(idx) == 0:
            continue
        s = zd[idx]
        ms = s
        mults, picks = [], []
        for _ in range(k):
            mx, j = ms.max(-1, keepdim=True)
            factor = s.abs().clamp(min=mx.abs())
            out = ((mx - s) / factor) > (2 * self.jitter)
            g = torch.softmax(ms.masked_fill(out, float("-inf")), -1)
            mults.append(g.gather(-1, j))
            picks.append(j)
            ms = torch.scatter(ms, -1, j, float("-inf"))
        m, sel = torch.cat(mults, -1), torch.cat(picks, -1)
        onehot = F.one_hot(sel, num_classes=slots).sum(1)
        gw = torch.zeros((len(idx), nd), dtype=x.dtype).scatter(-1, sel, m)
        rw.index_add_(0, idx, gw)
        mask.index_add_(0, idx, onehot.to(mask.dtype))
    rw = rw / (rw.sum(-1, keepdim=True) + 1e-6)
    mask[:, nd:] = 1
    # aux balance loss: computed at every forward by the reference, then discarded
    pl = torch.softmax(z.masked_fill(mask == 0, torch.finfo(z.dtype).min)[:, :nd], -1)
    _aux = (mask[:, :nd].float().mean(0) * pl.mean(0)).sum() * nd
    G = torch.softmax(z.masked_fill(mask == 0, float("-inf")), -1)
    w = torch.cat((rw * G[:, :nd].sum(-1, keepdim=True), G[:, nd:]), -1).to(x.dtype)
    em = mask[:, :nr]
    router_w = w[:, :nr] * em
    # compress: per expert, its tokens first (argsort of the mask), padded with zeros to the max load
    capacity = int(em.sum(0).max())
    if not bool(((em == 0) | (em == 1)).all()):  # the reference validates the mask (a host sync)
        raise ValueError("bad mask")
    order = torch.argsort(em, dim=0, descending=True)[:capacity]  # [cap, nr]
    valid = torch.gather(em, 0, order).to(x.dtype)
    comp = x[order] * valid.unsqueeze(-1)  # [cap, nr, H]
    dispatched = torch.einsum("ce,cem->ecm", valid, comp)
    outs = torch.stack([self.experts[e](dispatched[e]) for e in range(nr)])  # every expert at capacity rows
    full = torch.zeros((T, nr, x.shape[1]), dtype=x.dtype)
    e_ids = torch.arange(nr).expand(capacity, nr)
    keep = valid.bool()
    full[order[keep], e_ids[keep]] = outs.transpose(0, 1)[keep]
    y = torch.zeros_like(x) + torch.einsum("se,sem->sm", router_w, full)
    for f, expert in enumerate(self.fixed_real_moe):
        y = y + expert(x) * w[:, nd + f].unsqueeze(-1)
    return y.reshape(shape)


def set_reference_style(model, on: bool) -> None:
    for layer in model.language_model.layers:
        moe = layer.mlp
        if on:
            moe.forward = types.MethodType(_reference_style_forward, moe)
        elif "forward" in moe.__dict__:
            del moe.forward


# --- timing --------------------------------------------------------------------------------------------

def _prompt(cfg: ModelConfig, rows: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 479, (rows, PROMPT_LEN), generator=g)
    mask = torch.ones_like(ids)
    mask[0::2, : PROMPT_LEN // 4] = 0  # uncond rows are shorter: left padding, as in CFG batches
    return ids.masked_fill(mask == 0, cfg.pad_token_id), mask


def time_decode(model, rows: int, steps: int, warmup: int = 3) -> tuple[list[float], torch.Tensor]:
    cfg = model.config
    ids, mask = _prompt(cfg, rows)
    times = []
    with torch.inference_mode():
        cache = model.new_cache(rows, PROMPT_LEN + steps + warmup + 1)
        model(model.embed(ids), positions_from_mask(mask), attention_mask=mask, cache=cache, logits="last")
        n_real = mask.sum(-1)
        frame = torch.full((rows, 1, 12), cfg.codec_bos_value)
        first = None
        for s in range(steps + warmup):
            t0 = time.perf_counter()
            out = model(model.embed_codec(frame), n_real[:, None], cache=cache, logits="last")
            frame = out.logits[:, :, :, :1024].argmax(-1)  # greedy codes fed back
            dt = time.perf_counter() - t0
            n_real = n_real + 1
            if first is None:
                first = out.logits[:, 0].clone()
            if s >= warmup:
                times.append(dt)
    return times, first


def time_prefill(model, rows: int, length: int, repeats: int = 3) -> float:
    """Median seconds of one prefill forward of ``rows`` x ``length`` tokens (no padding)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 479, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        emb = model.embed(ids)
        pos = positions_from_mask(mask)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(emb, pos, attention_mask=mask, logits="last")
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny config only, 10 steps")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "model-cpu.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 10 if args.quick else args.steps
    sizes = ["tiny"] if args.quick else ["tiny", "small"]
    rows_out = []
    prefill_out: list[dict] = []
    hdr = f"{'config':6} {'batch':>5} {'dtype':9} {'ours ms':>8} {'ours st/s':>9} {'ref ms':>8} {'ref st/s':>9} {'speed-up':>8} {'max|dlogit|':>11}"
    print(hdr)
    print("-" * len(hdr))
    for size in sizes:
        base = random_model(size, seed=0, gate_std=0.08, norm_jitter=0.0, vision=False, lm_head=False)
        for dtype in (torch.float32, torch.bfloat16):
            model = base.to(dtype)
            for batch in (1, 4):
                rows = 2 * batch
                set_reference_style(model, False)
                ours, l_ours = time_decode(model, rows, steps)
                set_reference_style(model, True)
                ref, l_ref = time_decode(model, rows, steps)
                set_reference_style(model, False)
                m_ours, m_ref = statistics.median(ours), statistics.median(ref)
                diff = float((l_ours - l_ref).abs().max())
                r = dict(config=size, batch=batch, rows=rows, dtype=str(dtype).replace("torch.", ""), steps=steps,
                         ours_ms=m_ours * 1e3, ours_steps_per_s=1 / m_ours, ref_ms=m_ref * 1e3,
                         ref_steps_per_s=1 / m_ref, speedup=m_ref / m_ours, first_step_max_abs_logit_diff=diff)
                rows_out.append(r)
                print(f"{size:6} {batch:5d} {r['dtype']:9} {r['ours_ms']:8.2f} {r['ours_steps_per_s']:9.1f} "
                      f"{r['ref_ms']:8.2f} {r['ref_steps_per_s']:9.1f} {r['speedup']:7.1f}x {diff:11.2e}")
            if dtype == torch.float32:
                # prefill: many tokens per forward, where padding every expert to the max load costs most
                for length in (256,):
                    set_reference_style(model, False)
                    p_ours = time_prefill(model, 2, length)
                    set_reference_style(model, True)
                    p_ref = time_prefill(model, 2, length)
                    set_reference_style(model, False)
                    pr = dict(config=size, kind="prefill", rows=2, tokens=2 * length, dtype="float32",
                              ours_ms=p_ours * 1e3, ref_ms=p_ref * 1e3, speedup=p_ref / p_ours)
                    prefill_out.append(pr)
            base = model.float()
    print()
    print(f"{'config':6} {'prefill tokens':>14} {'ours ms':>8} {'ref ms':>8} {'speed-up':>8}")
    for pr in prefill_out:
        print(f"{pr['config']:6} {pr['tokens']:14d} {pr['ours_ms']:8.1f} {pr['ref_ms']:8.1f} {pr['speedup']:7.1f}x")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(torch=torch.__version__, python=platform.python_version(), machine=platform.machine(),
                processor=platform.processor(), threads=args.threads, prompt_len=PROMPT_LEN,
                init="std 0.02, router gates std 0.08, norms 1 (seed 0)")
    out.write_text(json.dumps({"meta": meta, "results": rows_out, "prefill": prefill_out}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
