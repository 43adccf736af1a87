"""Remote workstation path: fetching a finished job's WAV over CurveZMQ (chunked, checked by sha256,
renamed into place) at several chunk sizes, next to a plain local file copy of the same file; and how
long a refused key takes to get its named error. One real daemon on the tiny model, listening beyond
loopback (0.0.0.0, Curve on) and reached through a profile at 127.0.0.1, in a temporary folder.

    python bench/bench_remote.py [--seconds 20] [--repeat 5] [--out bench/results/remote-cpu.json]

Prints a table; writes the JSON results. Throughput is over loopback (no network in the way): it is the
protocol's own cost (Curve encryption, chunking, hashing), an upper bound for a real LAN.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

ROOT = Path(__file__).resolve().parent.parent

from unimoe_audio.client import channel, curve, remote, wire  # noqa: E402
from unimoe_audio.client.client import Client  # noqa: E402
from unimoe_audio.client.settings import load_settings  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the generated take")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "remote-cpu.json"))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="unimoe-bench-remote-"))
    host, ws = tmp / "host", tmp / "ws"
    pub, sec = curve.client_keypair(load_settings(home=ws).config_path)
    keyfile = tmp / "ws.public"
    keyfile.write_bytes(pub)
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(UNIMOE_AUDIO_HOME=str(host), UNIMOE_AUDIO_MODEL="tiny", UNIMOE_AUDIO_DEVICE="cpu",
               UNIMOE_AUDIO_HOST="0.0.0.0", UNIMOE_AUDIO_CURVE_ALLOW=str(keyfile), UNIMOE_AUDIO_OSC_PORT="0",
               UNIMOE_AUDIO_REQUEST_PORT=str(channel.free_port()), UNIMOE_AUDIO_CONTROL_PORT=str(channel.free_port()),
               UNIMOE_AUDIO_EVENTS_PORT=str(channel.free_port()), UNIMOE_AUDIO_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.daemon", "--quiet"], env=env)
    conn = host / "run" / "daemon.json"
    rows: list[dict] = []
    try:
        deadline = time.monotonic() + 300
        while not conn.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the daemon did not start")
            time.sleep(0.1)
        profile = tmp / "p.json"
        remote.write_profile(profile, remote.export_profile(conn, "127.0.0.1"))
        ws_settings = load_settings(home=ws, remote="bench")
        remote.install_profile(ws_settings, "bench", profile)
        with Client(ws_settings, auto_start=False, timeout=120) as c:
            res = c.music("bench", seconds=args.seconds, sample_rate=48000, channels=2, bit_depth=24).wait()
            size = Path(res.host_path or res.path).stat().st_size
            for chunk in (256 << 10, 1 << 20, 4 << 20):
                times = []
                for i in range(args.repeat):
                    t0 = time.perf_counter()
                    remote.receive_file(lambda req: c.channel.request_raw("fetch", req), res.job_id, tmp / "got" / f"{chunk}-{i}.wav", chunk=chunk)
                    times.append(time.perf_counter() - t0)
                med = statistics.median(times)
                rows.append({"what": f"fetch over Curve, {chunk >> 10} KiB chunks", "bytes": size,
                             "median_s": med, "mb_per_s": size / med / 1e6})
            times = []
            for i in range(args.repeat):
                t0 = time.perf_counter()
                shutil.copyfile(res.host_path, tmp / "got" / f"copy-{i}.wav")
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            rows.append({"what": "local file copy (baseline)", "bytes": size, "median_s": med,
                         "mb_per_s": size / med / 1e6})
        info = remote.load_profile(ws_settings, "bench")
        times = []
        for _ in range(args.repeat):
            ch = channel.Channel(info, timeout=60, client_keys=zmq.curve_keypair())
            t0 = time.perf_counter()
            try:
                ch.request("ping")
            except wire.WireError as exc:
                assert exc.code == "not_allowed", exc
            times.append(time.perf_counter() - t0)
            ch.close()
        rows.append({"what": "unknown key -> not_allowed error", "bytes": 0, "median_s": statistics.median(times),
                     "mb_per_s": None})
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{'what':<44} {'bytes':>10} {'median ms':>10} {'MB/s':>8}")
    for r in rows:
        mbs = f"{r['mb_per_s']:.1f}" if r["mb_per_s"] else "-"
        print(f"{r['what']:<44} {r['bytes']:>10} {r['median_s'] * 1e3:>10.1f} {mbs:>8}")
    out = {"machine": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
           "seconds": args.seconds, "repeat": args.repeat, "model": "tiny (random weights)", "rows": rows,
           "note": "loopback; the machine was shared with other jobs"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
