"""``python -m unimoe_audio.daemon``: run the daemon (foreground), or ``--detach`` it in the background.

Settings come from the one settings table (environment ``UNIMOE_AUDIO_*``, config.toml); flags here
override them. ``unimoe-audio serve`` runs this module as a process.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from ..client import connection, wire
from ..client.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m unimoe_audio.daemon", description=__doc__.splitlines()[0])
    p.add_argument("--detach", action="store_true", help="start in the background, print its pid, and return")
    p.add_argument("--model", help="model name, path, or 'tiny'")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"])
    p.add_argument("--host")
    p.add_argument("--request-port", type=int)
    p.add_argument("--control-port", type=int)
    p.add_argument("--events-port", type=int)
    p.add_argument("--osc-port", type=int, help="OSC UDP port (0 disables OSC)")
    p.add_argument("--keep-alive", type=float, help="seconds an idle model stays loaded (0 = forever)")
    p.add_argument("--max-batch", type=int)
    p.add_argument("--load-at-start", action="store_true", default=None, help="load the model now, not on first use")
    p.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--quiet", action="store_true", help="log to the file only, not to stderr")
    p.add_argument("--wait", type=float, default=120.0, help="--detach: seconds to wait for the daemon to listen")
    return p


_FLAGS = ("model", "device", "dtype", "host", "request_port", "control_port", "events_port", "osc_port", "keep_alive",
          "max_batch", "load_at_start", "log_level")


def _detach(args: argparse.Namespace, argv: list[str]) -> int:
    settings = load_settings(**{k: getattr(args, k) for k in _FLAGS})
    child_argv = [a for a in argv if a != "--detach"]
    log_dir = settings.log_path
    connection.ensure_private_dir(log_dir)
    out_path = log_dir / "daemon.out"
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # user-only, like the logs
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "ab") as out, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen([sys.executable, "-m", "unimoe_audio.daemon", "--quiet", *child_argv],
                                stdin=devnull, stdout=out, stderr=out, start_new_session=True, close_fds=True)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            tail = out_path.read_text("utf-8", "replace").splitlines()[-10:]
            print(f"the daemon exited with status {rc}:\n" + "\n".join(tail), file=sys.stderr)
            return rc or 1
        try:
            info = connection.read_connection_file(settings.connection_file)
            if info.pid == proc.pid:
                print(proc.pid)
                return 0
        except wire.ProtocolError:
            pass
        time.sleep(0.05)
    print(f"the daemon (pid {proc.pid}) did not start listening within {args.wait:g} s; see {out_path}",
          file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.detach:
        return _detach(args, argv)
    try:
        settings = load_settings(**{k: getattr(args, k) for k in _FLAGS})
    except Exception as exc:  # noqa: BLE001 - bad config is a clear message, not a traceback
        print(f"unimoe-audio daemon: bad settings: {exc}", file=sys.stderr)
        return 2
    from .logs import setup_logging

    path = setup_logging(settings.log_path, settings.log_level, stderr=not args.quiet)
    from .logs import get_logger

    get_logger("main").info("logging to %s", path)
    from .server import run

    return run(settings)


def _exit_now(rc: int) -> None:
    """End the process without the interpreter's teardown. The daemon has closed everything itself by
    now (sockets, queue, connection and pid files); what is left is torch's finalization, which takes
    ~2 s on a loaded machine and made ``stop`` slow for nothing."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not change the exit status
            pass
    os._exit(rc)


if __name__ == "__main__":
    _exit_now(main())
