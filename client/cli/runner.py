"""Running jobs from the command line: settings and client for a verb, the request fields shared by the
generating verbs, and ``run_jobs`` (submit, progress, results, Ctrl-C cancels what this command started)."""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from ..settings import Settings, load_settings
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
    note,
    warn_if_tiny_daemon,
)


def settings_for(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "home", None):
        overrides["home"] = args.home
    if getattr(args, "remote", None):
        overrides["remote"] = args.remote
    try:
        return load_settings(**overrides)
    except Exception as exc:  # pydantic ValidationError, bad config.toml
        raise CLIError(f"invalid settings: {exc}", EXIT_BAD_INPUT) from None


def client_for(args: argparse.Namespace, settings: Settings):
    """A connected client; starts a daemon unless ``--no-start`` or the verb says ``auto_start=False``."""
    from .. import client as client_mod

    def on_start(message: str) -> None:
        note(args, message)

    try:
        return client_mod.Client(
            settings, auto_start=not args.no_start and getattr(args, "auto_start", True), notice=on_start,
            connect_timeout=args.connect_timeout,
        )
    except client_mod.ClientError as exc:
        raise map_error(exc) from None


def bars(args: argparse.Namespace):
    from ..progress import JobBars

    mode = getattr(args, "progress", "auto")
    enabled = mode != "never" and not args.quiet
    return JobBars(enabled=enabled, force=(mode == "always"))


def audio_options(args: argparse.Namespace) -> dict[str, Any]:
    """The request fields of the shared generating options (``parser.add_gen_options``) that were given."""
    out: dict[str, Any] = {}
    for name in ("sample_rate", "channels", "bit_depth", "seed", "cfg_scale", "temperature", "top_p", "top_k",
                 "priority", "tag"):
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    loud = getattr(args, "loudness", None)
    if loud is not None:
        out["loudness"] = loud
    out.update(timeline_options(args))
    return out


def timeline_options(args: argparse.Namespace) -> dict[str, Any]:
    """Spotting and frame-length fields (``--record-in``, ``--fps``, ``--frames``, iXML notes) given."""
    out: dict[str, Any] = {}
    for name in ("record_in", "fps", "frames", "project", "scene", "take", "note"):
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    if "frames" in out and "fps" not in out:
        raise CLIError("--frames needs --fps (the timeline rate, e.g. 24000/1001)", EXIT_BAD_INPUT)
    if "frames" in out and getattr(args, "seconds", None) is not None:
        raise CLIError("give --seconds or --frames, not both", EXIT_BAD_INPUT)
    if "fps" in out and "frames" not in out and "record_in" not in out:
        raise CLIError("--fps goes with --record-in or --frames", EXIT_BAD_INPUT)
    return out


def abs_output(path: str | None) -> str | None:
    """The absolute output path. No folder is created here: the daemon checks the path against its
    allowed roots at submit and creates the folder only when it writes the accepted job's file."""
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.suffix == "":
        raise CLIError(f"output {path!r} needs a file name with a suffix, e.g. out.wav", EXIT_BAD_INPUT)
    if p.suffix.lower() != ".wav":
        raise CLIError(f"output {path!r}: only .wav is written", EXIT_BAD_INPUT)
    return str(p.resolve())


def run_jobs(
    args: argparse.Namespace,
    client: Any,
    submissions: list[tuple[str, str, dict[str, Any]]],
) -> int:
    """Submit (label, kind, fields) requests, wait for all with progress bars, print results.

    Ctrl-C cancels every job this call started and still running, then exits 130.
    """
    from .. import client as client_mod

    started: list[Any] = []
    results: list[dict[str, Any]] = []
    failures = 0
    try:
        for label, kind, fields in submissions:
            if fields.get("output"):
                fields = {**fields, "overwrite": True}  # -o FILE means FILE: the daemon replaces an old one
            try:
                job = client.submit(kind, **fields)
            except client_mod.ClientError as exc:
                err = map_error(exc)
                if len(submissions) == 1:
                    raise err from None
                failures += 1
                results.append({"label": label, "status": "rejected", "error": str(err), "code": err.code})
                continue
            started.append((label, job))
        if started:
            warn_if_tiny_daemon(args, client)
        if args.no_wait:
            out = [{"label": label, "job": job.id, "status": "queued"} for label, job in started]
            if args.json:
                emit_json(out if len(submissions) > 1 else out[0])
            else:
                for row in out:
                    print(row["job"])
            return EXIT_OK if not failures else EXIT_BAD_INPUT
        with bars(args) as jb:
            for label, job in started:
                jb.add(job.id, label)
            for label, job in started:
                try:
                    res = client.wait(job.id, on_progress=lambda ev, _b=jb: _b.update(ev.job_id, ev.fraction, ev.stage))
                except client_mod.GenerationFailed as exc:
                    failures += 1
                    jb.update(job.id, stage="failed")
                    results.append({"label": label, "job": job.id, "status": "failed", "error": str(exc)})
                    continue
                jb.update(job.id, 1.0, "done")
                results.append({"label": label, **jsonable(res)})
    except KeyboardInterrupt:
        cancel_started(args, client, started)
        if args.json:
            emit_json({"status": "interrupted", "cancelled": [job.id for _, job in started]})
        return EXIT_INTERRUPTED
    except client_mod.ClientError as exc:
        raise map_error(exc) from None
    if args.json:
        emit_json(results if len(submissions) > 1 else results[0])
    else:
        for r in results:
            if r.get("status") in ("failed", "rejected"):
                print(f"{r['label']}: {r['status']}: {r.get('error')}", file=sys.stderr)
                continue
            print(describe_result(r))
    if failures:
        rejected = any(r.get("status") == "rejected" for r in results)
        return EXIT_BAD_INPUT if rejected and failures == sum(1 for r in results if r.get("status") == "rejected") and not any(
            r.get("status") == "failed" for r in results
        ) else EXIT_FAILED
    return EXIT_OK


def cancel_started(args: argparse.Namespace, client: Any, started: list[Any]) -> None:
    # A second Ctrl-C while cancelling should not leave a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for _, job in started:
        try:
            reply = client.cancel(job.id)
            if reply.was in ("done", "failed", "cancelled"):
                continue  # it had already ended
            note(args, f"cancelled job {job.id}")
        except Exception as exc:  # daemon gone, job already finished
            note(args, f"could not cancel job {job.id}: {exc}")
