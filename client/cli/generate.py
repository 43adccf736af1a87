"""Generating verbs: ``speak``, ``music``, ``score``, ``batch``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .. import batch as batch_mod
from .output import EXIT_BAD_INPUT, EXIT_OK, CLIError, emit_json
from .parser import add_verb, add_gen_options
from .runner import abs_output, audio_options, client_for, run_jobs, settings_for


def cmd_speak(args: argparse.Namespace) -> int:
    text = args.text
    if text == "-":
        text = sys.stdin.read()
    if not text or not text.strip():
        raise CLIError("speak: the text is empty", EXIT_BAD_INPUT)
    if args.voice and (args.ref_audio or args.ref_text):
        raise CLIError("speak: give --voice, or --ref-audio with --ref-text, not both", EXIT_BAD_INPUT)
    if not args.voice:
        if not (args.ref_audio and args.ref_text):
            raise CLIError("speak: give --voice NAME, or --ref-audio FILE with --ref-text TEXT", EXIT_BAD_INPUT)
        if not Path(args.ref_audio).expanduser().is_file():
            raise CLIError(f"speak: reference audio {args.ref_audio} not found", EXIT_BAD_INPUT)
    fields: dict[str, Any] = {"text": text, **audio_options(args)}
    if args.voice:
        fields["voice"] = args.voice
    else:
        fields["reference_audio"] = str(Path(args.ref_audio).expanduser().resolve())
        fields["reference_text"] = args.ref_text
    if args.seconds is not None:
        fields["seconds"] = args.seconds
    fields["output"] = abs_output(args.output)
    settings = settings_for(args)
    client = client_for(args, settings)
    return run_jobs(args, client, [("speak", "speech", fields)])


def cmd_music(args: argparse.Namespace) -> int:
    if not args.caption.strip():
        raise CLIError("music: the caption is empty", EXIT_BAD_INPUT)
    if args.bars is not None and args.tempo is None:
        raise CLIError("music: --bars needs --tempo BPM", EXIT_BAD_INPUT)
    if args.bars is not None and args.seconds is not None:
        raise CLIError("music: give --seconds or --bars, not both", EXIT_BAD_INPUT)
    if args.variations < 1:
        raise CLIError("music: --variations must be at least 1", EXIT_BAD_INPUT)
    if args.continue_ is None:
        for flag, value in (("--from", args.from_), ("--to-seconds", args.to_seconds), ("--new-only", args.new_only)):
            if value not in (None, False):
                raise CLIError(f"music: {flag} goes with --continue FILE", EXIT_BAD_INPUT)
    else:
        if not Path(args.continue_).expanduser().is_file():
            raise CLIError(f"music: --continue: {args.continue_} not found", EXIT_BAD_INPUT)
        if args.to_seconds is not None and (args.seconds is not None or args.bars is not None):
            raise CLIError("music: give --seconds (new music) or --to-seconds (whole output), not both", EXIT_BAD_INPUT)
    if args.loop and args.to_seconds is not None:
        raise CLIError("music: a loop's length is --seconds or --bars", EXIT_BAD_INPUT)
    base: dict[str, Any] = {"caption": args.caption, **audio_options(args)}
    for name, key in (("seconds", "seconds"), ("bars", "bars"), ("tempo", "tempo_bpm"), ("key", "key"),
                      ("continue_", "continue_audio"), ("from_", "continue_from"), ("to_seconds", "to_seconds")):
        v = getattr(args, name)
        if v is not None:
            base[key] = v
    for name in ("loop", "new_only"):
        if getattr(args, name):
            base[name] = True
    output = abs_output(args.output)
    subs = []
    for i in range(args.variations):
        fields = dict(base)
        if args.variations > 1:
            if args.seed is not None:
                fields["seed"] = args.seed + i
            if output:
                p = Path(output)
                fields["output"] = str(p.with_name(f"{p.stem}-{i + 1}{p.suffix}"))
        else:
            fields["output"] = output
        subs.append((f"music {i + 1}/{args.variations}" if args.variations > 1 else "music", "music", fields))
    settings = settings_for(args)
    client = client_for(args, settings)
    return run_jobs(args, client, subs)


def cmd_score(args: argparse.Namespace) -> int:
    video = Path(args.video).expanduser()
    if not video.is_file():
        raise CLIError(f"score: video {args.video} not found", EXIT_BAD_INPUT)
    if args.in_ is not None and args.out is not None and args.out <= args.in_:
        raise CLIError("score: --out must be after --in", EXIT_BAD_INPUT)
    fields: dict[str, Any] = {"video": str(video.resolve()), "caption": args.caption or "", **audio_options(args)}
    if args.in_ is not None:
        fields["in_seconds"] = args.in_
    if args.out is not None:
        fields["out_seconds"] = args.out
    if args.mode:
        fields["mode"] = args.mode
    fields["output"] = abs_output(args.output)
    settings = settings_for(args)
    client = client_for(args, settings)
    return run_jobs(args, client, [("score", "score", fields)])


def cmd_batch(args: argparse.Namespace) -> int:
    try:
        items = batch_mod.parse_batch(args.file)
    except batch_mod.BatchError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None
    overrides = audio_options(args)
    out_dir = Path(args.output_dir).expanduser().resolve() if args.output_dir else None
    subs = []
    for it in items:
        fields = {**overrides, **it.fields}
        variations = int(fields.pop("variations", 1) or 1)
        output = it.output
        if output is None and out_dir is not None:
            output = out_dir / f"{it.id}.wav"
        if output is not None:
            output = Path(output).resolve()
            fields["output"] = str(output)
        if variations < 1:
            raise CLIError(f"item {it.index + 1}: variations must be at least 1", EXIT_BAD_INPUT)
        for v in range(variations):
            f = dict(fields)
            label = it.id
            if variations > 1:
                label = f"{it.id}-{v + 1}"
                if f.get("seed") is not None:
                    f["seed"] = int(f["seed"]) + v
                if output is not None:
                    f["output"] = str(output.with_name(f"{output.stem}-{v + 1}{output.suffix}"))
            subs.append((label, it.task, f))
    from .. import client as client_mod

    for label, kind, f in subs:  # validate everything before submitting anything
        try:
            client_mod.build_request(kind, **f)
        except client_mod.ClientError as exc:
            raise CLIError(f"{label}: {exc}", EXIT_BAD_INPUT) from None
    if args.dry_run:
        data = [{"id": label, "task": kind, **fields} for label, kind, fields in subs]
        if args.json:
            emit_json(data)
        else:
            for d in data:
                print(json.dumps(d))
        return EXIT_OK
    settings = settings_for(args)
    client = client_for(args, settings)
    return run_jobs(args, client, subs)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "speak", help="speech in a saved voice or a reference voice")
    p.add_argument("text", help="text to speak ('-' reads stdin)")
    p.add_argument("--voice", help="a saved voice (see 'voices add')")
    p.add_argument("--ref-audio", metavar="FILE", help="reference recording to clone")
    p.add_argument("--ref-text", metavar="TEXT", help="transcript of the reference recording")
    p.add_argument("--seconds", type=float, help="target length (default: the model decides)")
    p.add_argument("-o", "--output", metavar="FILE.wav", help="output file (default: the output folder)")
    add_gen_options(p)
    p.set_defaults(func=cmd_speak)

    p = add_verb(sub, "music", help="music from a caption")
    p.add_argument("caption")
    p.add_argument("--seconds", type=float, help="length in seconds")
    p.add_argument("--bars", type=int, help="length in bars (needs --tempo)")
    p.add_argument("--tempo", type=float, metavar="BPM")
    p.add_argument("--key", help="e.g. 'A minor'")
    p.add_argument("--continue", dest="continue_", metavar="FILE",
                   help="continue this clip: FILE up to the join, then new music (--seconds of it, or --to-seconds)")
    p.add_argument("--from", dest="from_", type=float, metavar="S",
                   help="with --continue: join at S seconds into FILE (default: its end; a bar line with --tempo)")
    p.add_argument("--to-seconds", type=float, metavar="T", help="with --continue: the whole output is T seconds")
    p.add_argument("--new-only", action="store_true",
                   help="with --continue: write only the new part (butted after FILE it plays as the full output)")
    p.add_argument("--loop", action="store_true",
                   help="a seamless loop of --bars N --tempo BPM (or --seconds); from FILE with --continue")
    p.add_argument("--variations", type=int, default=1, metavar="N", help="N takes (seeds seed, seed+1, ...)")
    p.add_argument("-o", "--output", metavar="FILE.wav", help="output file (variations get -1, -2, ...)")
    add_gen_options(p)
    p.set_defaults(func=cmd_music)

    p = add_verb(sub, "score", help="music for a video clip")
    p.add_argument("video")
    p.add_argument("--in", dest="in_", type=float, metavar="S", help="clip start in seconds")
    p.add_argument("--out", type=float, metavar="S", help="clip end in seconds")
    p.add_argument("--caption", default="", help="text description to steer the music")
    p.add_argument("--mode", choices=["vision", "reference"], help="vision: the model sees the frames (default)")
    p.add_argument("-o", "--output", metavar="FILE.wav")
    add_gen_options(p)
    p.set_defaults(func=cmd_score)

    p = add_verb(sub, "batch", help="run a JSON or YAML list of requests")
    p.add_argument("file")
    p.add_argument("--output-dir", metavar="DIR", help="folder for items without output_path")
    p.add_argument("--dry-run", action="store_true", help="validate and print the requests, submit nothing")
    add_gen_options(p)
    p.set_defaults(func=cmd_batch)
