"""What the command line prints: exit codes, the error type every verb raises, JSON, tables, notices.

Human-readable results go to stdout, progress bars and notices to stderr. ``--json`` prints exactly one
JSON document on stdout, for scripts.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_FAILED = 4
EXIT_TIMEOUT = 5  # `jobs wait --timeout S` ran out; the job keeps running
EXIT_BUSY = 6  # the daemon answered 'busy' (its queue is full): retry later
EXIT_INTERRUPTED = 130

TINY_WARNING = "warning: the daemon is serving the built-in TINY model (random weights): the output is noise."


class CLIError(Exception):
    """Raised by verbs; ``main`` prints ``unimoe-audio: error: MESSAGE`` and exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


def jsonable(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(obj), indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def note(args: argparse.Namespace, message: str) -> None:
    """A notice on stderr (suppressed by --quiet)."""
    if not getattr(args, "quiet", False):
        print(f"unimoe-audio: {message}", file=sys.stderr, flush=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    cols = [header] + rows
    widths = [max(len(str(r[i])) for r in cols) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in cols]
    return "\n".join(lines)


def print_listing(args: argparse.Namespace, items: list[dict[str, Any]], header: list[str],
                  row: Callable[[dict[str, Any]], list[str]], empty: str) -> int:
    """An ``ls`` verb's output: the items as one JSON document with --json, ``empty`` when there are
    none, else a table of ``row(item)`` under ``header``."""
    if args.json:
        emit_json(items)
    elif not items:
        print(empty)
    else:
        print(table([row(i) for i in items], header))
    return EXIT_OK


def describe_result(r: dict[str, Any]) -> str:
    """One line for a finished job: its file and format."""
    path = r.get("output") or r.get("path") or "?"
    bits = []
    if r.get("seconds") is not None:
        bits.append(f"{float(r['seconds']):.2f} s")
    if r.get("sample_rate"):
        bits.append(f"{r['sample_rate']} Hz")
    if r.get("channels"):
        bits.append(f"{r['channels']} ch")
    if r.get("bit_depth"):
        bits.append(f"{r['bit_depth']}-bit")
    if r.get("seed") is not None:
        bits.append(f"seed {r['seed']}")
    return f"{path}" + (f"  ({', '.join(bits)})" if bits else "")


def map_error(exc: BaseException) -> CLIError:
    """A client exception as the CLIError with its documented exit code."""
    from .. import client as client_mod

    if isinstance(exc, CLIError):
        return exc
    if isinstance(exc, client_mod.Busy):
        return CLIError(str(exc), EXIT_BUSY)
    if isinstance(exc, client_mod.DaemonUnavailable):
        return CLIError(str(exc), EXIT_UNAVAILABLE)
    if isinstance(exc, client_mod.BadRequest):
        return CLIError(str(exc), EXIT_BAD_INPUT)
    if isinstance(exc, client_mod.GenerationFailed):
        return CLIError(str(exc), EXIT_FAILED)
    if isinstance(exc, client_mod.ClientError):
        return CLIError(str(exc), EXIT_ERROR)
    return CLIError(f"{type(exc).__name__}: {exc}", EXIT_ERROR)


def warn_if_tiny(args: argparse.Namespace, tiny: bool | None, reason: str | None = None, builtin: bool = True,
                 model_dir: str | None = None) -> None:
    """The first-run path: say clearly (once, on stderr) that the output will be noise, and why.

    ``builtin``: no real model is installed, so the built-in tiny model serves (fix: pull one). Otherwise
    the configured folder itself holds random weights (made by 'models make-tiny'): pulling again would
    not help, choosing another model would."""
    if tiny and not getattr(args, "_tiny_warned", False):
        args._tiny_warned = True
        if builtin:
            lines = [TINY_WARNING]
            if reason:
                lines.append(f"  why: {reason}")
            if not reason or "model = 'tiny'" not in reason:
                lines.append("  fix: 'unimoe-audio models pull' downloads UniMoE-Audio (or 'models import DIR')")
        else:
            lines = [f"warning: the daemon is serving random weights from {model_dir or 'its model folder'} "
                     "(a 'models make-tiny' model): the output is noise.",
                     "  fix: point UNIMOE_AUDIO_MODEL at a real model ('unimoe-audio models ls' lists them)"]
        print("\n".join(lines), file=sys.stderr, flush=True)


def warn_if_tiny_daemon(args: argparse.Namespace, client: Any) -> None:
    if getattr(args, "_tiny_warned", False):
        return
    try:
        st = client.status()
    except Exception:
        return
    warn_if_tiny(args, st.tiny, st.tiny_reason, getattr(st, "tiny_builtin", True), st.model_dir)
