"""How long an idle daemon takes to stop: from the ``shutdown`` request to the process gone, and the
whole ``unimoe-audio stop`` command. Side by side in one run: the daemon as shipped
(``python -m unimoe_audio.daemon``: it ends with ``os._exit`` once everything is closed) and the same
daemon ending through the interpreter's normal teardown (what it did before; torch's finalization).

    python bench/bench_stop.py [--n 5] [--out bench/results/stop-cpu.json]

Starts real daemons on the tiny model (never loaded: no job is sent) in temporary UNIMOE_AUDIO_HOMEs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unimoe_audio.client import channel, connection, wire
from unimoe_audio.client.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
TEARDOWN = "import sys; from unimoe_audio.daemon.__main__ import main; sys.exit(main())"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL="tiny", UNIMOE_AUDIO_DEVICE="cpu",
               UNIMOE_AUDIO_OSC_PORT="0", OMP_NUM_THREADS="1")
    return env


def _start(home: Path, argv: list[str]) -> tuple[subprocess.Popen, connection.ConnectionInfo, dict[str, str]]:
    env = _env(home)
    proc = subprocess.Popen([sys.executable, *argv, "--quiet"], env=env)
    saved = dict(os.environ)
    try:
        os.environ.update({k: v for k, v in env.items() if k.startswith("UNIMOE_AUDIO_")})
        conn = load_settings().connection_file
    finally:
        os.environ.clear()
        os.environ.update(saved)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode}")
        try:
            info = connection.read_connection_file(conn)
            if info.pid == proc.pid:
                return proc, info, env
        except wire.ProtocolError:
            pass
        time.sleep(0.02)


def shutdown_to_exit(argv: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc, info, _ = _start(Path(tmp), argv)
        with channel.Channel(info, timeout=60) as ch:
            t0 = time.perf_counter()
            ch.request("shutdown", control=True)
            proc.wait()
            return time.perf_counter() - t0


def cli_stop(argv: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        proc, _, env = _start(Path(tmp), argv)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "unimoe_audio.client", "stop"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        proc.wait()
        return dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "stop-cpu.json"))
    args = ap.parse_args()
    variants = {"shipped (os._exit)": ["-m", "unimoe_audio.daemon"], "interpreter teardown": ["-c", TEARDOWN]}
    rows = []
    for name, argv in variants.items():
        exits, stops = [], []
        for _ in range(args.n):  # interleaving is not needed: each sample starts a fresh process
            exits.append(shutdown_to_exit(argv))
            stops.append(cli_stop(argv))
        rows.append({"variant": name, "shutdown_to_exit_s": statistics.median(exits),
                     "cli_stop_s": statistics.median(stops), "samples": args.n})
    base = rows[1]["shutdown_to_exit_s"]
    print(f"{'variant':<24} {'shutdown->exit (median)':>24} {'unimoe-audio stop (median)':>28} {'ratio':>7}")
    for r in rows:
        r["ratio_vs_teardown"] = r["shutdown_to_exit_s"] / base
        print(f"{r['variant']:<24} {r['shutdown_to_exit_s'] * 1e3:>21.0f} ms {r['cli_stop_s'] * 1e3:>25.0f} ms "
              f"{r['ratio_vs_teardown']:>7.2f}")
    out = {"machine": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
           "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows,
           "note": "idle daemon, tiny model never loaded; a shared, loaded 2-core machine inflates the CLI "
                   "figure (most of it is the CLI's own start-up: Python and imports)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
