"""What batch-invariant decode costs, and where batch variance came from (issue 17, item 2).

    python bench/bench_invariance.py                    # CPU, small config, random weights
    python bench/bench_invariance.py --device cuda      # the same on a GPU (eager and static)

1. **Per layer**: item A decodes alone, then with three items joined at step 2 (eager path, the CPU
   default), batch-invariant steps off and on. Forward hooks record each layer's input and output for
   A's rows at the last step; a layer is *variant* when its inputs were equal and its output was not.
2. **Cost**: batched throughput (8 CFG items = 16 rows, and 4 items = 8 rows; steps/s of
   ``DecodeSession.step``) with invariant steps off and on: two sessions of the same items stepped
   in turns, one step each, median step time per mode, median over rounds, per dtype; the ratio is
   what counts (target: on >= 0.9 x off), and alternating steps keeps it fair on a busy machine.
3. **Row classes**: what the kernels did with each matmul shape (model/row_classes.py), and the row
   counts each call site then runs (model/invariant.py's plans).

Prints both tables; writes bench/results/invariance-<device>.json. Random weights: the codes are
noise, the numbers and timings are what count.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from unimoe_audio.model import allocator, invariant, prompts, row_classes
from unimoe_audio.model.generation import DecodeSession, GenItem, Sampling, backend_for
from unimoe_audio.model.layers import Attention, RMSNorm
from unimoe_audio.model.moe import SparseMoE
from unimoe_audio.model.tiny import random_model

ROOT = Path(__file__).resolve().parent.parent


def _item(seed: int, start: int, n: int, frames: int, stop_at: int | None = None) -> GenItem:
    """A seeded CFG item of ``frames`` frames (default sampling); ``stop_at``: cancelled after that many."""
    ids = list(range(start, start + n))
    p = prompts.Prompt(uncond=prompts.PromptRow(ids=ids), cond=prompts.PromptRow(ids=ids + [7, 8]))
    cb = None if stop_at is None else (lambda done, total: done < stop_at)
    return GenItem(prompt=p, sampling=Sampling(cfg_scale=3.0), max_frames=frames, min_frames=frames, seed=seed,
                   callback=cb)


def per_layer(lm, static: bool, invariant: bool) -> list[dict]:
    rec: dict = {"on": False, "log": []}

    def hook(name):
        def f(mod, inp, out):
            if rec["on"]:
                x = inp[0].detach().reshape(-1, inp[0].shape[-1])[:2].float().clone()
                o = (out[0] if isinstance(out, tuple) else out).detach()
                rec["log"].append((name, x, o.reshape(-1, o.shape[-1])[:2].float().clone()))
        return f

    hs = [m.register_forward_hook(hook(n)) for n, m in lm.model.named_modules()
          if isinstance(m, (SparseMoE, Attention, RMSNorm)) or n == "codec_head"]

    def run(join: bool):
        s = DecodeSession(lm, placeholder_id=501, static=static, invariant=invariant)
        with torch.inference_mode():
            s.add([_item(1, 10, 20, 12)])
            for k in range(6):
                if join and k == 2:
                    s.add([_item(2 + i, 40 + 20 * i, 13 + 7 * i, 12) for i in range(3)])
                rec["on"], rec["log"] = k == 5, []
                s.step()
            s.close()
        return rec["log"]

    try:
        solo, joined = run(False), run(True)
    finally:
        for h in hs:
            h.remove()
    rows = []
    for (name, xs, os_), (_, xj, oj) in zip(solo, joined):
        din, dout = (xs - xj).abs().max().item(), (os_ - oj).abs().max().item()
        rows.append({"layer": name, "input_diff": din, "output_diff": dout, "variant": din == 0 and dout != 0})
    return rows


def paired_throughput(lm, n_items: int, steps: int, static: bool, placeholder_id: int = 501) -> tuple[float, float]:
    """(plain, invariant) steps/s of two sessions of the same items stepped in turns, one step each,
    so whatever else the machine runs slows both alike; each mode's median step time counts."""
    sessions = {inv: DecodeSession(lm, placeholder_id=placeholder_id, static=static, invariant=inv)
                for inv in (False, True)}
    times: dict[bool, list[float]] = {False: [], True: []}
    with torch.inference_mode():
        for s in sessions.values():
            s.add([_item(i, 10 + 30 * i, 20 + i, steps + 4) for i in range(n_items)])
            s.step()  # warm
        for k in range(steps):
            for inv in ((False, True) if k % 2 == 0 else (True, False)):
                _sync(lm.device)
                t = time.perf_counter()
                sessions[inv].step()
                _sync(lm.device)
                times[inv].append(time.perf_counter() - t)
        for s in sessions.values():
            s.close()
    return 1 / statistics.median(times[False]), 1 / statistics.median(times[True])


def _sync(device) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="small")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3, help="alternating off/on measurements per case")
    ap.add_argument("--no-layers", action="store_true", help="skip the per-layer part (cost only)")
    args = ap.parse_args()
    allocator.fix_mmap_threshold()  # as load_model does in the daemon: the allocator regime the product runs in
    dev = torch.device(args.device)
    static = dev.type == "cuda"
    out = {"device": args.device, "size": args.size, "static": static, "random_weights": True,
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
           "layers": {}, "cost": [], "loadavg_start": os.getloadavg()[0]}
    for dn in args.dtypes.split(","):
        dtype = getattr(torch, dn)
        lm = backend_for(random_model(args.size, 0, dtype=dtype).to(dev))
        for inv in (() if args.no_layers else (False, True)):
            rows = per_layer(lm, static, inv)
            out["layers"][f"{dn}/{'invariant' if inv else 'plain'}"] = rows
            bad = [r["layer"] for r in rows if r["variant"]]
            print(f"{dn:9s} invariant={inv!s:5s}: {len(bad)} variant layer(s) {bad}", flush=True)
        for n in (4, 8):
            off, on = [], []
            for _ in range(args.rounds):  # steps alternate, so load on a shared machine hits both alike
                a, b = paired_throughput(lm, n, args.steps, static)
                off.append(a)
                on.append(b)
            best_off, best_on = statistics.median(off), statistics.median(on)
            row = {"dtype": dn, "items": n, "rows": 2 * n, "plain_steps_s": round(best_off, 2),
                   "invariant_steps_s": round(best_on, 2), "ratio": round(best_on / best_off, 3)}
            out["cost"].append(row)
            print(f"{dn:9s} {n} items ({2 * n} rows): plain {best_off:7.2f} steps/s, invariant {best_on:7.2f} "
                  f"steps/s, ratio {row['ratio']:.3f}", flush=True)
    out["row_classes"] = row_classes.measured()  # what the kernels did, per matmul shape (row_classes.py)
    out["row_plans"] = invariant.plans()  # the row counts each call site then uses
    for k, v in out["row_classes"].items():
        print(f"row classes {k}: {v}")
    out["loadavg_end"] = os.getloadavg()[0]  # ratios from a busy machine are noise: say so
    path = ROOT / "bench" / "results" / f"invariance-{dev.type}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
