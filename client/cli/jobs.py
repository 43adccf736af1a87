"""Job verbs: ``jobs ls``, ``jobs wait``, ``jobs cancel`` (any client's jobs, by id)."""
from __future__ import annotations

import argparse

from .output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    CLIError,
    describe_result,
    emit_json,
    jsonable,
    map_error,
    table,
)
from .parser import add_common
from .runner import bars, client_for, settings_for


def cmd_jobs(args: argparse.Namespace) -> int:
    from .. import client as client_mod

    settings = settings_for(args)
    client = client_for(args, settings)
    action = args.jobs_action
    try:
        if action == "ls":
            jobs = client.jobs(states=args.state or None, limit=args.limit)
            data = [jsonable(j) for j in jobs]
            if args.json:
                emit_json(data)
                return EXIT_OK
            if not data:
                print("no jobs")
                return EXIT_OK
            rows = [[d["job_id"], d.get("task", ""), d.get("state", ""),
                     f"{100 * float(d.get('fraction') or 0):.0f}%", (d.get("result") or {}).get("path", ""),
                     d.get("tag") or ""]
                    for d in data]
            print(table(rows, ["ID", "TASK", "STATE", "DONE", "OUTPUT", "TAG"]))
            return EXIT_OK
        if action == "cancel":
            out = []
            for jid in args.ids:
                out.append(jsonable(client.cancel(jid)))
            if args.json:
                emit_json(out if len(out) != 1 else out[0])
            else:
                for jid in args.ids:
                    print(f"cancel requested: {jid}")
            return EXIT_OK
        if action == "wait":
            results = []
            failures = 0
            with bars(args) as jb:
                for jid in args.ids:
                    jb.add(jid, jid[:8])
                    try:
                        res = client.wait(jid, timeout=args.timeout,
                                          on_progress=lambda ev, _b=jb: _b.update(ev.job_id, ev.fraction, ev.stage))
                        results.append({"label": jid, **jsonable(res)})
                    except client_mod.GenerationFailed as exc:
                        failures += 1
                        results.append({"label": jid, "job": jid, "status": "failed", "error": str(exc)})
            if args.json:
                emit_json(results if len(results) != 1 else results[0])
            else:
                for r in results:
                    print(describe_result(r) if r.get("status") != "failed" else f"{r['label']}: failed: {r['error']}")
            return EXIT_FAILED if failures else EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # waiting on someone else's job: leave it running
    except client_mod.ClientError as exc:
        raise map_error(exc) from None
    raise CLIError(f"unknown jobs action {action!r}", EXIT_BAD_INPUT)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="the daemon's jobs: ls, wait, cancel")
    add_common(p)
    jsub = p.add_subparsers(dest="jobs_action", metavar="ACTION", required=True)
    q = jsub.add_parser("ls", help="list jobs, newest first")
    add_common(q)
    q.add_argument("--state", action="append", choices=["queued", "running", "done", "failed", "cancelled"],
                   help="only jobs in this state (repeatable)")
    q.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    q = jsub.add_parser("wait", help="wait for jobs to finish")
    add_common(q)
    q.add_argument("ids", nargs="+", metavar="ID")
    q.add_argument("--timeout", type=float, metavar="S")
    q = jsub.add_parser("cancel", help="cancel jobs")
    add_common(q)
    q.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_jobs, auto_start=False)
