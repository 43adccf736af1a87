"""Voice verbs: ``voices add``, ``voices ls``, ``voices rm`` (saved reference voices in the daemon)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .output import EXIT_BAD_INPUT, EXIT_OK, CLIError, emit_json, jsonable, map_error, print_listing
from .parser import add_action_verb, add_verb
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
            return print_listing(args, [jsonable(v) for v in client.voices()], ["NAME", "LENGTH", "TRANSCRIPT"],
                                 lambda v: [v.get("name", ""), f"{float(v.get('seconds') or 0):.2f} s",
                                            (v.get("transcript") or "")[:60]],
                                 "no saved voices (add one with 'unimoe-audio voices add NAME --audio FILE --text "
                                 "TRANSCRIPT')")
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
    vsub = add_action_verb(sub, "voices", "saved voices: add, ls, rm", cmd_voices)
    q = add_verb(vsub, "add", help="save a voice from a recording and its transcript")
    q.add_argument("name")
    q.add_argument("--audio", required=True, metavar="FILE")
    q.add_argument("--text", required=True, metavar="TRANSCRIPT")
    q.add_argument("--force", action="store_true", help="replace a voice of the same name")
    q = add_verb(vsub, "ls", help="list saved voices")
    q = add_verb(vsub, "rm", help="delete a saved voice")
    q.add_argument("name")
