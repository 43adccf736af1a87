"""The full-size model (7.16 B, random weights) through the daemon on this machine's CPU: memory
estimate vs measured peak, load time, decode speed, per weight storage (bf16 / int8 / int4).

    python bench/bench_fullsize.py                       # all three; JSON in bench/results/fullsize-cpu.json
    python bench/bench_fullsize.py --storages int8 --work /big/disk/dir

What it does, as a user would: ``models make-tiny DIR --size full`` (random weights in the published
layout, ~14 GB), ``models import`` three ways (linked bf16, ``--quant int8``, ``--quant int4``), then
for each a fresh daemon (``serve --detach``) generates ``--seconds`` of music with a fixed seed and
``status`` is read. Needs ~30 GB of disk and ~14 GB of free memory (bf16).

The measured peak is the daemon's, sampled every 0.1 s from /proc/PID/status from outside by
``memory.PeakMeter`` (what ``status`` reports from inside): anonymous memory (RssAnon + RssShmem) until
the log says the model is loaded, since the weight files read meanwhile are page cache the system
reclaims under pressure; the whole resident set after. The kernel's high-water mark (VmHWM, also
recorded) counts those file pages too. Random weights: the speed is that of
the real model (same shapes, same experts per token on average), the audio is noise.
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "unimoe_audio.client"]
GB = 1e9


def log_says_loaded(home: Path, start: int):
    """A predicate: the daemon's log has said "model loaded from" since byte ``start``."""
    log = home / "logs" / "daemon.log"
    seen = [False]

    def check() -> bool:
        if not seen[0]:
            try:
                with open(log, "rb") as fh:
                    fh.seek(start)
                    seen[0] = b"model loaded from" in fh.read()
            except OSError:
                pass
        return seen[0]

    return check


def cli(env: dict[str, str], *args: str, timeout: float = 7200) -> dict[str, Any]:
    r = subprocess.run(CLI + ["--json", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise SystemExit(f"unimoe-audio {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-3000:]}")
    return json.loads(r.stdout) if r.stdout.strip() else {}


def daemon_pid_from(home: Path) -> int:
    return int(json.loads((home / "run" / "daemon.json").read_text())["pid"])


def run_one(env: dict[str, str], name: str, seconds: float, out_dir: Path) -> dict[str, Any]:
    env = dict(env, UNIMOE_AUDIO_MODEL=name, UNIMOE_AUDIO_KEEP_ALIVE="0")
    home = Path(env["UNIMOE_AUDIO_HOME"])
    t0 = time.monotonic()
    log = home / "logs" / "daemon.log"
    start = log.stat().st_size if log.exists() else 0
    started = cli(env, "serve", "--detach", "--connect-timeout", "3600")
    from unimoe_audio.model.memory import PeakMeter

    sampler = PeakMeter(pid=int(started["pid"]), loaded=log_says_loaded(home, start))
    try:
        out = out_dir / f"{name}.wav"
        t1 = time.monotonic()
        cli(env, "music", "calm piano with soft strings", "--seconds", str(seconds), "--seed", "7", "-o", str(out))
        gen_s = time.monotonic() - t1
        side = json.loads(out.with_suffix(".json").read_text())
        st = cli(env, "status")
    finally:
        try:
            cli(env, "stop", timeout=120)
        finally:
            sampler.stop()
    mem = st.get("memory") or {}
    est = mem.get("estimate_bytes")
    # the same estimate at the load this run put on the model: one CFG item, 2 decode rows
    import torch

    from unimoe_audio.model import memory as M

    at_run = M.estimate(st["model_dir"], dtype=getattr(torch, st["dtype"]), quant=st.get("quant") or "none",
                        device="cpu", max_rows=2).total_bytes
    peak = sampler.peak
    return {
        "model": name, "quant": st.get("quant"), "dtype": st.get("dtype"), "device": st.get("device"),
        "estimate_bytes": est, "estimate_2_rows_bytes": at_run, "peak_bytes": peak,
        "peak_load_anon_bytes": sampler.peak_loading, "peak_running_rss_bytes": sampler.peak_running,
        "vmhwm_bytes": sampler.hwm, "status_peak_bytes": mem.get("peak_bytes"),
        "estimate_2_rows_over_peak": round(at_run / peak, 3) if peak else None,
        "estimate_over_peak": round(est / peak, 3) if est and peak else None,
        "serve_to_done_s": round(time.monotonic() - t0, 1), "generate_s": round(gen_s, 1),
        "audio_seconds": seconds, "seed": side.get("seed"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="folder for the ~30 GB of models (default: a temporary one)")
    ap.add_argument("--storages", default="bf16,int8,int4", help="comma list of bf16, int8, int4")
    ap.add_argument("--dtype", default="bfloat16", help="activation dtype of every run (UNIMOE_AUDIO_DTYPE)")
    ap.add_argument("--seconds", type=float, default=0.2)
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "fullsize-cpu.json")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    a = ap.parse_args()
    work = a.work or Path(tempfile.mkdtemp(prefix="unimoe-fullsize-"))
    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_DEVICE="cpu", UNIMOE_AUDIO_DTYPE=a.dtype,
               UNIMOE_AUDIO_OSC_PORT="0", PYTHONUNBUFFERED="1")
    src = work / "src"
    rows = []
    try:
        if not (src / "config.json").is_file():
            print(f"making the full-size random model in {src} ...", file=sys.stderr)
            cli(env, "models", "make-tiny", str(src), "--size", "full")
        installed = {m.get("name") for m in (cli(env, "models", "ls").get("models") or [])}
        for storage in a.storages.split(","):
            name = f"full-{storage}"
            if name not in installed:
                print(f"importing {name} ...", file=sys.stderr)
                extra = ["--link"] if storage == "bf16" else ["--quant", storage]
                t = time.monotonic()
                cli(env, "models", "import", str(src), "--name", name, *extra)
                print(f"  {time.monotonic() - t:.0f} s", file=sys.stderr)
            print(f"serving {name} ...", file=sys.stderr)
            rows.append(run_one(env, name, a.seconds, work))
    finally:
        if not a.keep and a.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{'model':<10} {'dtype':<9} {'estimate':>9} {'est 2 rows':>10} {'peak':>8} {'2 rows/peak':>11} "
          f"{'load anon':>9} {'run RSS':>8} {'generate':>9}")
    for r in rows:
        print(f"{r['model']:<10} {str(r['dtype']):<9} {r['estimate_bytes'] / GB:>7.2f}GB {r['estimate_2_rows_bytes'] / GB:>8.2f}GB "
              f"{r['peak_bytes'] / GB:>6.2f}GB {r['estimate_2_rows_over_peak'] or 0:>11.3f} "
              f"{r['peak_load_anon_bytes'] / GB:>7.2f}GB {r['peak_running_rss_bytes'] / GB:>6.2f}GB {r['generate_s']:>8.1f}s")
    data = {"bench": "fullsize", "random_weights": True, "machine": {"cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version()}, "seconds": a.seconds,
            "rows": rows, "date": time.strftime("%Y-%m-%d")}
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(data, indent=1))
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
