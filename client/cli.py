"""The ``unimoe-audio`` command line: one verb per job, thin over :mod:`unimoe_audio.client.client`.

Exit codes (also in docs/cli.md):

* 0 - success
* 1 - unexpected error (a bug; the message says what)
* 2 - bad input: bad arguments, unreadable files, invalid batch file, a request the daemon rejected
* 3 - daemon unavailable: none answers and none could be started, or it speaks another protocol version
* 4 - generation failed (the daemon accepted the job and it failed, or was cancelled by someone else)
* 130 - interrupted with Ctrl-C (the jobs this command started are cancelled first)

Human-readable results go to stdout, progress bars and notices to stderr. ``--json`` prints exactly one
JSON document on stdout, for scripts.

argparse (stdlib) rather than typer: the CLI module must import quickly and with the client's light
dependencies only, inside DAW/NLE embedded Pythons too, and argparse's exit status 2 for usage errors
is already the documented "bad input" code.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from . import batch as batch_mod
from . import models_store
from .settings import ENV_PREFIX, Settings, load_settings, settings_table

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_FAILED = 4
EXIT_INTERRUPTED = 130

TINY_WARNING = "warning: the daemon is serving the built-in TINY model (random weights): the output is noise."


class CLIError(Exception):
    def __init__(self, message: str, code: int = EXIT_ERROR):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------------------------------
# output helpers
# --------------------------------------------------------------------------------------------------


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


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "home", None):
        overrides["home"] = args.home
    try:
        return load_settings(**overrides)
    except Exception as exc:  # pydantic ValidationError, bad config.toml
        raise CLIError(f"invalid settings: {exc}", EXIT_BAD_INPUT) from None


# --------------------------------------------------------------------------------------------------
# client plumbing
# --------------------------------------------------------------------------------------------------


def _client(args: argparse.Namespace, settings: Settings):
    from . import client as client_mod

    def on_start(message: str) -> None:
        note(args, message)

    try:
        return client_mod.Client(
            settings, auto_start=not args.no_start and getattr(args, "auto_start", True), notice=on_start,
            connect_timeout=args.connect_timeout,
        )
    except client_mod.ClientError as exc:
        raise _map_error(exc) from None


def _map_error(exc: BaseException) -> CLIError:
    from . import client as client_mod

    if isinstance(exc, CLIError):
        return exc
    if isinstance(exc, client_mod.DaemonUnavailable):
        return CLIError(str(exc), EXIT_UNAVAILABLE)
    if isinstance(exc, client_mod.BadRequest):
        return CLIError(str(exc), EXIT_BAD_INPUT)
    if isinstance(exc, client_mod.GenerationFailed):
        return CLIError(str(exc), EXIT_FAILED)
    if isinstance(exc, client_mod.ClientError):
        return CLIError(str(exc), EXIT_ERROR)
    return CLIError(f"{type(exc).__name__}: {exc}", EXIT_ERROR)


def _warn_if_tiny(args: argparse.Namespace, tiny: bool | None, reason: str | None = None) -> None:
    """The first-run path: say clearly (once, on stderr) that the output will be noise."""
    if tiny and not getattr(args, "_tiny_warned", False):
        args._tiny_warned = True
        lines = [TINY_WARNING]
        if reason:
            lines.append(f"  why: {reason}")
        if not reason or "model = 'tiny'" not in reason:
            lines.append("  fix: 'unimoe-audio models pull' downloads UniMoE-Audio (or 'models import DIR')")
        print("\n".join(lines), file=sys.stderr, flush=True)


def _warn_if_tiny_daemon(args: argparse.Namespace, client: Any) -> None:
    if getattr(args, "_tiny_warned", False):
        return
    try:
        st = client.status()
    except Exception:
        return
    _warn_if_tiny(args, st.tiny, st.tiny_reason)


def _place_output(args: argparse.Namespace, res: Any, wanted: str | None) -> Any:
    """``-o FILE`` means FILE: the daemon never overwrites (it writes FILE-2.wav when FILE exists), so
    move its file (and the JSON sidecar next to it) onto the requested name, replacing the old file."""
    if not wanted or Path(res.path) == Path(wanted):
        return res
    got, want = Path(res.path), Path(wanted)
    if got.parent.resolve() != want.parent.resolve():
        return res
    try:
        os.replace(got, want)
        sidecar = res.sidecar
        if sidecar and Path(sidecar).is_file():
            new_sidecar = want.with_suffix(".json")
            os.replace(sidecar, new_sidecar)
            sidecar = str(new_sidecar)
    except OSError as exc:
        note(args, f"could not move {got} to {want}: {exc}; the audio is in {got}")
        return res
    return res.model_copy(update={"path": str(want), "sidecar": sidecar})


def _bars(args: argparse.Namespace):
    from .progress import JobBars

    mode = getattr(args, "progress", "auto")
    enabled = mode != "never" and not args.quiet
    return JobBars(enabled=enabled, force=(mode == "always"))


def _audio_options(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("sample_rate", "channels", "bit_depth", "seed", "cfg_scale", "temperature", "top_p", "top_k",
                 "priority", "tag"):
        v = getattr(args, name, None)
        if v is not None:
            out[name] = v
    loud = getattr(args, "loudness", None)
    if loud is not None:
        out["loudness"] = loud
    return out


def _parse_loudness(text: str) -> float | str:
    if text.strip().lower() in ("off", "none", "no"):
        return "off"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"wanted a LUFS number (e.g. -16) or 'off', got {text!r}") from None


def _abs_output(path: str | None) -> str | None:
    if path is None:
        return None
    p = Path(path).expanduser()
    if p.suffix == "":
        raise CLIError(f"output {path!r} needs a file name with a suffix, e.g. out.wav", EXIT_BAD_INPUT)
    if p.suffix.lower() != ".wav":
        raise CLIError(f"output {path!r}: only .wav is written", EXIT_BAD_INPUT)
    p = p.resolve()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"output folder {p.parent}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    return str(p)


def _run_jobs(
    args: argparse.Namespace,
    client: Any,
    submissions: list[tuple[str, str, dict[str, Any]]],
) -> int:
    """Submit (label, kind, fields) requests, wait for all with progress bars, print results.

    Ctrl-C cancels every job this call started and still running, then exits 130.
    """
    from . import client as client_mod

    started: list[Any] = []
    requested: dict[str, str] = {}
    results: list[dict[str, Any]] = []
    failures = 0
    try:
        for label, kind, fields in submissions:
            try:
                job = client.submit(kind, **fields)
            except client_mod.ClientError as exc:
                err = _map_error(exc)
                if len(submissions) == 1:
                    raise err from None
                failures += 1
                results.append({"label": label, "status": "rejected", "error": str(err), "code": err.code})
                continue
            started.append((label, job))
            if fields.get("output"):
                requested[job.id] = fields["output"]
        if started:
            _warn_if_tiny_daemon(args, client)
        if args.no_wait:
            out = [{"label": label, "job": job.id, "status": "queued"} for label, job in started]
            if args.json:
                emit_json(out if len(submissions) > 1 else out[0])
            else:
                for row in out:
                    print(row["job"])
            return EXIT_OK if not failures else EXIT_BAD_INPUT
        with _bars(args) as bars:
            for label, job in started:
                bars.add(job.id, label)
            for label, job in started:
                try:
                    res = client.wait(job.id, on_progress=lambda ev, _b=bars: _b.update(ev.job_id, ev.fraction, ev.stage))
                except client_mod.GenerationFailed as exc:
                    failures += 1
                    bars.update(job.id, stage="failed")
                    results.append({"label": label, "job": job.id, "status": "failed", "error": str(exc)})
                    continue
                bars.update(job.id, 1.0, "done")
                res = _place_output(args, res, requested.get(job.id))
                results.append({"label": label, **jsonable(res)})
    except KeyboardInterrupt:
        _cancel_started(args, client, started)
        if args.json:
            emit_json({"status": "interrupted", "cancelled": [job.id for _, job in started]})
        return EXIT_INTERRUPTED
    except client_mod.ClientError as exc:
        raise _map_error(exc) from None
    if args.json:
        emit_json(results if len(submissions) > 1 else results[0])
    else:
        for r in results:
            if r.get("status") in ("failed", "rejected"):
                print(f"{r['label']}: {r['status']}: {r.get('error')}", file=sys.stderr)
                continue
            print(_describe_result(r))
    if failures:
        rejected = any(r.get("status") == "rejected" for r in results)
        return EXIT_BAD_INPUT if rejected and failures == sum(1 for r in results if r.get("status") == "rejected") and not any(
            r.get("status") == "failed" for r in results
        ) else EXIT_FAILED
    return EXIT_OK


def _describe_result(r: dict[str, Any]) -> str:
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


def _cancel_started(args: argparse.Namespace, client: Any, started: list[Any]) -> None:
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


# --------------------------------------------------------------------------------------------------
# verbs
# --------------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    env = dict(os.environ)
    for name in ("model", "device", "dtype", "host", "request_port", "control_port", "events_port", "osc_port", "keep_alive"):
        v = getattr(args, name, None)
        if v is not None:
            env[f"{ENV_PREFIX}{name.upper()}"] = str(v)
    if args.load:
        env[f"{ENV_PREFIX}LOAD_AT_START"] = "1"
    if getattr(args, "home", None):
        env[f"{ENV_PREFIX}HOME"] = str(args.home)
    cmd = [sys.executable, "-m", "unimoe_audio.daemon"]
    if args.detach:
        from . import client as client_mod

        try:
            pid = client_mod.start_daemon(settings, env=env, wait=True, timeout=args.connect_timeout)
        except client_mod.ClientError as exc:
            raise _map_error(exc) from None
        if args.json:
            emit_json({"status": "running", "pid": pid, "connection_file": str(settings.connection_file)})
        else:
            print(f"daemon running (pid {pid}); connection file {settings.connection_file}")
        return EXIT_OK
    note(args, f"serving in the foreground (Ctrl-C stops); logs also in {settings.log_path}")
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The child got the same SIGINT from the terminal; give it time to shut down cleanly.
        try:
            return proc.wait(timeout=15) or EXIT_INTERRUPTED
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.terminate()
            return EXIT_INTERRUPTED


def cmd_stop(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = _client(args, settings)
    pid = client.pid
    try:
        client.shutdown(requeue_running=not args.finish, wait=args.connect_timeout)
    except Exception as exc:
        raise _map_error(exc) from None
    if args.json:
        emit_json({"stopped": pid})
    else:
        print(f"daemon stopped (pid {pid})")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    client = _client(args, settings)
    try:
        st = client.status()
    except Exception as exc:
        raise _map_error(exc) from None
    data = jsonable(st)
    _warn_if_tiny(args, data.get("tiny"), data.get("tiny_reason"))
    if args.json:
        emit_json(data)
        return EXIT_OK
    mem = data.get("memory") or {}
    hb = models_store.human_bytes
    model = data.get("model") or "-"
    if data.get("tiny"):
        model += "  (TINY random model serving: output is noise)"
    device = " ".join(str(x) for x in (data.get("device"), data.get("dtype")) if x) or "- (model not loaded)"
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
        ("memory", f"process {hb(mem['rss_bytes']) if mem.get('rss_bytes') else '-'}, device {dev_mem}"),
        ("queue", f"{data.get('queue_length', 0)} queued, {len(data.get('running') or [])} running"
                  + (f" ({', '.join(data['running'])})" if data.get("running") else "")),
        ("keep alive", "forever" if not data.get("keep_alive") else f"{data['keep_alive']:g} s idle"),
        ("output folder", data.get("output_dir") or "-"),
        ("osc port", data.get("osc_port") or "off"),
    ]
    if data.get("error"):
        err = data["error"]
        rows.append(("last error", f"{err.get('code')}: {err.get('message')}"))
    for key, value in rows:
        print(f"{key:<14} {value}")
    return EXIT_OK


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in data.items():
        if isinstance(v, dict):
            out += _flatten(v, f"{prefix}{k}.")
        elif isinstance(v, list):
            out.append((f"{prefix}{k}", ", ".join(str(x) for x in v) if v else "-"))
        else:
            out.append((f"{prefix}{k}", "-" if v is None else v))
    return out


def cmd_models(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        return _models(args, settings)
    except models_store.ModelStoreError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None


def _models(args: argparse.Namespace, settings: Settings) -> int:
    action = args.models_action
    if action == "ls":
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
    if action == "import":
        dest, chk = models_store.import_model(settings, args.dir, args.name, link=args.link, force=args.force)
        if args.json:
            emit_json({"name": dest.name, "path": str(dest), "check": chk.to_dict()})
        else:
            print(f"imported {dest.name} -> {dest} ({chk.shards} shard(s), {chk.tensors} tensors, "
                  f"{chk.parameters:,} parameters, {models_store.human_bytes(chk.size_bytes)})")
            if settings.model != dest.name:
                print(f"to serve it: UNIMOE_AUDIO_MODEL={dest.name} unimoe-audio serve")
        return EXIT_OK
    if action == "rm":
        dest = models_store.remove_model(settings, args.name)
        if args.json:
            emit_json({"removed": args.name, "path": str(dest)})
        else:
            print(f"removed {args.name} ({dest})")
        return EXIT_OK
    if action == "check":
        chk = models_store.validate_model_dir(args.dir)
        if args.json:
            emit_json(chk.to_dict())
        else:
            print(f"{chk.path}: {'ok' if chk.ok else 'INVALID'}; {chk.shards} shard(s), {chk.tensors} tensors, "
                  f"{chk.parameters:,} parameters, dtypes {', '.join(chk.dtypes) or '-'}")
            for p in chk.problems:
                print(f"  - {p}")
        return EXIT_OK if chk.ok else EXIT_BAD_INPUT
    if action == "pull":
        note(args, f"downloading {args.repo or settings.hf_repo} into {settings.models_path} "
                   "(interrupted downloads resume on the next run)")
        dest, chk = models_store.pull_model(settings, args.repo, args.name, revision=args.revision,
                                            progress=not (args.quiet or args.json))
        if args.json:
            emit_json({"name": dest.name, "path": str(dest), "check": chk.to_dict()})
        else:
            print(f"downloaded {dest.name} -> {dest}: {'ok' if chk.ok else 'INVALID: ' + '; '.join(chk.problems)}")
        return EXIT_OK if chk.ok else EXIT_BAD_INPUT
    if action == "make-tiny":
        target = Path(args.dir).expanduser() if args.dir else settings.models_path / "tiny-random"
        note(args, f"building the tiny random-weight model in {target}")
        proc = models_store.make_tiny(target)
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr[-4000:])
            raise CLIError(f"make-tiny failed (exit {proc.returncode})", EXIT_FAILED)
        chk = models_store.validate_model_dir(target)
        if args.json:
            emit_json({"path": str(target), "check": chk.to_dict()})
        else:
            print(f"tiny model written to {target}: {'ok' if chk.ok else 'INVALID: ' + '; '.join(chk.problems)} "
                  f"({chk.tensors} tensors, {chk.parameters:,} parameters)")
        return EXIT_OK if chk.ok else EXIT_FAILED
    raise CLIError(f"unknown models action {action!r}", EXIT_BAD_INPUT)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return _audio_options(args)


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
    fields: dict[str, Any] = {"text": text, **_sampling(args)}
    if args.voice:
        fields["voice"] = args.voice
    else:
        fields["reference_audio"] = str(Path(args.ref_audio).expanduser().resolve())
        fields["reference_text"] = args.ref_text
    if args.seconds is not None:
        fields["seconds"] = args.seconds
    fields["output"] = _abs_output(args.output)
    settings = _settings(args)
    client = _client(args, settings)
    return _run_jobs(args, client, [("speak", "speech", fields)])


def cmd_music(args: argparse.Namespace) -> int:
    if not args.caption.strip():
        raise CLIError("music: the caption is empty", EXIT_BAD_INPUT)
    if args.bars is not None and args.tempo is None:
        raise CLIError("music: --bars needs --tempo BPM", EXIT_BAD_INPUT)
    if args.bars is not None and args.seconds is not None:
        raise CLIError("music: give --seconds or --bars, not both", EXIT_BAD_INPUT)
    if args.variations < 1:
        raise CLIError("music: --variations must be at least 1", EXIT_BAD_INPUT)
    base: dict[str, Any] = {"caption": args.caption, **_sampling(args)}
    for name, key in (("seconds", "seconds"), ("bars", "bars"), ("tempo", "tempo_bpm"), ("key", "key")):
        v = getattr(args, name)
        if v is not None:
            base[key] = v
    output = _abs_output(args.output)
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
    settings = _settings(args)
    client = _client(args, settings)
    return _run_jobs(args, client, subs)


def cmd_score(args: argparse.Namespace) -> int:
    video = Path(args.video).expanduser()
    if not video.is_file():
        raise CLIError(f"score: video {args.video} not found", EXIT_BAD_INPUT)
    if args.in_ is not None and args.out is not None and args.out <= args.in_:
        raise CLIError("score: --out must be after --in", EXIT_BAD_INPUT)
    fields: dict[str, Any] = {"video": str(video.resolve()), "caption": args.caption or "", **_sampling(args)}
    if args.in_ is not None:
        fields["in_seconds"] = args.in_
    if args.out is not None:
        fields["out_seconds"] = args.out
    if args.mode:
        fields["mode"] = args.mode
    fields["output"] = _abs_output(args.output)
    settings = _settings(args)
    client = _client(args, settings)
    return _run_jobs(args, client, [("score", "score", fields)])


def cmd_jobs(args: argparse.Namespace) -> int:
    from . import client as client_mod

    settings = _settings(args)
    client = _client(args, settings)
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
            with _bars(args) as bars:
                for jid in args.ids:
                    bars.add(jid, jid[:8])
                    try:
                        res = client.wait(jid, timeout=args.timeout,
                                          on_progress=lambda ev, _b=bars: _b.update(ev.job_id, ev.fraction, ev.stage))
                        results.append({"label": jid, **jsonable(res)})
                    except client_mod.GenerationFailed as exc:
                        failures += 1
                        results.append({"label": jid, "job": jid, "status": "failed", "error": str(exc)})
            if args.json:
                emit_json(results if len(results) != 1 else results[0])
            else:
                for r in results:
                    print(_describe_result(r) if r.get("status") != "failed" else f"{r['label']}: failed: {r['error']}")
            return EXIT_FAILED if failures else EXIT_OK
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # waiting on someone else's job: leave it running
    except client_mod.ClientError as exc:
        raise _map_error(exc) from None
    raise CLIError(f"unknown jobs action {action!r}", EXIT_BAD_INPUT)


def cmd_voices(args: argparse.Namespace) -> int:
    from . import client as client_mod

    settings = _settings(args)
    action = args.voices_action
    if action == "add":
        audio = Path(args.audio).expanduser()
        if not audio.is_file():
            raise CLIError(f"voices add: audio {args.audio} not found", EXIT_BAD_INPUT)
        if not args.text.strip():
            raise CLIError("voices add: --text (the transcript of the audio) is empty", EXIT_BAD_INPUT)
    client = _client(args, settings)
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
        raise _map_error(exc) from None
    raise CLIError(f"unknown voices action {action!r}", EXIT_BAD_INPUT)


def cmd_batch(args: argparse.Namespace) -> int:
    try:
        items = batch_mod.parse_batch(args.file)
    except batch_mod.BatchError as exc:
        raise CLIError(str(exc), EXIT_BAD_INPUT) from None
    overrides = _sampling(args)
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
    from . import client as client_mod

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
    for _, _, f in subs:
        if f.get("output"):
            Path(f["output"]).parent.mkdir(parents=True, exist_ok=True)
    settings = _settings(args)
    client = _client(args, settings)
    return _run_jobs(args, client, subs)


def cmd_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    values = settings.model_dump(mode="json")
    rows_out = []
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


# --------------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, top: bool = False) -> None:
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    p.add_argument("--json", action="store_true", default=d(False), help="print one JSON document on stdout")
    p.add_argument("-q", "--quiet", action="store_true", default=d(False), help="no notices or progress on stderr")
    p.add_argument("--progress", choices=["auto", "always", "never"], default=d("auto"),
                   help="progress bars on stderr (auto: only on a terminal)")
    p.add_argument("--no-start", action="store_true", default=d(False),
                   help="do not start a daemon when none answers (exit 3 instead)")
    p.add_argument("--connect-timeout", type=float, default=d(60.0), metavar="S",
                   help="seconds to wait for a daemon to answer or start (default 60)")
    p.add_argument("--home", default=d(None), metavar="DIR", help="same as UNIMOE_AUDIO_HOME")


def _gen_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--sample-rate", type=int, metavar="HZ", help="output sample rate (default: setting sample_rate)")
    g.add_argument("--channels", type=int, choices=[1, 2], help="1 mono, 2 stereo (default: setting channels)")
    g.add_argument("--bit-depth", type=int, choices=[16, 24, 32], help="WAV bit depth, 32 = float")
    g.add_argument("--loudness", type=_parse_loudness, metavar="LUFS|off", help="loudness target, or 'off'")
    s = p.add_argument_group("sampling")
    s.add_argument("--seed", type=int, help="random seed (reported back when not given)")
    s.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale")
    s.add_argument("--temperature", type=float)
    s.add_argument("--top-p", type=float)
    s.add_argument("--top-k", type=int)
    p.add_argument("--priority", type=int, help="higher runs first (-100..100, default 0)")
    p.add_argument("--tag", help="your own label for the job (shown by 'jobs ls', echoed in events)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return at once")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unimoe-audio",
        description="Local generative audio with UniMoE-Audio: speech in a cloned voice, music from text, "
        "music for a video. A background daemon holds the model; these commands talk to it.",
        epilog="exit codes: 0 ok, 1 unexpected error, 2 bad input, 3 daemon unavailable, 4 generation failed, "
        "130 interrupted (the started jobs are cancelled)",
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = sub.add_parser("serve", help="run the daemon (foreground, or --detach)")
    _common(p)
    p.add_argument("--detach", action="store_true", help="start in the background and return once it answers")
    p.add_argument("--model", help="model to serve (a name under the models folder, a path, or 'tiny')")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--host")
    p.add_argument("--request-port", type=int)
    p.add_argument("--control-port", type=int)
    p.add_argument("--events-port", type=int)
    p.add_argument("--osc-port", type=int)
    p.add_argument("--keep-alive", type=float, metavar="S")
    p.add_argument("--load", action="store_true", help="load the model now, not on first use")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stop", help="stop the daemon (running jobs run again at next start)")
    _common(p)
    p.add_argument("--finish", action="store_true", help="let the running job finish first")
    p.set_defaults(func=cmd_stop, auto_start=False)

    for name in ("status", "ps"):
        p = sub.add_parser(name, help="daemon status: loaded model, device, memory, queue")
        _common(p)
        p.set_defaults(func=cmd_status, auto_start=False)

    p = sub.add_parser("models", help="installed models: ls, pull, import, rm, check, make-tiny")
    _common(p)
    msub = p.add_subparsers(dest="models_action", metavar="ACTION", required=True)
    q = msub.add_parser("ls", help="list installed models")
    _common(q)
    q = msub.add_parser("pull", help="download from the Hugging Face hub (resumes)")
    _common(q)
    q.add_argument("repo", nargs="?", help="repo id (default: setting hf_repo)")
    q.add_argument("--name", help="folder name under the models folder (default: the repo's name)")
    q.add_argument("--revision", help="branch, tag or commit")
    q = msub.add_parser("import", help="validate a checkpoint folder and copy it in")
    _common(q)
    q.add_argument("dir")
    q.add_argument("--name", help="name in the models folder (default: the folder's name)")
    q.add_argument("--link", action="store_true", help="symlink instead of copying")
    q.add_argument("--force", action="store_true", help="replace a model of the same name")
    q = msub.add_parser("rm", help="delete an installed model")
    _common(q)
    q.add_argument("name")
    q = msub.add_parser("check", help="validate a checkpoint folder without importing it")
    _common(q)
    q.add_argument("dir")
    q = msub.add_parser("make-tiny", help="write the tiny random-weight model as a checkpoint folder")
    _common(q)
    q.add_argument("dir", nargs="?", help="target folder (default: <models>/tiny-random)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("speak", help="speech in a saved voice or a reference voice")
    _common(p)
    p.add_argument("text", help="text to speak ('-' reads stdin)")
    p.add_argument("--voice", help="a saved voice (see 'voices add')")
    p.add_argument("--ref-audio", metavar="FILE", help="reference recording to clone")
    p.add_argument("--ref-text", metavar="TEXT", help="transcript of the reference recording")
    p.add_argument("--seconds", type=float, help="target length (default: the model decides)")
    p.add_argument("-o", "--output", metavar="FILE.wav", help="output file (default: the output folder)")
    _gen_options(p)
    p.set_defaults(func=cmd_speak)

    p = sub.add_parser("music", help="music from a caption")
    _common(p)
    p.add_argument("caption")
    p.add_argument("--seconds", type=float, help="length in seconds")
    p.add_argument("--bars", type=int, help="length in bars (needs --tempo)")
    p.add_argument("--tempo", type=float, metavar="BPM")
    p.add_argument("--key", help="e.g. 'A minor'")
    p.add_argument("--variations", type=int, default=1, metavar="N", help="N takes (seeds seed, seed+1, ...)")
    p.add_argument("-o", "--output", metavar="FILE.wav", help="output file (variations get -1, -2, ...)")
    _gen_options(p)
    p.set_defaults(func=cmd_music)

    p = sub.add_parser("score", help="music for a video clip")
    _common(p)
    p.add_argument("video")
    p.add_argument("--in", dest="in_", type=float, metavar="S", help="clip start in seconds")
    p.add_argument("--out", type=float, metavar="S", help="clip end in seconds")
    p.add_argument("--caption", default="", help="text description to steer the music")
    p.add_argument("--mode", choices=["vision", "reference"], help="vision: the model sees the frames (default)")
    p.add_argument("-o", "--output", metavar="FILE.wav")
    _gen_options(p)
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("jobs", help="the daemon's jobs: ls, wait, cancel")
    _common(p)
    jsub = p.add_subparsers(dest="jobs_action", metavar="ACTION", required=True)
    q = jsub.add_parser("ls", help="list jobs, newest first")
    _common(q)
    q.add_argument("--state", action="append", choices=["queued", "running", "done", "failed", "cancelled"],
                   help="only jobs in this state (repeatable)")
    q.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    q = jsub.add_parser("wait", help="wait for jobs to finish")
    _common(q)
    q.add_argument("ids", nargs="+", metavar="ID")
    q.add_argument("--timeout", type=float, metavar="S")
    q = jsub.add_parser("cancel", help="cancel jobs")
    _common(q)
    q.add_argument("ids", nargs="+", metavar="ID")
    p.set_defaults(func=cmd_jobs, auto_start=False)

    p = sub.add_parser("voices", help="saved voices: add, ls, rm")
    _common(p)
    vsub = p.add_subparsers(dest="voices_action", metavar="ACTION", required=True)
    q = vsub.add_parser("add", help="save a voice from a recording and its transcript")
    _common(q)
    q.add_argument("name")
    q.add_argument("--audio", required=True, metavar="FILE")
    q.add_argument("--text", required=True, metavar="TRANSCRIPT")
    q.add_argument("--force", action="store_true", help="replace a voice of the same name")
    q = vsub.add_parser("ls", help="list saved voices")
    _common(q)
    q = vsub.add_parser("rm", help="delete a saved voice")
    _common(q)
    q.add_argument("name")
    p.set_defaults(func=cmd_voices)

    p = sub.add_parser("batch", help="run a JSON or YAML list of requests")
    _common(p)
    p.add_argument("file")
    p.add_argument("--output-dir", metavar="DIR", help="folder for items without output_path")
    p.add_argument("--dry-run", action="store_true", help="validate and print the requests, submit nothing")
    _gen_options(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("config", help="the settings table: values and environment variables")
    _common(p)
    p.set_defaults(func=cmd_config)
    return parser


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


def _entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
