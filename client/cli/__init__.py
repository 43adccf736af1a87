"""The ``unimoe-audio`` command line: one verb per job, thin over :mod:`unimoe_audio.client.client`.

Layout (one module per job):

* ``parser``      - ``build_parser``, the common options, ``VERB_GROUPS`` (the verb-group registry)
* ``output``      - exit codes, ``CLIError``, JSON/table/notice printing, client-error mapping
* ``runner``      - settings and client for a verb, shared request fields, ``run_jobs`` (submit,
                    progress, results; Ctrl-C cancels the jobs this command started)
* ``daemon_cmds`` - serve, stop, status/ps, config
* ``generate``    - speak, music, score, batch
* ``jobs``        - jobs ls/wait/cancel
* ``voices``      - voices add/ls/rm
* ``models``      - models ls/pull/import/rm/check/make-tiny

Adding a verb group: write ``client/cli/<group>.py`` with ``register(sub)`` (it calls
``parser.add_verb(sub, name, help=...)``, which is ``add_parser`` plus the common options, and
``p.set_defaults(func=cmd_x)``; a verb that must not start a daemon also sets ``auto_start=False``), then add ``"<group>"`` to ``parser.VERB_GROUPS``.
Verbs raise ``output.CLIError(message, code)`` for errors and return an exit code.

Exit codes (also in docs/cli.md):

* 0 - success
* 1 - unexpected error (a bug; the message says what)
* 2 - bad input: bad arguments, unreadable files, invalid batch file, a request the daemon rejected
* 3 - daemon unavailable: none answers and none could be started, or it speaks another protocol version
* 4 - generation failed (the daemon accepted the job and it failed, or was cancelled by someone else)
* 5 - timed out: ``jobs wait --timeout S`` elapsed before the job ended (the job keeps running)
* 130 - interrupted with Ctrl-C (the jobs this command started are cancelled first)

argparse (stdlib) rather than typer: the CLI must import quickly and with the client's light
dependencies only, inside DAW/NLE embedded Pythons too, and argparse's exit status 2 for usage errors
is already the documented "bad input" code.
"""
from __future__ import annotations

import sys
from typing import Sequence

from .output import (  # noqa: F401  (re-exported for callers of the old single module)
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    CLIError,
    emit_json,
)
from .parser import build_parser

__all__ = ["main", "build_parser", "CLIError"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "json", False):
        args.progress = "never"
    try:
        code = args.func(args)
    except CLIError as exc:
        print(f"unimoe-audio: error: {exc}", file=sys.stderr, flush=True)
        code = exc.code
        if getattr(args, "json", False):
            emit_json({"status": "error", "error": str(exc), "exit_code": code})
    except KeyboardInterrupt:
        print("unimoe-audio: interrupted", file=sys.stderr, flush=True)
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        code = EXIT_OK
    return int(code)
