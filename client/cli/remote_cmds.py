"""Remote workstation verbs: ``keys`` (this machine's client key pair) and ``remote`` (connection
profiles: ``export`` on the host, ``add``/``ls``/``rm`` on a workstation). The profile selected with
``--host NAME`` (or the ``remote`` setting) is then used by every other verb."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import connection, curve, remote, wire
from .output import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE, CLIError, emit_json, print_listing
from .parser import add_verb
from .runner import settings_for


def cmd_keys(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    folder = settings.config_path / "curve"
    existed = (folder / "client.public").is_file()
    public, _ = curve.client_keypair(settings.config_path)
    pub = public.decode("ascii")
    out = {"public": pub, "public_file": str(folder / "client.public"), "created": not existed}
    if args.json:
        emit_json(out)
        return EXIT_OK
    print(pub)
    if not args.quiet:
        print(f"# {'new key pair made' if not existed else 'key pair'} in {folder} (the secret stays there).\n"
              f"# On the GPU host add this public key to curve_allow: the string above, or a copy of\n"
              f"# {out['public_file']} (curve_allow takes files too, no shell quoting needed).")
    return EXIT_OK


def _setup_error(exc: Exception) -> CLIError:
    return CLIError(str(exc), EXIT_BAD_INPUT)


def cmd_remote_export(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    try:
        info = remote.export_profile(settings.connection_file, args.address)
    except wire.DaemonNotRunning as exc:
        raise CLIError(f"{exc}; start it on a network address first ('unimoe-audio serve --host ADDRESS')",
                       EXIT_UNAVAILABLE) from None
    except (remote.RemoteSetupError, wire.WireError) as exc:
        raise _setup_error(exc) from None
    if info.pid and not connection.pid_alive(info.pid):
        raise CLIError(f"the connection file {settings.connection_file} is stale (pid {info.pid} is gone); start "
                       "the daemon first", EXIT_UNAVAILABLE)
    remote.write_profile(Path(args.file), info)
    out = {"file": str(Path(args.file).resolve()), "host": info.host,
           "ports": [info.request_port, info.control_port, info.events_port], "curve_server_key": info.curve_server_key}
    if args.json:
        emit_json(out)
    else:
        print(f"profile for {info.host} (TCP {info.request_port}, {info.control_port}, {info.events_port}) written to "
              f"{out['file']} (user-only: it holds the signing key; copy it privately). On a workstation: "
              f"unimoe-audio remote add NAME {Path(args.file).name}")
    return EXIT_OK


def cmd_remote_add(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    try:
        path = remote.install_profile(settings, args.name, Path(args.file), replace=args.force)
    except remote.RemoteSetupError as exc:
        raise _setup_error(exc) from None
    info = remote.load_profile(settings, args.name)
    pub, _ = curve.client_keypair(settings.config_path)
    out = {"name": args.name, "profile": str(path), "host": info.host, "public": pub.decode("ascii")}
    if args.json:
        emit_json(out)
    else:
        print(f"profile {args.name!r} ({info.host}) installed in {path}. Use it with --host {args.name} or "
              f"UNIMOE_AUDIO_REMOTE={args.name}.\nThe host must allow this workstation's key: {out['public']}")
    return EXIT_OK


def cmd_remote_ls(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    profiles = remote.list_profiles(settings)
    rows = [{"name": p.name, "host": p.host, "ports": [p.request_port, p.control_port, p.events_port],
             "selected": p.name == settings.remote} for p in profiles]
    return print_listing(args, rows, ["NAME", "HOST", "PORTS"],
                         lambda r: [("* " if r["selected"] else "") + r["name"], r["host"], " ".join(map(str, r["ports"]))],
                         "no remote profiles (install one with 'unimoe-audio remote add NAME FILE')")


def cmd_remote_rm(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    try:
        removed = remote.remove_profile(settings, args.name)
    except remote.RemoteSetupError as exc:
        raise _setup_error(exc) from None
    if not removed:
        raise CLIError(f"no remote profile named {args.name!r}", EXIT_BAD_INPUT)
    if args.json:
        emit_json({"removed": args.name})
    else:
        print(f"profile {args.name!r} removed")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "keys", help="this workstation's CurveZMQ client key pair (made if missing); prints the public key")
    p.set_defaults(func=cmd_keys)

    p = add_verb(sub, "remote", help="connection profiles of remote GPU hosts: export, add, ls, rm")
    rsub = p.add_subparsers(dest="remote_verb", metavar="ACTION", required=True)
    q = add_verb(rsub, "export", help="on the host: write a profile of the running network daemon to FILE")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--address", help="the address workstations use to reach this host (needed when the daemon "
                   "listens on 0.0.0.0)")
    q.set_defaults(func=cmd_remote_export)
    q = add_verb(rsub, "add", help="on a workstation: install a profile FILE under NAME")
    q.add_argument("name", metavar="NAME")
    q.add_argument("file", metavar="FILE")
    q.add_argument("--force", action="store_true", help="replace a profile of the same name")
    q.set_defaults(func=cmd_remote_add)
    q = add_verb(rsub, "ls", help="list installed profiles (* marks the selected one)")
    q.set_defaults(func=cmd_remote_ls)
    q = add_verb(rsub, "rm", help="remove a profile")
    q.add_argument("name", metavar="NAME")
    q.set_defaults(func=cmd_remote_rm)
