"""One command that proves the GPU path: every section of it, on one card, in a few minutes.

    python bench/gpu_check.py                   # CUDA, the full-size shape (random weights), ~8 min on an H100
    python bench/gpu_check.py --device cpu      # the same sections on the small config (the test suite runs it)

Sections (each isolated: one that fails is recorded with its error and the others still run):

* ``daemon``: default sampled music, speech (a synthetic reference voice) and video score (an ffmpeg
  test clip) end to end through a real daemon process on the device.
* ``decode_join``: the decode path ``generate`` uses (captured CUDA graphs on CUDA) with a second job
  joining a running batch; both finish with the right length.
* ``invariance``: batch-invariant decode (the default) on that same path: a seeded item's codes equal
  alone, again, and with neighbours joining and one cancelled; and what it costs (steps/s off vs on,
  4 and 8 items, stepped in turns; target: on >= 0.9 x off).
* ``moe_agreement``: the chosen-experts MoE path against the all-experts path on the same tokens.
* ``kernels``: int8 and int4 on every distinct (N, K) the model's quantized linears use: which kernel
  each got, whether it fell back, and its error against the dequantized reference.
* ``memory``: peak process (CPU) or CUDA (reserved) memory against the estimate for bf16, int8 and
  int4, each in its own process loading the model and generating.
* ``speed``: x real time of one item, and aggregate with 8 items at once.
* ``first_audio``: seconds from submit to the first streamed audio of a 10 s request.

The model is random (``models make-tiny``: full on CUDA, written on the device machine; small on CPU):
the figures are speed and memory, not quality. Prints a table and writes
``bench/results/gpu-check-<card>.json`` (``--out`` elsewhere).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAMES_PER_SECOND = 50  # DAC 16 kHz codes: 50 frames make one second


# --- plumbing ------------------------------------------------------------------------------------------

def _section(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    t0 = time.monotonic()
    print(f"== {name}", file=sys.stderr, flush=True)
    try:
        out = fn()
        out.setdefault("ok", True)
    except Exception as exc:  # noqa: BLE001 - a failing section is a result, not the end of the check
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
    out["seconds"] = round(time.monotonic() - t0, 2)
    results[name] = out
    print(f"   {'ok' if out['ok'] else 'FAILED: ' + out.get('error', '')} ({out['seconds']} s)", file=sys.stderr,
          flush=True)


def _card(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name(torch.device(device)).lower()).strip("-")
    return "cpu"


def _free_udp() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _voice_wav(path: Path, seconds: float = 3.0) -> Path:
    """A voiced, vowel-like reference (harmonics of a gliding pitch, syllable envelope): not silent,
    not noise, needs no TTS engine."""
    import soundfile as sf

    sr = 16000
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    sf.write(str(path), (0.2 * voice * env).astype(np.float32), sr)
    return path


def _test_video(path: Path, seconds: float = 2.0) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc=size=224x224:rate=10:duration={seconds}",
                    "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


class Plan:
    """Sizes of the run: the full shape on CUDA, the small config (short requests) on CPU."""

    def __init__(self, device: str):
        self.device = device
        cuda = device.startswith("cuda")
        self.size = "full" if cuda else "small"
        self.dtype = "bfloat16" if cuda else "float32"
        self.daemon_seconds = 2.0 if cuda else 0.4
        self.speed_seconds = 10.0 if cuda else 0.6
        self.speed_items = 8
        self.first_audio_seconds = 10.0
        self.join_seconds = (4.0, 2.0) if cuda else (0.6, 0.3)
        self.memory_seconds = 2.0 if cuda else 0.3
        self.invariance_frames = 40 if cuda else 10
        self.invariance_steps = 20 if cuda else 6


# --- sections ------------------------------------------------------------------------------------------

def check_daemon(plan: Plan, model_dir: Path, work: Path) -> dict[str, Any]:
    """Music, speech and video score, default sampling, through a real daemon process."""
    from unimoe_audio.client.client import Client
    from unimoe_audio.client.settings import load_settings

    home = work / "daemon-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL=str(model_dir), UNIMOE_AUDIO_DEVICE=plan.device,
               UNIMOE_AUDIO_DTYPE=plan.dtype, UNIMOE_AUDIO_OSC_PORT=str(_free_udp()), UNIMOE_AUDIO_KEEP_ALIVE="0",
               UNIMOE_AUDIO_ALLOWED_ROOTS=str(work), PYTHONUNBUFFERED="1")
    out_log = open(work / "daemon.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.daemon"], env=env, stdout=out_log,
                            stderr=subprocess.STDOUT)
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        settings = load_settings()
        os.environ.clear()
        os.environ.update(saved)
        while not settings.connection_file.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited with {proc.returncode}: "
                                   f"{(work / 'daemon.out').read_text(errors='replace')[-2000:]}")
            time.sleep(0.1)
        ref = _voice_wav(work / "voice.wav")
        video = _test_video(work / "clip.mp4", max(2.0, plan.daemon_seconds))
        s = plan.daemon_seconds
        out: dict[str, Any] = {}
        with Client(settings, auto_start=False) as c:
            jobs = {
                "music": c.music("calm piano with soft strings", seconds=s, output=str(work / "music.wav")),
                "speech": c.speech("Hello there, this is a short line.", reference_audio=str(ref),
                                   reference_text="Hello there, this is my voice.", output=str(work / "speech.wav")),
                "video_score": c.score(str(video), caption="warm strings", in_seconds=0.0, out_seconds=s,
                                       frames_per_second=5.0, output=str(work / "score.wav")),
            }
            for task, job in jobs.items():
                t0 = time.monotonic()
                try:
                    res = job.wait()
                    out[task] = {"ok": True, "seconds": float(res.seconds), "path": str(res.path),
                                 "wall_s": round(time.monotonic() - t0, 2)}
                except Exception as exc:  # noqa: BLE001 - one task failing is reported, the others still wait
                    out[task] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            status = c.status()
        out["device"], out["dtype"] = status.device, status.dtype
        out["ok"] = all(v["ok"] for k, v in out.items() if isinstance(v, dict))
        return out
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        out_log.close()


def _music(seconds: float, seed: int, stream_every: float | None = None):
    from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams

    return MusicRequest("calm piano with soft strings", length=Length(seconds=seconds),
                        sampling=SamplingParams(seed=seed), stream_every=stream_every)


def check_decode_join(plan: Plan, engine: Any) -> dict[str, Any]:
    """A job joins a running batch between steps; both finish with the lengths they asked for."""
    a_s, b_s = plan.join_seconds
    batch = engine.job_batch()
    done: dict[str, Any] = {}
    batch.add(engine.prepare(_music(a_s, 1)), on_done=lambda r: done.__setitem__("first", r))
    steps = 0
    for _ in range(8):
        batch.step()
        steps += 1
    rows_before = batch.rows
    batch.add(engine.prepare(_music(b_s, 2)), on_done=lambda r: done.__setitem__("joined", r))
    joined_rows = batch.rows
    t0 = time.monotonic()
    while batch:
        batch.step()
        steps += 1
    for k, v in done.items():
        if isinstance(v, BaseException):
            raise v
    lengths = {k: round(float(v.seconds), 3) for k, v in done.items()}
    return {"decode": engine.info.get("decode"), "graphs": engine.info.get("graphs"), "steps": steps,
            "rows_before_join": rows_before, "rows_after_join": joined_rows, "lengths_s": lengths,
            "steps_per_s_after_join": round(steps / max(time.monotonic() - t0, 1e-9), 2),
            "ok": abs(lengths.get("first", 0) - a_s) < 0.05 and abs(lengths.get("joined", 0) - b_s) < 0.05}


def check_moe_agreement(plan: Plan, engine: Any) -> dict[str, Any]:
    """Every layer's MoE on the same tokens: chosen-experts path against all-experts path."""
    import torch

    from unimoe_audio.model.moe import SparseMoE

    g = torch.Generator(device="cpu").manual_seed(0)
    layers = [m for m in engine.model.modules() if isinstance(m, SparseMoE)]
    worst, per_layer, resolved = 0.0, [], "none"
    with torch.inference_mode():
        for i, moe in enumerate(layers):
            h = moe.gate.in_features
            x = (torch.randn(16, h, generator=g) * 0.5).to(device=engine.device, dtype=engine.dtype)
            prev = moe.path
            try:
                moe.path = "all"
                y_all = moe(x).float()
                moe.path = "chosen"
                resolved = moe.resolve_path(x.shape[0], x.device, x.dtype)  # "all" where chosen cannot run
                y_chosen = moe(x).float()
            finally:
                moe.path = prev
            rel = float((y_chosen - y_all).abs().max() / y_all.abs().max().clamp(min=1e-6))
            per_layer.append(round(rel, 5))
            worst = max(worst, rel)
    tol = 2e-2 if engine.dtype != torch.float32 else 1e-4
    return {"layers": len(layers), "chosen_path_ran_as": resolved, "max_rel_diff": worst, "per_layer": per_layer,
            "tolerance": tol, "ok": worst <= tol}


def check_invariance(plan: Plan, engine: Any) -> dict[str, Any]:
    """Batch-invariant decode, the default, on the engine's own decode path (captured static buckets and the
    chosen-or-all experts on CUDA): a seeded item's codes alone, again, and with neighbours joining at
    step 2 and one cancelled after a frame, must be equal bit for bit. Then its cost: steps/s of the same
    4 and 8 items with invariant steps off and on, stepped in turns (bench/bench_invariance.py)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling script, also when imported
    from bench_invariance import _item, paired_throughput

    f = plan.invariance_frames

    def codes(joins: dict[int, list]) -> Any:
        """Item A's codes, stepping until every item is done; ``joins``: {step: items added before it}."""
        s = engine.session()
        with torch.inference_mode():
            (a,) = s.add([_item(11, 10, 20, f)])
            step = 0
            while s.active or s.waiting:
                if step in joins:
                    s.add(joins[step])
                s.step()
                step += 1
            s.close()
        res = s.result(a)
        if isinstance(res, BaseException):
            raise res
        return res.codes

    solo = codes({})
    joined = codes({2: [_item(12, 40, 33, f), _item(13, 90, 7, f + 20)], 3: [_item(14, 200, 50, f, stop_at=1)]})
    again = codes({})
    cost = []
    for n in (4, 8):
        off, on = paired_throughput(engine.lm, n, plan.invariance_steps, engine.static,
                                    placeholder_id=engine.placeholder_id)
        cost.append({"items": n, "rows": 2 * n, "plain_steps_s": round(off, 2), "invariant_steps_s": round(on, 2),
                     "ratio": round(on / off, 3)})
    from unimoe_audio.model import invariant, row_classes

    report = engine.info.get("kernels") or {}
    return {"decode": engine.info.get("decode"), "experts_decode_invariant": report.get("experts_decode_invariant"),
            "row_classes": row_classes.measured(), "row_plans": invariant.plans(),
            "frames": int(np.asarray(solo).shape[-1]), "joined_equals_solo": bool(np.array_equal(joined, solo)),
            "again_equals_solo": bool(np.array_equal(again, solo)), "cost": cost,
            "cost_target_met": all(c["ratio"] >= 0.9 for c in cost),
            "ok": bool(np.array_equal(joined, solo) and np.array_equal(again, solo))}


def kernels_probe(model_dir: str, device: str, dtype: str) -> None:
    """(in a child process: a kernel can crash the process, not only raise) int8 and int4 on every
    distinct (N, K) of the model's quantized linears; one JSON line before and after each."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from unimoe_audio.model.checkpoint import load_config
    from unimoe_audio.model.decoder import UniMoEAudioModel
    from unimoe_audio.model.engine import pick_dtype
    from unimoe_audio.model.quant import QuantLinear, quantizable

    dev = torch.device(device)
    dt = pick_dtype(dtype, dev)
    with torch.device("meta"):
        model = UniMoEAudioModel(load_config(model_dir), vision=True, lm_head=False)
    shapes = sorted({(lin.out_features, lin.in_features) for _, lin in quantizable(model)})
    g = torch.Generator(device="cpu").manual_seed(0)
    for n, k in shapes:
        lin = nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(n, k, generator=g) * 0.02)
        lin = lin.to(dev)
        x = torch.randn(4, k, generator=g).to(device=dev, dtype=dt)
        for method in ("int8", "int4"):
            print(json.dumps({"start": [n, k, method]}), flush=True)
            q = QuantLinear.from_linear(lin, method)
            ref = F.linear(x.float(), q.dequantized(torch.float32))
            kernel = q.prepare(dt)
            with torch.inference_mode():
                y = q(x).float()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            rel = float((y - ref).abs().max() / ref.abs().max().clamp(min=1e-6))
            print(json.dumps({"n": n, "k": k, "method": method, "kernel": kernel, "fell_back": kernel == "dequant",
                              "rel_err": round(rel, 5), "ok": rel < 5e-2}), flush=True)


def check_kernels(plan: Plan, model_dir: Path) -> dict[str, Any]:
    """int8 and int4 on every distinct (N, K), in a child process: a kernel that crashes (a native
    segfault, as ``_weight_int8pack_mm`` does on some shapes) is recorded with its shape."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--kernels-probe", str(model_dir), "--device", plan.device,
           "--dtype", plan.dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    rows: list[dict[str, Any]] = []
    started = None
    for line in proc.stdout.splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if "start" in d:
            started = d["start"]
        else:
            rows.append(d)
            started = None
    out: dict[str, Any] = {"shapes": len({(r["n"], r["k"]) for r in rows}), "rows": rows,
                           "fell_back": {m: sum(r["fell_back"] for r in rows if r["method"] == m)
                                         for m in ("int8", "int4")}}
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        where = f" on N={started[0]} K={started[1]} {started[2]}" if started else ""
        out.update(ok=False, error=f"the kernel check died ({how}){where}",
                   stderr=(proc.stderr or "")[-1500:])
        return out
    out["ok"] = all(r["ok"] for r in rows)
    return out


def memory_probe(model_dir: str, device: str, dtype: str, quant: str, seconds: float) -> dict[str, Any]:
    """(in a child process) load, generate, and report the peak against the estimate."""
    import torch

    from unimoe_audio.model.engine import Engine

    eng = Engine.load(model_dir, device=device, dtype=dtype, quant=quant)
    eng.music(_music(seconds, 3))
    est = int(eng.info["memory_estimate"]["total_bytes"])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak, what = int(torch.cuda.max_memory_reserved()), "cuda reserved"
    else:
        peak, what = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "process peak RSS"
    return {"estimate_bytes": est, "peak_bytes": peak, "measured": what, "ratio": round(peak / est, 3),
            "within_15pct": abs(peak / est - 1) <= 0.15}


def check_memory(plan: Plan, model_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for quant in ("none", "int8", "int4"):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", str(model_dir), "--device", plan.device,
               "--dtype", plan.dtype, "--quant", quant, "--seconds", str(plan.memory_seconds)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        label = "bf16" if quant == "none" and plan.dtype == "bfloat16" else (quant if quant != "none" else plan.dtype)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            how = f"died (signal {-proc.returncode})" if proc.returncode < 0 else f"exit {proc.returncode}"
            out[label] = {"ok": False, "error": f"the {label} probe {how}" + (f": {tail[0]}" if tail else "")}
            continue
        out[label] = {"ok": True, **json.loads(proc.stdout.strip().splitlines()[-1])}
    out["ok"] = all(v["ok"] for v in out.values() if isinstance(v, dict))
    return out


def check_speed(plan: Plan, engine: Any) -> dict[str, Any]:
    s, n = plan.speed_seconds, plan.speed_items
    engine.music(_music(min(s, 1.0), 4))  # warm: first-call allocations are not the speed
    t0 = time.monotonic()
    one = engine.music(_music(s, 5))
    t1 = time.monotonic() - t0
    t0 = time.monotonic()
    many = engine.run_batch([_music(s, 10 + i) for i in range(n)])
    tn = time.monotonic() - t0
    bad = [r for r in many if isinstance(r, BaseException)]
    if bad:
        raise bad[0]
    audio = sum(float(r.seconds) for r in many)
    return {"seconds_per_item": s, "x_realtime_1_item": round(float(one.seconds) / t1, 3),
            "items": n, "x_realtime_aggregate": round(audio / tn, 3), "x_realtime_per_item_batched": round(audio / n / tn, 3)}


def check_first_audio(plan: Plan, engine: Any) -> dict[str, Any]:
    """Submit a 10 s request with streaming previews; stop at the first audio."""
    from unimoe_audio.model.errors import Cancelled

    t0 = time.monotonic()
    seen: dict[str, float] = {}

    def cb(p: Any) -> bool:
        if getattr(p, "partial_audio", None) is not None and "first" not in seen:
            seen["first"] = time.monotonic() - t0
            seen["audio_s"] = float(p.partial_audio.shape[-1]) / 16000
            raise Cancelled("first audio arrived")
        return True

    try:
        engine.music(_music(plan.first_audio_seconds, 6, stream_every=0.5), progress=cb)
    except Cancelled:
        pass
    if "first" not in seen:
        raise RuntimeError("no streamed audio before the request ended")
    return {"request_seconds": plan.first_audio_seconds, "first_audio_s": round(seen["first"], 3),
            "first_audio_len_s": round(seen["audio_s"], 3)}


# --- main ----------------------------------------------------------------------------------------------

def _table(results: dict[str, Any]) -> str:
    lines = [f"{'section':<14} {'ok':<4} {'s':>7}  figures"]
    for name, r in results.items():
        if not isinstance(r, dict) or "ok" not in r:
            continue
        keys = [k for k in r if k not in ("ok", "seconds", "traceback", "rows", "per_layer")]
        figs = ", ".join(f"{k}={r[k]}" for k in keys if not isinstance(r[k], (dict, list)))
        subs = [f"{k}:{'ok' if v.get('ok') else 'FAIL'}" for k, v in r.items() if isinstance(v, dict) and "ok" in v]
        lines.append(f"{name:<14} {'yes' if r['ok'] else 'NO':<4} {r.get('seconds', 0):>7}  "
                     + "; ".join(x for x in (figs, " ".join(subs)) if x)[:160])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default: the full shape) or cpu (the small config)")
    ap.add_argument("--out", help="where the JSON goes (default bench/results/gpu-check-<card>.json)")
    ap.add_argument("--model-dir", help="an existing model folder instead of making a random one")
    ap.add_argument("--memory-probe", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--kernels-probe", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quant", default="none", help=argparse.SUPPRESS)
    ap.add_argument("--seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.kernels_probe:
        kernels_probe(a.kernels_probe, a.device, a.dtype or "auto")
        return 0
    if a.memory_probe:
        print(json.dumps(memory_probe(a.memory_probe, a.device, a.dtype or "auto", a.quant, a.seconds)))
        return 0

    import torch

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: CUDA is not available here; use --device cpu for the CPU run of the same sections",
              file=sys.stderr)
        return 2
    plan = Plan(a.device)
    card = _card(a.device)
    results: dict[str, Any] = {
        "card": card, "device": a.device, "size": plan.size, "dtype": plan.dtype, "random_weights": True,
        "torch": torch.__version__, "python": platform.python_version(), "host": platform.node(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    t_all = time.monotonic()
    try:
        if a.model_dir:
            model_dir = Path(a.model_dir)
        else:
            from unimoe_audio.model.tiny_bundle import ensure_tiny_model

            t0 = time.monotonic()
            model_dir = ensure_tiny_model(work / f"{plan.size}-random", size=plan.size)
            results["model_build_s"] = round(time.monotonic() - t0, 1)
        engine: Any = None

        def load() -> dict[str, Any]:
            nonlocal engine
            from unimoe_audio.model.engine import Engine

            engine = Engine.load(model_dir, device=a.device, dtype=plan.dtype)
            return {"decode": engine.info.get("decode"), "graphs": engine.info.get("graphs"),
                    "warmup_s": engine.info.get("warmup_s")}

        _section(results, "load", load)
        for name, fn in (("decode_join", check_decode_join), ("invariance", check_invariance),
                         ("moe_agreement", check_moe_agreement),
                         ("speed", check_speed), ("first_audio", check_first_audio)):
            if engine is None:
                results[name] = {"ok": False, "error": "the model did not load (see 'load')"}
                continue
            _section(results, name, lambda fn=fn: fn(plan, engine))
        if engine is not None:
            engine.close()
            engine = None
        _section(results, "kernels", lambda: check_kernels(plan, model_dir))
        _section(results, "daemon", lambda: check_daemon(plan, model_dir, work))
        _section(results, "memory", lambda: check_memory(plan, model_dir))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["total_s"] = round(time.monotonic() - t_all, 1)
    sections = [k for k, v in results.items() if isinstance(v, dict) and "ok" in v]
    results["ok"] = all(results[k]["ok"] for k in sections)
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"gpu-check-{card}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print(_table(results))
    print(f"wrote {out}")
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
