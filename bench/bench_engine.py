"""Engine benchmark on CPU: frames/s and real-time factor per task, tiny and small configs.

    python bench/bench_engine.py [--seconds 4] [--threads 2] [--configs tiny,small] [--repeat 2]

Prints a table and writes bench/results/engine-cpu.json. Weights are random (tiny: the tiny bundle;
small: bench/small-config.json with random weights), so the audio is noise; the speed is what counts.
Frames/s counts codec frames generated per second of generation time (one frame = 20 ms of audio);
the real-time factor is wall time (prepare + generate + decode) over audio seconds (< 1: faster than
real time).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _build_model(kind: str, work: Path) -> Path:
    from unimoe_audio.model.tiny_bundle import ensure_tiny_model

    if kind == "tiny":
        return ensure_tiny_model(work / "tiny")
    from unimoe_audio.model import codec
    from unimoe_audio.model.tiny import make_tiny_checkpoint

    d = work / kind
    if not (d / "config.json").is_file():
        make_tiny_checkpoint(d, size=kind, seed=0)
        (d / "dac").mkdir(parents=True, exist_ok=True)
        codec.make_tiny_dac(d / "dac", seed=0)
    return d


def _video(work: Path, seconds: float) -> Path:
    p = work / "bench.mp4"
    if not p.is_file():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc=duration={seconds}:size=320x240:rate=24000/1001", "-pix_fmt", "yuv420p", str(p)],
                       check=True)
    return p


def bench(configs: list[str], seconds: float, repeat: int, threads: int) -> dict:
    import torch

    from unimoe_audio.model.engine import Engine
    from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams, SpeechRequest, VideoScoreRequest

    torch.set_num_threads(threads)
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    try:
        video = _video(work, seconds)
        for kind in configs:
            mdir = _build_model(kind, work)
            t0 = time.perf_counter()
            eng = Engine.load(mdir, device="cpu", dtype="fp32")
            load_s = time.perf_counter() - t0
            rng = np.random.default_rng(0)
            voice = rng.integers(0, 1024, size=(100, 12))
            sp = SamplingParams(seed=1)
            reqs = {
                "speech": lambda: eng.speech(SpeechRequest(text="A short sentence to say out loud.",
                                                           reference_text="The reference voice.", voice_codes=voice,
                                                           length=Length(seconds=seconds), sampling=sp)),
                "music": lambda: eng.music(MusicRequest(caption="calm piano", length=Length(seconds=seconds),
                                                        sampling=sp)),
                "video_score": lambda: eng.video_score(VideoScoreRequest(video=str(video), caption="test pattern",
                                                                         sampling=sp)),
            }
            for task, fn in reqs.items():
                fn()  # warm-up
                best = None
                for _ in range(repeat):
                    t = time.perf_counter()
                    res = fn()
                    wall = time.perf_counter() - t
                    gen = float(res.timings.get("generate", wall))
                    frames = int(res.codes.shape[0])
                    r = dict(config=kind, task=task, frames=frames, audio_seconds=round(res.seconds, 4),
                             generate_s=round(gen, 4), wall_s=round(wall, 4),
                             frames_per_s=round(frames / gen, 2) if gen > 0 else None,
                             rtf=round(wall / res.seconds, 4) if res.seconds > 0 else None)
                    if best is None or r["wall_s"] < best["wall_s"]:
                        best = r
                best["parameters"] = eng.info["parameters"]
                best["load_s"] = round(load_s, 3)
                rows.append(best)
            eng.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                        "torch": __import__("torch").__version__, "threads": threads,
                        "cpu_count": os.cpu_count()},
            "settings": {"seconds": seconds, "repeat": repeat, "sampling": "seeded, task defaults",
                         "device": "cpu", "dtype": "float32"},
            "results": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--configs", default="tiny,small")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "engine-cpu.json"))
    a = ap.parse_args(argv)
    report = bench(a.configs.split(","), a.seconds, a.repeat, a.threads)
    hdr = f"{'config':<7} {'task':<12} {'params':>11} {'frames':>6} {'audio s':>8} {'gen s':>8} {'wall s':>8} {'frames/s':>9} {'RTF':>7}"
    print(hdr)
    print("-" * len(hdr))
    for r in report["results"]:
        print(f"{r['config']:<7} {r['task']:<12} {r['parameters']:>11,} {r['frames']:>6} {r['audio_seconds']:>8.2f} "
              f"{r['generate_s']:>8.3f} {r['wall_s']:>8.3f} {r['frames_per_s']:>9.1f} {r['rtf']:>7.3f}")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
