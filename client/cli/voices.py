"""Voice verbs: ``voices add``, ``voices ls``, ``voices rm`` (saved reference voices in the daemon)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .output import EXIT_BAD_INPUT, EXIT_OK, CLIError, emit_json, jsonable, map_error, table
from .parser import add_common
from .runner import client_for, settings_for


def cmd_voices(args: argparse.Namespace) -> int:
    from .. import client as client_mod

    settings = settings_for(args)
    action = args.voices_action
    if action == "add":
        audio = Path(args.audio).expanduser()
        if not audio.is_file():
            raise CLIError(f"voices add: audio {args.audio} not found", EXIT_BAD_INPUT)
        if not args.text.strip():
            raise CLIError("voices add: --text (the transcript of the audio) is empty", EXIT_BAD_INPUT)
    client = client_for(args, settings)
    try:
        if action == "add":
            info = client.voice_add(args.name, str(audio.resolve()), args.text, replace=args.force)
            if args.json:
                emit_json(info)
            else:
                d = jsonable(info)
                secs = d.get("seconds")
                print(f"saved voice {args.name}" + (f" ({float(secs):.2f} s of reference audio)" if secs else ""))
            return EXIT_OK
        if action == "ls":
            voices = [jsonable(v) for v in client.voices()]
            if args.json:
                emit_json(voices)
                return EXIT_OK
            if not voices:
                print("no saved voices (add one with 'unimoe-audio voices add NAME --audio FILE --text TRANSCRIPT')")
                return EXIT_OK
            rows = [[v.get("name", ""), f"{float(v.get('seconds') or 0):.2f} s", (v.get("transcript") or "")[:60]] for v in voices]
            print(table(rows, ["NAME", "LENGTH", "TRANSCRIPT"]))
            return EXIT_OK
        if action == "rm":
            res = client.voice_rm(args.name)
            if args.json:
                emit_json(res if res is not None else {"removed": args.name})
            else:
                print(f"removed voice {args.name}")
            return EXIT_OK
    except client_mod.ClientError as exc:
        raise map_error(exc) from None
    raise CLIError(f"unknown voices action {action!r}", EXIT_BAD_INPUT)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("voices", help="saved voices: add, ls, rm")
    add_common(p)
    vsub = p.add_subparsers(dest="voices_action", metavar="ACTION", required=True)
    q = vsub.add_parser("add", help="save a voice from a recording and its transcript")
    add_common(q)
    q.add_argument("name")
    q.add_argument("--audio", required=True, metavar="FILE")
    q.add_argument("--text", required=True, metavar="TRANSCRIPT")
    q.add_argument("--force", action="store_true", help="replace a voice of the same name")
    q = vsub.add_parser("ls", help="list saved voices")
    add_common(q)
    q = vsub.add_parser("rm", help="delete a saved voice")
    add_common(q)
    q.add_argument("name")
    p.set_defaults(func=cmd_voices)
