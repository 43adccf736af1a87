"""Cost of streamed previews: the same music job with and without ``stream_every`` (previews every
0.5 s of new audio, as the daemon's ``stream_partial``), side by side in one run.

    python bench/bench_stream.py [--seconds 20] [--device cpu] [--repeats 2]

Prints a table and writes bench/results/stream-<device>.json. Rows: ``plain`` (no previews),
``incremental`` (today: each preview decodes only its new frames, model/tasks.py IncrementalDecode)
and ``full-redecode`` (the former method, every preview decoding all audio so far, kept here only to
show the difference). The figure to hold is incremental / plain <= 1.3. Tiny random model: the timing
ratio is what carries over, not the absolute seconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from unimoe_audio.model import tasks
from unimoe_audio.model.engine import Engine
from unimoe_audio.model.requests import Length, MusicRequest, SamplingParams
from unimoe_audio.model.tiny_bundle import ensure_tiny_model


class FullRedecode:
    """The former preview decode: all frames so far, every time."""

    def __init__(self, decode, **_):
        self.decode = decode

    def __call__(self, codes: np.ndarray) -> np.ndarray:
        return self.decode(codes)


def run(eng: Engine, seconds: float, stream_every: float | None) -> tuple[float, int]:
    previews = 0

    def cb(p) -> None:
        nonlocal previews
        previews += p.partial_audio is not None

    req = MusicRequest("slow strings", length=Length(seconds=seconds), sampling=SamplingParams(seed=5),
                       stream_every=stream_every)
    t0 = time.perf_counter()
    eng.music(req, cb)
    return time.perf_counter() - t0, previews


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        eng = Engine.load(ensure_tiny_model(Path(tmp) / "tiny"), device=args.device, dtype="fp32")
        run(eng, 1.0, 0.5)  # warm-up
        best: dict[str, float] = {}
        counts: dict[str, int] = {}
        modes = {"plain": None, "incremental": tasks.IncrementalDecode, "full-redecode": FullRedecode}
        for _ in range(args.repeats):  # interleaved, so machine load hits every mode alike
            for name, cls in modes.items():
                original = tasks.IncrementalDecode
                if cls is not None:
                    tasks.IncrementalDecode = cls
                try:
                    secs, n = run(eng, args.seconds, None if cls is None else 0.5)
                finally:
                    tasks.IncrementalDecode = original
                best[name] = min(best.get(name, float("inf")), secs)
                counts[name] = n
        eng.close()
    rows = [{"mode": k, "audio_s": args.seconds, "wall_s": v, "previews": counts[k], "ratio_to_plain": v / best["plain"]}
            for k, v in best.items()]
    print(f"{'mode':14} {'audio s':>8} {'wall s':>8} {'previews':>9} {'x plain':>8}")
    for r in rows:
        print(f"{r['mode']:14} {r['audio_s']:8.1f} {r['wall_s']:8.2f} {r['previews']:9d} {r['ratio_to_plain']:8.2f}")
    out = args.out or Path(__file__).parent / "results" / f"stream-{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "device": args.device, "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor(), "model": "tiny (random weights)",
            "repeats": args.repeats, "stream_every_s": 0.5}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
