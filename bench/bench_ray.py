"""What the Ray backend costs and gives, on a local Ray cluster (head + one-CPU worker nodes) and the tiny
model (random weights): the per-job overhead Ray adds over the local backend, and the aggregate throughput
of the same burst of jobs with the local backend, one actor and two actors, measured side by side in one run.

    python bench/bench_ray.py [--jobs 8] [--seconds 0.5] [--out bench/results/ray-cpu.json]

On a 2-core machine two one-CPU actors share the cores the daemon also uses: expect throughput about flat.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the real daemon and cluster harnesses the tests use

from _daemon_harness import DaemonProc, collect, music, wait_final, wait_for  # noqa: E402
from _ray_cluster import RayCluster  # noqa: E402


def _ready(ch, actors: int) -> None:
    def ok():
        st = ch.request("status", {})
        if actors == 0:
            return st["state"] == "ready"
        acts = st["backend"]["actors"]
        return len(acts) == actors and all(a["state"] == "ready" for a in acts)
    wait_for(ok, 600, 0.5, "engines ready")


def run_config(home: Path, name: str, seconds: float, jobs: int, **settings) -> dict:
    d = DaemonProc(home, keep_alive=0, load_at_start=1, max_batch=4, **settings).start()
    try:
        ch = d.channel(timeout=120)
        _ready(ch, settings.get("ray_actors", 0) if settings.get("backend") == "ray" else 0)
        sub = ch.subscribe(["job."])
        time.sleep(0.3)
        # Warm-up job, then sequential short jobs: wall time submit -> done, one at a time.
        wait_final(sub, ch.request("submit", music(seconds))["job_id"], timeout=600)
        # Overhead = wall time minus the engine's own time (the sidecar's timings), so that the engine's
        # speed, which the machine's load moves, drops out of the comparison.
        one, overhead = [], []
        for _ in range(7):
            t0 = time.perf_counter()
            final, _ = wait_final(sub, ch.request("submit", music(seconds))["job_id"], timeout=600)
            wall = time.perf_counter() - t0
            engine = json.loads(Path(final.content["sidecar"]).read_text())["timings"]["total"]
            one.append(wall)
            overhead.append(wall - engine)
        # A burst of jobs submitted together: aggregate audio seconds per wall second.
        t0 = time.perf_counter()
        ids = [ch.request("submit", music(seconds, caption=f"cue {i}"))["job_id"] for i in range(jobs)]
        collect(sub, ids, timeout=1800)
        wall = time.perf_counter() - t0
        sub.close()
        return {"config": name, "job_s_median": statistics.median(one),
                "non_engine_ms_median": statistics.median(overhead) * 1000, "burst_wall_s": wall,
                "burst_x_real_time": jobs * seconds / wall}
    finally:
        d.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "ray-cpu.json"))
    a = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cluster = RayCluster(home).start(workers=2)
    try:
        rows = [run_config(home, "local", a.seconds, a.jobs)]
        for n in (1, 2):
            rows.append(run_config(home, f"ray, {n} actor{'s' if n > 1 else ''}", a.seconds, a.jobs, backend="ray",
                                   ray_address=cluster.address, ray_actors=n))
    finally:
        cluster.stop()
    base = rows[0]["non_engine_ms_median"]
    for r in rows:
        r["ray_overhead_ms"] = r["non_engine_ms_median"] - base
    print(f"{'config':<16} {'job (s)':>9} {'outside engine (ms)':>20} {'added by Ray (ms)':>18} "
          f"{'burst wall (s)':>15} {'x real time':>12}")
    for r in rows:
        print(f"{r['config']:<16} {r['job_s_median']:9.3f} {r['non_engine_ms_median']:20.1f} {r['ray_overhead_ms']:18.1f} "
              f"{r['burst_wall_s']:15.2f} {r['burst_x_real_time']:12.3f}")
    out = {"bench": "ray", "machine": platform.machine(), "processor": platform.processor(),
           "python": platform.python_version(), "model": "tiny (random weights)", "jobs": a.jobs,
           "seconds_per_job": a.seconds, "rows": rows, "date": time.strftime("%Y-%m-%d")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
