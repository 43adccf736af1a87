"""Daemon verbs: ``serve``, ``stop``, ``status``/``ps``, ``config``."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from .. import models_store
from ..settings import ENV_PREFIX, settings_table
from .output import EXIT_INTERRUPTED, EXIT_OK, emit_json, jsonable, map_error, note, table, warn_if_tiny
from .parser import add_common, add_verb
from .runner import client_for, settings_for


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    env = dict(os.environ)
    for name in ("model", "device", "dtype", "host", "request_port", "control_port", "events_port", "osc_port", "keep_alive",
                 "backend", "ray_address"):
        v = getattr(args, name, None)
        if v is not None:
            env[f"{ENV_PREFIX}{name.upper()}"] = str(v)
    if args.load:
        env[f"{ENV_PREFIX}LOAD_AT_START"] = "1"
    if getattr(args, "home", None):
        env[f"{ENV_PREFIX}HOME"] = str(args.home)
    cmd = [sys.executable, "-m", "unimoe_audio.daemon"]
    if args.detach:
        from .. import client as client_mod

        try:
            pid = client_mod.start_daemon(settings, env=env, wait=True, timeout=args.connect_timeout)
        except client_mod.ClientError as exc:
            raise map_error(exc) from None
        if args.json:
            emit_json({"status": "running", "pid": pid, "connection_file": str(settings.connection_file)})
        else:
            print(f"daemon running (pid {pid}); connection file {settings.connection_file}")
        return EXIT_OK
    note(args, f"serving in the foreground (Ctrl-C stops); logs also in {settings.log_path}")
    from ..foreground import run_foreground

    # Ctrl-C, SIGTERM and SIGHUP reach the daemon, and serve waits for its clean stop (no orphan, no
    # stale connection file).
    rc, sig = run_foreground(cmd, env)
    if sig == signal.SIGINT:
        return rc or EXIT_INTERRUPTED
    return rc


def cmd_stop(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    client = client_for(args, settings)
    pid = client.pid
    try:
        client.shutdown(requeue_running=not args.finish, wait=args.connect_timeout)
    except Exception as exc:
        raise map_error(exc) from None
    if args.json:
        emit_json({"stopped": pid})
    else:
        print(f"daemon stopped (pid {pid})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    client = client_for(args, settings)
    try:
        st = client.status()
    except Exception as exc:
        raise map_error(exc) from None
    data = jsonable(st)
    warn_if_tiny(args, data.get("tiny"), data.get("tiny_reason"), bool(data.get("tiny_builtin", True)),
                 data.get("model_dir"))
    if args.json:
        emit_json(data)
        return EXIT_OK
    mem = data.get("memory") or {}
    hb = models_store.human_bytes
    model = data.get("model") or "-"
    if data.get("tiny"):
        model += ("  (built-in TINY random model serving: output is noise)" if data.get("tiny_builtin", True)
                  else "  (random weights, made by 'models make-tiny': output is noise)")
    quant = data.get("quant")
    device = " ".join(str(x) for x in (data.get("device"), data.get("dtype"),
                                       f"quant {quant}" if quant and quant != "none" else None) if x) \
        or "- (model not loaded)"
    dev_mem = "-"
    if mem.get("device_allocated_bytes") is not None:
        dev_mem = hb(mem["device_allocated_bytes"])
        if mem.get("device_total_bytes"):
            dev_mem += f" of {hb(mem['device_total_bytes'])}"
    rows = [
        ("daemon", f"{data.get('state')}  (pid {data.get('pid')}, up {_duration(data.get('uptime_s') or 0)}, "
                   f"version {data.get('version') or '?'}, protocol {data.get('protocol_version')})"),
        ("model", model),
        ("model folder", data.get("model_dir") or "-"),
        ("device", device),
        ("memory", f"process {hb(mem['rss_bytes']) if mem.get('rss_bytes') else '-'}, device {dev_mem}"
                   + (f", model estimate {hb(mem['estimate_bytes'])}" if mem.get("estimate_bytes") else "")
                   + (f" of {hb(mem['available_bytes'])} available ({mem.get('available_source')})"
                      if mem.get("available_bytes") else "")),
        ("memory peak", f"{hb(mem['peak_bytes'])} ({mem.get('peak_source')})" if mem.get("peak_bytes") else "-"),
        ("decode", (f"up to {mem['max_rows']} rows" if mem.get("max_rows") else "-")
                   + {True: ", batch-invariant", False: ", not batch-invariant"}.get(mem.get("batch_invariant"), "")
                   + (f", {mem['buckets']} buckets ({hb(mem['bucket_bytes'] or 0)}"
                      + (f" of {hb(mem['bucket_budget_bytes'])}" if mem.get("bucket_budget_bytes") else "")
                      + f", {mem.get('bucket_evictions') or 0} released)" if mem.get("buckets") is not None else "")),
        ("kernels", _kernels_line(data.get("kernels"))),
        ("queue", f"{data.get('queue_length', 0)} queued, {len(data.get('running') or [])} running"
                  + (f" ({', '.join(data['running'])})" if data.get("running") else "")),
        ("keep alive", "forever" if not data.get("keep_alive") else f"{data['keep_alive']:g} s idle"),
        ("output folder", data.get("output_dir") or "-"),
        ("osc port", data.get("osc_port") or "off"),
    ]
    backend = data.get("backend") or {}
    if backend.get("kind") == "ray":
        alive = [a for a in backend.get("actors") or [] if a.get("state") not in ("gone", "restarting")]
        rows.append(("backend", f"ray at {backend.get('address')} ({backend.get('state')}, "
                                f"{len(alive)} of {backend.get('wanted', len(alive))} engine actors"
                                + (", token auth" if backend.get("auth") else "") + ")"))
        if backend.get("state") == "waiting":
            rows.append(("", "waiting for Ray capacity: no engine actor is alive; queued jobs run when a node "
                             "joins"))
        for w in backend.get("warnings") or []:
            rows.append(("warning", w))
    if data.get("error"):
        err = data["error"]
        rows.append(("last error", f"{err.get('code')}: {err.get('message')}"))
    rows += [("warning", w) for w in data.get("warnings") or []]
    for key, value in rows:
        print(f"{key:<14} {value}")
    if backend.get("actors"):
        print()
        print(table([[a["name"], a.get("state") or "-", a.get("node") or "-", f"{a.get('host') or '-'}:{a.get('pid') or '-'}",
                      " ".join(x for x in (a.get("device"), a.get("dtype"),
                                           a.get("quant") if a.get("quant") not in (None, "none") else None) if x) or "-",
                      _actor_model(a), str(len(a.get("running") or [])), str(a.get("jobs_done", 0)),
                      str(a.get("restarts", 0))]
                     for a in backend["actors"]],
                    ["ACTOR", "STATE", "NODE", "HOST:PID", "DEVICE", "MODEL", "RUNNING", "DONE", "RESTARTS"]))
    return EXIT_OK


def _actor_model(a: dict) -> str:
    """What an engine actor serves: its model's name and hash prefix, and TINY for random weights."""
    if not a.get("model_hash"):
        return "-"
    return f"{a.get('model_id') or '?'} {str(a['model_hash'])[:8]}" + (" TINY" if a.get("tiny") else "")


def _kernels_line(rep: dict | None) -> str:
    """The kernel report (model/kernels.py) in one line; the CLI never imports torch."""
    if not rep:
        return "-"
    parts = [f"{cls} " + ", ".join(f"{k} {n}" for k, n in sorted(ks.items())) for cls, ks in (rep.get("linears") or {}).items()]
    if rep.get("experts_decode"):
        inv = rep.get("experts_decode_invariant")
        parts.append(f"experts {rep['experts_decode']}" + (f" ({inv} when batch-invariant)"
                                                             if inv and inv != rep["experts_decode"] else ""))
    line = "; ".join(parts) or "-"
    if rep.get("fallbacks"):
        reasons = rep.get("fallback_reasons") or []
        line += f"; {rep['fallbacks']} fell back" + (f" ({reasons[0]})" if reasons else "")
    return line


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    values = settings.model_dump(mode="json")
    rows_out: list[dict[str, Any]] = []
    for row in settings_table():
        name = row["name"]
        rows_out.append({**row, "value": values.get(name), "from_env": row["env"] in os.environ})
    derived = {
        "config_file": str(settings.config_file),
        "models_path": str(settings.models_path),
        "voices_path": str(settings.voices_path),
        "output_path": str(settings.output_path),
        "log_path": str(settings.log_path),
        "connection_file": str(settings.connection_file),
        "queue_db_path": str(settings.queue_db_path),
    }
    if args.json:
        emit_json({"settings": rows_out, "paths": derived})
        return EXIT_OK
    rows = []
    for r in rows_out:
        v = r["value"]
        shown = "-" if v is None or v == [] else (", ".join(map(str, v)) if isinstance(v, list) else str(v))
        rows.append([r["name"], shown + (" (env)" if r["from_env"] else ""), r["env"], r["help"]])
    print(table(rows, ["NAME", "VALUE", "ENVIRONMENT", "HELP"]))
    print()
    for k, v in derived.items():
        print(f"{k:<16} {v}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the daemon (foreground, or --detach)")
    add_common(p, remote=False)
    p.add_argument("--detach", action="store_true", help="start in the background and return once it answers")
    p.add_argument("--model", help="model to serve (a name under the models folder, a path, or 'tiny')")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--host", help="interface to listen on; beyond loopback needs curve_allow (docs/remote.md)")
    p.add_argument("--request-port", type=int)
    p.add_argument("--control-port", type=int)
    p.add_argument("--events-port", type=int)
    p.add_argument("--osc-port", type=int)
    p.add_argument("--keep-alive", type=float, metavar="S")
    p.add_argument("--load", action="store_true", help="load the model now, not on first use")
    p.add_argument("--backend", choices=["local", "ray"], help="where generation runs (docs/ray.md)")
    p.add_argument("--ray-address", metavar="auto|HOST:PORT", help="the Ray cluster for --backend ray")
    p.set_defaults(func=cmd_serve)

    p = add_verb(sub, "stop", help="stop the daemon (running jobs run again at next start)")
    p.add_argument("--finish", action="store_true", help="let the running job finish first")
    p.set_defaults(func=cmd_stop, auto_start=False)

    for name in ("status", "ps"):
        p = add_verb(sub, name, help="daemon status: loaded model, device, memory, queue (and Ray actors)")
        p.set_defaults(func=cmd_status, auto_start=False)

    p = add_verb(sub, "config", help="the settings table: values and environment variables")
    p.set_defaults(func=cmd_config)
