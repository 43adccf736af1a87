"""Job verbs: ``jobs ls``, ``jobs wait``, ``jobs cancel`` (any client's jobs, by id)."""
from __future__ import annotations

import argparse

from .output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    CLIError,
    describe_result,
    emit_json,
    jsonable,
    map_error,
    print_listing,
)
from .parser import add_action_verb, add_verb
from .runner import bars, client_for, settings_for


def cmd_jobs(args: argparse.Namespace) -> int:
    from .. import client as client_mod

    settings = settings_for(args)
    client = client_for(args, settings)
    action = args.jobs_action
    try:
        if action == "ls":
            jobs = client.jobs(states=args.state or None, limit=args.limit)
            return print_listing(args, [jsonable(j) for j in jobs], ["ID", "TASK", "STATE", "DONE", "OUTPUT", "TAG"],
                                 lambda d: [d["job_id"], d.get("task", ""), d.get("state", ""),
                                            f"{100 * float(d.get('fraction') or 0):.0f}%",
                                            (d.get("result") or {}).get("path", ""), d.get("tag") or ""],
                                 "no jobs")
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
                    except TimeoutError:
                        # The job is someone's render: waiting less is no reason to cancel it.
                        raise CLIError(f"jobs wait: job {jid} did not finish within {args.timeout:g} s "
                                       "(it keeps running; wait again or 'jobs cancel' it)", EXIT_TIMEOUT) from None
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
    jsub = add_action_verb(sub, "jobs", "the daemon's jobs: ls, wait, cancel", cmd_jobs, auto_start=False)
    q = add_verb(jsub, "ls", help="list jobs, newest first")
    q.add_argument("--state", action="append", choices=["queued", "running", "done", "failed", "cancelled"],
                   help="only jobs in this state (repeatable)")
    q.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    q = add_verb(jsub, "wait", help="wait for jobs to finish")
    q.add_argument("ids", nargs="+", metavar="ID")
    q.add_argument("--timeout", type=float, metavar="S",
                   help="give up after S seconds with exit 5 (the job keeps running)")
    q = add_verb(jsub, "cancel", help="cancel jobs")
    q.add_argument("ids", nargs="+", metavar="ID")
