"""Where generation speed stands, per device, through the real paths (issue 9).

    python bench/bench_speed.py                       # CPU: tiny + small configs, random weights
    python bench/bench_speed.py --devices cuda --sizes small,full --dtype bf16   # on a GPU

For each device and model size, with random weights (the audio is noise; the speed is what counts):

0. **Parity**: fp32 greedy codes of the golden fixture, static (captured on CUDA) = eager = reference.
1. **Generation steps/s** of ``generation.generate`` (the loop every task, the Engine and the daemon
   run: embed, step, CFG, sampling, EOS countdown, per-item callbacks), for 1, 4 and 8 music items
   with CFG, decode ``static`` (bucketed static shapes; CUDA graphs on CUDA) and ``eager``. One step
   makes one frame (20 ms of audio) per item: x real time per item = steps/s / 50.
2. **Bytes per step vs copy bandwidth.** The bytes a static decode step must read (the weights it
   touches, every routed expert included, plus the KV cache of its rows) over the device's measured
   copy rate: the floor time of a step, and that floor as a percent of the measured step.
3. **Time to first streamed audio** of a 10 s music request through ``Engine.music`` with previews
   every 0.5 s (prepare + prefill + the frames of the first preview + its codec decode).
4. **Aggregate x real time through the daemon**: 1, 4 and 8 music requests of ``--daemon-seconds``
   submitted at once to a real daemon process (continuous batching, max_batch 8) on the "small"
   checkpoint; audio seconds of all of them over the wall time from first submit to last ``done``.
   Also the same 4 requests with max_batch 1 (no batching) for the ratio.

Prints a table per part; writes bench/results/speed-<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FRAME_RATE = 50
CAPTIONS = ["calm piano with soft strings", "upbeat electronic dance track", "acoustic guitar by a fire",
            "dark ambient drone", "brass fanfare", "lo-fi hip hop beat", "string quartet", "synthwave night drive"]


def log(*a) -> None:
    print(*a, flush=True)


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# --- engines ----------------------------------------------------------------------------------------------

def bundle(size: str, work: Path) -> Path:
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    return ensure_tiny_model(work / size, size="small" if size == "small" else "tiny")


def make_engine(size: str, device: torch.device, dtype: torch.dtype, decode: str, work: Path):
    """An Engine of ``size``: tiny/small from their random bundles on disk; on CUDA any size (full
    included) with random weights made on the device, the tokenizer and DAC of the tiny bundle."""
    from unimoe_audio.model.engine import Engine

    if device.type == "cpu" and size in ("tiny", "small"):
        return Engine.load(bundle(size, work), device=str(device), dtype=str(dtype).replace("torch.", ""),
                           decode=decode, warmup=False)
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_gpu import build_on_device  # noqa: E402

    from unimoe_audio.model.engine import load_codec, load_text_tokenizer

    tiny = bundle("tiny", work)
    model = build_on_device(size, device, dtype, vision=False, lm_head=False)
    return Engine(model, load_text_tokenizer(tiny), load_codec(tiny / "dac", device=device), model_dir=tiny,
                  device=device, dtype=dtype, load_vision=False, decode=decode)


# --- 1 + 2: generate steps/s, bytes per step -------------------------------------------------------------------

def items_for(eng, n: int, frames: int):
    from unimoe_audio.model import prompts
    from unimoe_audio.model.generation import GenItem, Sampling

    s = Sampling(cfg_scale=10.0, temperature=1.0, top_k=45, eos_factor=0.6)
    return [GenItem(prompt=prompts.build_music_prompt(eng.tok, CAPTIONS[i % len(CAPTIONS)]), sampling=s,
                    max_frames=frames, min_frames=frames, seed=i) for i in range(n)]


def time_generate(eng, n: int, frames: int, repeat: int) -> dict[str, dict]:
    """Static and eager decode of the same items, runs interleaved (a loaded machine slows both
    alike); the best of ``repeat`` runs of each."""
    from unimoe_audio.model.generation import generate

    def once(static: bool) -> tuple[float, int]:
        items = items_for(eng, n, frames)
        sync(eng.device)
        t = time.perf_counter()
        with torch.inference_mode():
            res = generate(eng.lm, items, placeholder_id=eng.placeholder_id, delays=eng.delays, static=static)
        sync(eng.device)
        return time.perf_counter() - t, max(r.steps for r in res)

    best: dict[bool, tuple[float, int]] = {}
    for static in (True, False):
        once(static)  # warm-up (and on CUDA the capture of this bucket)
    for _ in range(repeat):
        for static in (True, False):
            r = once(static)
            if static not in best or r[0] < best[static][0]:
                best[static] = r
    out = {}
    for static, (wall, steps) in best.items():
        out["static" if static else "eager"] = dict(
            items=n, steps=steps, wall_s=round(wall, 4), steps_per_s=round(steps / wall, 2),
            x_realtime_per_item=round(steps / wall / FRAME_RATE, 3),
            x_realtime_all=round(n * steps / wall / FRAME_RATE, 3), decode="static" if static else "eager")
    return out


def copy_bandwidth(dev: torch.device) -> float:
    """Bytes per second moved by a large copy (read + write)."""
    n = (1 << 30) if dev.type == "cuda" else (256 << 20)
    a = torch.empty(n, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(dev)
    t = time.perf_counter()
    reps = 10 if dev.type == "cuda" else 4
    for _ in range(reps):
        b.copy_(a)
    sync(dev)
    return 2 * n * reps / (time.perf_counter() - t)


def step_bytes(eng, rows: int, kv_len: int) -> int:
    """Bytes a static decode step reads: the language model's weights minus the token embedding (all
    routed experts: the sync-free path multiplies each), the codec head, and the KV of ``rows``."""
    m = eng.model
    el = m.dtype.itemsize
    w = sum(p.numel() for n, p in m.language_model.named_parameters() if not n.startswith("embed_tokens"))
    w += m.codec_head.weight.numel()
    t = m.config.text
    kv = 2 * t.num_hidden_layers * rows * t.num_key_value_heads * t.head_dim * kv_len
    return (w + kv) * el


# --- 0: parity (what a lent GPU must confirm first) ------------------------------------------------------

def parity(dev: torch.device) -> dict:
    """fp32 greedy codes of the golden fixture's two music prompts: static (on CUDA: graph-captured)
    against eager and against the reference's codes."""
    import numpy as np

    from unimoe_audio.model import prompts
    from unimoe_audio.model.checkpoint import load_model
    from unimoe_audio.model.engine import load_text_tokenizer
    from unimoe_audio.model.generation import GenItem, Sampling, backend_for, generate

    fix = ROOT / "tests" / "fixtures" / "model"
    g = np.load(fix / "golden.npz")
    meta = json.loads((fix / "golden_meta.json").read_text())
    tok = load_text_tokenizer(fix)
    lm = backend_for(load_model(fix, device=dev, dtype=torch.float32, load_vision=False))
    cfg = lm.config

    def items():
        return [GenItem(prompt=prompts.build_music_prompt(tok, c), max_frames=21,
                        sampling=Sampling(cfg_scale=10.0, eos_factor=0.6, greedy=True)) for c in meta["t2m"]["captions"]]

    with torch.inference_mode():
        kw = dict(placeholder_id=int(cfg.codec_placeholder_value), video_token_id=int(cfg.video_token_id))
        st = generate(lm, items(), static=True, **kw)
        ea = generate(lm, items(), static=False, **kw)
    return dict(static_equals_eager=all(np.array_equal(a.codes, b.codes) for a, b in zip(st, ea)),
                static_equals_reference=all(np.array_equal(r.codes, g[f"t2m_gen_codes_reverted_{b}"])
                                            for b, r in enumerate(st)),
                graphs_captured=lm.static_decoder().captures)


# --- 3: time to first streamed audio ------------------------------------------------------------------------

def first_audio(eng, seconds: float = 10.0) -> dict:
    from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams

    out: dict = {}

    def run() -> dict:
        seen: dict = {}
        t0 = time.perf_counter()

        def cb(p) -> None:
            if getattr(p, "partial_audio", None) is not None and "first_audio_s" not in seen:
                seen["first_audio_s"] = time.perf_counter() - t0
                seen["first_audio_seconds"] = p.partial_audio.shape[-1] / 16000

        res = eng.music(MusicRequest(caption="calm piano", length=Length(seconds=seconds),
                                     sampling=SamplingParams(seed=1), stream_every=0.5), progress=cb)
        seen["total_s"] = time.perf_counter() - t0
        seen["audio_s"] = res.seconds
        return seen

    run()  # warm-up
    out = run()
    return {k: round(v, 4) for k, v in out.items()}


# --- 4: through the daemon ----------------------------------------------------------------------------------

def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_throughput(model_dir: Path, device: str, counts: list[int], seconds: float, max_batch: int,
                      work: Path) -> list[dict]:
    from unimoe_audio.client import channel, connection, wire
    from unimoe_audio.client.settings import load_settings

    home = Path(tempfile.mkdtemp(prefix="speed-home-", dir=work))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL=str(model_dir), UNIMOE_AUDIO_DEVICE=device,
               UNIMOE_AUDIO_OSC_PORT="0", UNIMOE_AUDIO_KEEP_ALIVE="0", UNIMOE_AUDIO_LOAD_AT_START="1",
               UNIMOE_AUDIO_MAX_BATCH=str(max_batch), UNIMOE_AUDIO_MAX_QUEUE="1000")
    saved = dict(os.environ)
    os.environ.update({k: v for k, v in env.items() if k.startswith("UNIMOE_AUDIO_")})
    try:
        settings = load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.daemon", "--quiet"], env=env)
    rows = []
    try:
        deadline = time.monotonic() + 300
        info = None
        while time.monotonic() < deadline:
            try:
                info = connection.read_connection_file(settings.connection_file)
                if info.pid == proc.pid:
                    break
            except wire.ProtocolError:
                pass
            time.sleep(0.2)
        ch = channel.Channel(info, timeout=60)
        sub = ch.subscribe(["job."])
        time.sleep(0.3)

        def run(n: int) -> float:
            t0 = time.perf_counter()
            ids = set()
            for i in range(n):
                req = {"spec": {"task": "music", "caption": CAPTIONS[i % len(CAPTIONS)],
                                "length": {"seconds": seconds}, "sampling": {"seed": i}}}
                ids.add(ch.request("submit", req)["job_id"])
            left = set(ids)
            while left:
                m = sub.recv(timeout=600)
                if m is None:
                    raise RuntimeError("daemon went quiet")
                if m.content.get("job_id") in left and m.msg_type in ("done", "failed", "cancelled"):
                    if m.msg_type != "done":
                        raise RuntimeError(f"job {m.msg_type}: {m.content}")
                    left.discard(m.content["job_id"])
            return time.perf_counter() - t0

        run(1)  # warm-up (model load, first prompts)
        for n in counts:
            wall = run(n)
            rows.append(dict(requests=n, max_batch=max_batch, audio_seconds_each=seconds, wall_s=round(wall, 3),
                             x_realtime_aggregate=round(n * seconds / wall, 3)))
            log(f"  daemon max_batch={max_batch} n={n}: {wall:.2f} s wall, "
                f"{n * seconds / wall:.3f}x real time aggregate")
        sub.close()
        try:
            ch.request("shutdown", {"requeue_running": True}, control=True)
        except Exception:  # noqa: BLE001
            pass
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
    return rows


# --- main ------------------------------------------------------------------------------------------------------

def bench_device(dev: torch.device, sizes: list[str], dtype: torch.dtype, args, work: Path) -> dict:
    out: dict = {"device": str(dev), "dtype": str(dtype).replace("torch.", ""), "sizes": {}}
    bw = copy_bandwidth(dev)
    out["copy_bandwidth_GBps"] = round(bw / 1e9, 2)
    log(f"{dev}: copy bandwidth {bw / 1e9:.2f} GB/s")
    out["parity_fp32"] = parity(dev)
    log(f"{dev}: fp32 greedy parity {out['parity_fp32']}")
    counts = [int(x) for x in args.items.split(",")]
    for size in sizes:
        log(f"== {dev} {size}")
        res: dict = {"generate": [], "first_audio": None}
        eng = make_engine(size, dev, dtype, "auto", work)
        res["parameters"] = sum(p.numel() for p in eng.model.parameters())
        for n in counts:
            both = time_generate(eng, n, args.frames, args.repeat)
            for decode in ("static", "eager"):
                r = both[decode]
                if decode == "static":
                    prompt = 40  # about the music prompt's tokens
                    kv = prompt + r["steps"] // 2  # mean KV length over the run
                    b = step_bytes(eng, 2 * n, kv)
                    floor = b / bw
                    r["bytes_per_step"] = b
                    r["floor_ms"] = round(floor * 1e3, 3)
                    r["floor_pct"] = round(100 * floor / (r["wall_s"] / r["steps"]), 2)
                res["generate"].append(r)
                log(f"  generate {decode:<6} items={n}: {r['steps_per_s']:8.2f} steps/s "
                    f"({r['x_realtime_per_item']:.3f}x real time per item)"
                    + (f", {r['bytes_per_step'] / 1e6:.1f} MB/step, floor {r['floor_ms']:.3f} ms "
                       f"= {r['floor_pct']:.1f}% of the step" if decode == "static" else ""))
        res["first_audio"] = first_audio(eng, 10.0)
        res["first_audio"]["decode"] = "static" if eng.static else "eager"
        log(f"  first streamed audio of a 10 s request ({res['first_audio']['decode']}): "
            f"{res['first_audio']['first_audio_s']:.3f} s")
        eng.close()
        out["sizes"][size] = res
    if args.daemon_seconds > 0:
        mdir = bundle("small", work)
        out["daemon"] = {"size": "small",
                         "batched": daemon_throughput(mdir, str(dev), counts, args.daemon_seconds, 8, work),
                         "unbatched": daemon_throughput(mdir, str(dev), [4], args.daemon_seconds, 1, work)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="cuda,cpu" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", default=None, help="default: tiny,small on CPU; small,full on CUDA")
    ap.add_argument("--dtype", default=None, help="default: fp32 on CPU, bf16 on CUDA")
    ap.add_argument("--items", default="1,4,8")
    ap.add_argument("--frames", type=int, default=100, help="frames generated per item (steps = frames + 19)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--daemon-seconds", type=float, default=4.0, help="audio seconds per daemon request (0: skip)")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from unimoe_audio.model.engine import pick_dtype

    work = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    report = {"machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                          "torch": torch.__version__, "threads": a.threads, "cpu_count": os.cpu_count()},
              "settings": {k: v for k, v in vars(a).items() if k != "out_dir"},
              "weights": "random (tiny/small bundles, or made on the device): speed only, the audio is noise",
              "devices": []}
    try:
        for d in a.devices.split(","):
            dev = torch.device(d)
            sizes = (a.sizes or ("small,full" if dev.type == "cuda" else "tiny,small")).split(",")
            dtype = pick_dtype(a.dtype or "auto", dev)
            report["devices"].append(bench_device(dev, sizes, dtype, a, work))
            name = d if dev.type == "cpu" else torch.cuda.get_device_name(dev).lower().replace(" ", "-")
            out = Path(a.out_dir) / f"speed-{name}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            one = dict(report, devices=[report["devices"][-1]])
            out.write_text(json.dumps(one, indent=2))
            log(f"wrote {out}")
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    _table(report)
    return 0


def _table(report: dict) -> None:
    log("")
    log(f"{'device':<8} {'dtype':<9} {'size':<6} {'decode':<7} {'items':>5} {'steps/s':>9} {'xRT/item':>9} "
        f"{'xRT all':>8} {'floor %':>8}")
    for d in report["devices"]:
        for size, res in d["sizes"].items():
            for r in res["generate"]:
                log(f"{d['device']:<8} {d['dtype']:<9} {size:<6} {r['decode']:<7} {r['items']:>5} "
                    f"{r['steps_per_s']:>9.2f} {r['x_realtime_per_item']:>9.3f} {r['x_realtime_all']:>8.3f} "
                    f"{r.get('floor_pct', float('nan')):>8.2f}")
            fa = res.get("first_audio")
            if fa:
                log(f"{d['device']:<8} {size:<6} first streamed audio of 10 s ({fa['decode']}): {fa['first_audio_s']:.3f} s")
        for kind in ("batched", "unbatched"):
            for r in d.get("daemon", {}).get(kind, []):
                log(f"{d['device']:<8} daemon small max_batch={r['max_batch']} requests={r['requests']}: "
                    f"{r['x_realtime_aggregate']:.3f}x real time aggregate ({r['wall_s']:.2f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
