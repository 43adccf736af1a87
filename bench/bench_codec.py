"""DAC 16 kHz encode/decode speed: seconds of compute per second of audio.

    python bench/bench_codec.py [--seconds 5] [--device cpu]

Prints a table and writes bench/results/codec-<device>.json. "tiny" is the built-in random tiny DAC;
"full" is the real 16 kHz architecture (74 M parameters) with random weights, which runs at the same
speed as the published weights.
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

from unimoe_audio.model.codec import FULL_KWARGS, DacCodec, _dac_config, make_tiny_dac


def full_codec(device: torch.device) -> DacCodec:
    from transformers import DacModel

    torch.manual_seed(0)
    return DacCodec(model=DacModel(_dac_config(FULL_KWARGS)).to(device).eval(), device=device)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    device = torch.device(args.device)
    audio = (np.random.default_rng(0).standard_normal(int(args.seconds * 16000)) * 0.1).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        codecs = {"tiny": DacCodec.load(make_tiny_dac(Path(tmp) / "dac"), device=device), "full": full_codec(device)}
        for name, codec in codecs.items():
            codes = codec.encode(audio)
            enc = timed(lambda: codec.encode(audio), args.repeats)
            dec = timed(lambda: codec.decode(codes), args.repeats)
            rows.append({"codec": name, "audio_s": args.seconds, "encode_s_per_audio_s": enc / args.seconds,
                         "decode_s_per_audio_s": dec / args.seconds})
    print(f"{'codec':6} {'audio s':>8} {'encode s/s':>11} {'decode s/s':>11}")
    for r in rows:
        print(f"{r['codec']:6} {r['audio_s']:8.1f} {r['encode_s_per_audio_s']:11.3f} {r['decode_s_per_audio_s']:11.3f}")
    out = args.out or Path(__file__).parent / "results" / f"codec-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads(),
            "machine": platform.machine(), "processor": platform.processor()}
    out.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
