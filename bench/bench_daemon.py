"""Daemon request round trip: submit -> reply and submit -> ``accepted``, over ZeroMQ and over OSC, with
the model idle and with the model busy generating. Starts a real daemon on the tiny model in a temporary
UNIMOE_AUDIO_HOME.

    python bench/bench_daemon.py [--n 200] [--out bench/results/daemon-cpu.json]

Prints a table; writes the JSON results. Targets: p50 under 2 ms (ZeroMQ) and 5 ms (OSC).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

ROOT = Path(__file__).resolve().parent.parent

from unimoe_audio.client import channel, connection, wire  # noqa: E402
from unimoe_audio.client.settings import load_settings  # noqa: E402


def _free(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[k]


def start_daemon(home: Path) -> tuple[subprocess.Popen, connection.ConnectionInfo, dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNIMOE_AUDIO_")}
    env.update(UNIMOE_AUDIO_HOME=str(home), UNIMOE_AUDIO_MODEL="tiny", UNIMOE_AUDIO_DEVICE="cpu",
               UNIMOE_AUDIO_OSC_PORT=str(_free(socket.SOCK_DGRAM)), UNIMOE_AUDIO_KEEP_ALIVE="0",
               UNIMOE_AUDIO_MAX_QUEUE="100000", UNIMOE_AUDIO_LOG_LEVEL="INFO", UNIMOE_AUDIO_LOAD_AT_START="1")
    os.environ.update({k: v for k, v in env.items() if k.startswith("UNIMOE_AUDIO_")})
    settings = load_settings()
    proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.daemon", "--quiet"], env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            info = connection.read_connection_file(settings.connection_file)
            if info.pid == proc.pid:
                return proc, info, env
        except wire.ProtocolError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        time.sleep(0.05)
    raise SystemExit("daemon did not start")


def wait_ready(ch: channel.Channel, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ch.request("status")
        if st["state"] == "ready":
            return st
        if st["state"] == "error":
            raise SystemExit(f"model failed to load: {st.get('error')}")
        time.sleep(0.1)
    raise SystemExit("model did not load")


def wait_final(sub: channel.Subscription, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = sub.recv(timeout=1)
        if m is not None and m.content.get("job_id") == job_id and m.msg_type in ("done", "failed", "cancelled"):
            return
    raise SystemExit(f"job {job_id} did not finish")


SUBMIT = {"spec": {"task": "music", "caption": "bench", "length": {"seconds": 1.0}}}


def zmq_round(ch: channel.Channel, sub: channel.Subscription, busy: bool) -> tuple[float, float, str]:
    """(submit->reply ms, submit->accepted ms, job id); the job is cancelled right after."""
    t0 = time.perf_counter()
    job = ch.request("submit", SUBMIT)["job_id"]
    t_reply = time.perf_counter()
    while True:
        m = sub.recv(timeout=10)
        if m is None:
            raise SystemExit("no accepted event")
        if m.msg_type == "accepted" and m.content["job_id"] == job:
            t_acc = time.perf_counter()
            break
    ch.request("cancel", {"job_id": job}, control=True)
    if not busy:
        wait_final(sub, job)
    return (t_reply - t0) * 1e3, (t_acc - t0) * 1e3, job


def osc_round(sock: socket.socket, port: int, listen_port: int, ch: channel.Channel, sub: channel.Subscription,
              busy: bool) -> float:
    b = OscMessageBuilder("/unimoe/music")
    for a, t in (("bench", "s"), ("seconds", "s"), (1.0, "f"), ("reply_port", "s"), (listen_port, "i")):
        b.add_arg(a, t)
    dgram = b.build().dgram
    t0 = time.perf_counter()
    sock.sendto(dgram, ("127.0.0.1", port))
    while True:
        data, _ = sock.recvfrom(65536)
        msg = OscMessage(data)
        if msg.address == "/unimoe/accepted":
            t = (time.perf_counter() - t0) * 1e3
            job = msg.params[0]
            break
        if msg.address == "/unimoe/error":
            raise SystemExit(f"OSC error: {msg.params}")
    ch.request("cancel", {"job_id": job}, control=True)
    if not busy:
        wait_final(sub, job)
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="requests per measurement")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "daemon-cpu.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="unimoe-bench-") as tmp:
        proc, info, env = start_daemon(Path(tmp))
        try:
            ch = channel.Channel(info, timeout=30)
            sub = ch.subscribe(["job.", "daemon"])
            time.sleep(0.3)
            wait_ready(ch)
            osc_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            osc_sock.bind(("127.0.0.1", 0))
            osc_sock.settimeout(10)
            listen = osc_sock.getsockname()[1]
            rows = []
            for busy in (False, True):
                long_job = None
                if busy:
                    long_job = ch.request("submit", {"spec": {"task": "music", "caption": "keep busy",
                                                              "length": {"seconds": 600}}})["job_id"]
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:  # wait until it generates
                        m = sub.recv(timeout=5)
                        if m is not None and m.content.get("job_id") == long_job and m.msg_type == "progress":
                            break
                for _ in range(10):  # warm up
                    zmq_round(ch, sub, busy)
                reply, acc = [], []
                for _ in range(args.n):
                    r, a, _ = zmq_round(ch, sub, busy)
                    reply.append(r)
                    acc.append(a)
                osc = [osc_round(osc_sock, info.osc_port, listen, ch, sub, busy) for _ in range(args.n)]
                state = ch.request("status")["state"]
                if busy:
                    assert state == "busy", state
                    ch.request("cancel", {"job_id": long_job}, control=True)
                    wait_final(sub, long_job)
                label = "busy" if busy else "idle"
                for name, xs in (("zmq submit->reply", reply), ("zmq submit->accepted", acc),
                                 ("osc submit->accepted", osc)):
                    rows.append({"transport": name, "model": label, "n": len(xs), "p50_ms": round(_pct(xs, 50), 3),
                                 "p99_ms": round(_pct(xs, 99), 3), "mean_ms": round(statistics.fmean(xs), 3),
                                 "max_ms": round(max(xs), 3)})
            ch.request("shutdown", control=True)
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    print(f"{'round trip':<24}{'model':<7}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'max ms':>10}")
    for r in rows:
        print(f"{r['transport']:<24}{r['model']:<7}{r['n']:>6}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}"
              f"{r['mean_ms']:>10.3f}{r['max_ms']:>10.3f}")
    result = {
        "bench": "daemon round trip",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "zmq": zmq.zmq_version(), "pyzmq": zmq.__version__},
        "model": "tiny (CPU)",
        "targets_p50_ms": {"zmq": 2.0, "osc": 5.0},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
