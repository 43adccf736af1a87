"""Model verbs: ``models ls``, ``pull``, ``import``, ``rm``, ``check``, ``make-tiny`` (the models folder;
no daemon needed). One function per action, looked up in ``ACTIONS``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from .. import model_pull, models_store
from ..settings import Settings
from .output import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, CLIError, emit_json, note, table
from .parser import add_action_verb, add_verb
from .runner import settings_for


def _ls(args: argparse.Namespace, settings: Settings) -> int:
    infos = models_store.list_models(settings)
    real = models_store.real_model_installed(settings)
    if args.json:
        emit_json({"models_dir": str(settings.models_path), "selected": settings.model, "installed": real,
                   "models": [i.to_dict() for i in infos]})
        return EXIT_OK
    rows = []
    for i in infos:
        state = "ok" if i.ok else "INVALID: " + "; ".join(i.problems)
        if i.builtin:
            state = "built in, random weights (noise)"
        rows.append(["*" if i.selected else "", i.name, models_store.human_bytes(i.size_bytes) if not i.builtin else "-",
                     f"{i.parameters / 1e9:.2f} B" if i.parameters >= 1e8 else (f"{i.parameters:,}" if i.parameters else "-"),
                     state])
    print(table(rows, ["", "NAME", "SIZE", "PARAMS", "STATE"]))
    print(f"\nmodels folder: {settings.models_path}   selected: {settings.model} (UNIMOE_AUDIO_MODEL)")
    if not real:
        print(f"'{settings.model}' is not installed: the daemon falls back to the built-in tiny model "
              "(noise). Run 'unimoe-audio models pull' to download the real weights.")
    return EXIT_OK


def _import(args: argparse.Namespace, settings: Settings) -> int:
    if args.quant:
        note(args, f"quantizing {args.dir} to {args.quant} (once; the model then loads from the quantized files)")
    dest, chk = models_store.import_model(settings, args.dir, args.name, link=args.link, force=args.force,
                                          quant=args.quant, dac=args.dac, note=lambda m: note(args, m))
    if args.json:
        emit_json({"name": dest.name, "path": str(dest), "check": chk.to_dict()})
    else:
        print(f"imported {dest.name} -> {dest} ({chk.shards} shard(s), {chk.tensors} tensors, "
              f"{chk.parameters:,} parameters, {models_store.human_bytes(chk.size_bytes)})")
        if settings.model != dest.name:
            print(f"to serve it: UNIMOE_AUDIO_MODEL={dest.name} unimoe-audio serve")
    return EXIT_OK


def _rm(args: argparse.Namespace, settings: Settings) -> int:
    dest = models_store.remove_model(settings, args.name)
    if args.json:
        emit_json({"removed": args.name, "path": str(dest)})
    else:
        print(f"removed {args.name} ({dest})")
    return EXIT_OK


def _check(args: argparse.Namespace, settings: Settings) -> int:
    chk = models_store.validate_model_dir(args.dir, dac=settings.dac)
    if args.json:
        emit_json(chk.to_dict())
    else:
        print(f"{chk.path}: {'ok' if chk.ok else 'INVALID'}; {chk.shards} shard(s), {chk.tensors} tensors, "
              f"{chk.parameters:,} parameters, dtypes {', '.join(chk.dtypes) or '-'}")
        for p in chk.problems:
            print(f"  - {p}")
    return EXIT_OK if chk.ok else EXIT_BAD_INPUT


def _pull(args: argparse.Namespace, settings: Settings) -> int:
    offline = model_pull.offline()
    if not offline:
        note(args, f"downloading {args.repo or settings.hf_repo} into {settings.models_path} "
                   "(interrupted downloads resume on the next run)")
    dest, chk = models_store.pull_model(settings, args.repo, args.name, revision=args.revision,
                                        progress=not (args.quiet or args.json), dac_repo=args.dac_repo,
                                        note=lambda m: note(args, m))
    if args.json:
        emit_json({"name": dest.name, "path": str(dest), "offline": offline, "check": chk.to_dict()})
    else:
        state = "ok" if chk.ok else "INVALID: " + "; ".join(chk.problems)
        print(f"{dest.name} is installed at {dest} (offline: nothing downloaded): {state}" if offline
              else f"downloaded {dest.name} -> {dest}: {state}")
    return EXIT_OK if chk.ok else EXIT_BAD_INPUT


def _make_tiny(args: argparse.Namespace, settings: Settings) -> int:
    target = Path(args.dir).expanduser() if args.dir else settings.models_path / f"{args.size}-random"
    extra = (" (published 7.16 B shape, ~14.6 GB of bf16 shards written one tensor at a time; needs that much "
             "free disk, little memory)") if args.size == "full" else ""
    note(args, f"building the {args.size} random-weight model in {target}{extra}")
    proc = models_store.make_tiny(target, args.size, args.seed, note=lambda m: note(args, m))
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise CLIError(f"make-tiny failed (exit {proc.returncode})", EXIT_FAILED)
    chk = models_store.validate_model_dir(target, dac=settings.dac)
    if args.json:
        emit_json({"path": str(target), "check": chk.to_dict()})
    else:
        print(f"{args.size} random model written to {target}: {'ok' if chk.ok else 'INVALID: ' + '; '.join(chk.problems)} "
              f"({chk.tensors} tensors, {chk.parameters:,} parameters)")
    return EXIT_OK if chk.ok else EXIT_FAILED


ACTIONS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "ls": _ls, "import": _import, "rm": _rm, "check": _check, "pull": _pull, "make-tiny": _make_tiny,
}


def cmd_models(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    action = ACTIONS.get(args.models_action)
    if action is None:
        raise CLIError(f"unknown models action {args.models_action!r}", EXIT_BAD_INPUT)
    try:
        return action(args, settings)
    except models_store.ModelStoreError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None


def register(sub: argparse._SubParsersAction) -> None:
    msub = add_action_verb(sub, "models", "installed models: ls, pull, import, rm, check, make-tiny", cmd_models)
    q = add_verb(msub, "ls", help="list installed models")
    q = add_verb(msub, "pull", help="download from the Hugging Face hub (resumes)")
    q.add_argument("repo", nargs="?", help="repo id (default: setting hf_repo)")
    q.add_argument("--name", help="folder name under the models folder (default: the repo's name)")
    q.add_argument("--revision", help="branch, tag or commit")
    q.add_argument("--dac-repo", metavar="REPO", help="where the DAC codec comes from when the model repo has "
                   "none (default descript/dac_16khz)")
    q = add_verb(msub, "import", help="validate a checkpoint folder and copy it in")
    q.add_argument("dir")
    q.add_argument("--name", help="name in the models folder (default: the folder's name)")
    q.add_argument("--link", action="store_true", help="symlink instead of copying")
    q.add_argument("--force", action="store_true", help="replace a model of the same name")
    q.add_argument("--dac", metavar="FOLDER|REPO", help="where the DAC codec comes from when DIR has none (a Hugging "
                   "Face cache snapshot, say): a folder to copy, or a hub repo id such as descript/dac_16khz to fetch")
    q.add_argument("--quant", choices=["int8", "int4"],
                   help="store the attention and expert weights quantized (int8: about half of bf16, int4: about a "
                        "third); loading then never needs the full-precision peak")
    q = add_verb(msub, "rm", help="delete an installed model")
    q.add_argument("name")
    q = add_verb(msub, "check", help="validate a checkpoint folder without importing it")
    q.add_argument("dir")
    q = add_verb(msub, "make-tiny", help="write a random-weight model (tiny, small or full size) as a checkpoint "
                        "folder in the published layout")
    q.add_argument("dir", nargs="?", help="target folder (default: <models>/<size>-random)")
    q.add_argument("--size", choices=models_store.MAKE_TINY_SIZES, default="tiny",
                   help="tiny (seconds), small (the CPU benchmark's), full (the published 7.16 B shape, "
                        "bf16, ~14.6 GB on disk, written shard by shard at low memory)")
    q.add_argument("--seed", type=int, default=0, help="the same seed gives byte-identical files")
