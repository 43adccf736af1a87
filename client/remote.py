"""Remote workstations: connection profiles, the host's allow list, and receiving a job's files.

A *profile* is what a workstation needs to reach a daemon on another machine: its address, its three
ports, the HMAC signing key and the daemon's CurveZMQ public key — a connection file without a pid.
``unimoe-audio remote export FILE`` writes one on the host; ``unimoe-audio remote add NAME FILE``
installs it on a workstation under ``<config>/remotes/NAME.json`` (user-only), and the ``remote`` setting
(``--host NAME``, ``UNIMOE_AUDIO_REMOTE``) makes every client use it. Liveness of a remote daemon is a
ping, never a pid check (its pid is not a process here).

Light imports only (pyzmq, pydantic, the standard library): Blender's and REAPER's Pythons load it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from . import protocol as P
from .connection import (
    ConnectionInfo,
    ensure_private_dir,
    read_connection_file,
    write_connection_file,
    write_private_file,
)
from .wire import Message, RemoteError, WireError

PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
Z85_KEY = re.compile(r"^[0-9a-zA-Z.\-:+=^!/*?&<>()\[\]{}@%$#]{40}$")
FETCH_CHUNK = 1 << 20
WILDCARD_HOSTS = ("0.0.0.0", "*", "", "::")


class RemoteSetupError(ValueError):
    """A profile or key file is unusable; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------
def is_z85_key(text: str) -> bool:
    """A CurveZMQ public key in Z85 (40 characters that decode to 32 bytes)."""
    if not Z85_KEY.match(text):
        return False
    from zmq.utils import z85

    try:
        return len(z85.decode(text)) == 32
    except Exception:  # noqa: BLE001 - z85 raises ValueError/KeyError on bad input
        return False


def _keys_in_file(path: Path) -> list[str]:
    keys = []
    for n, line in enumerate(path.read_text("utf-8", "replace").splitlines(), 1):
        # Z85 uses '#', so only a line that starts with '#' is a comment; after the key (which has no
        # spaces) anything following whitespace is a note ("KEY  # alice's laptop").
        words = line.split()
        if not words or words[0].startswith("#") and not is_z85_key(words[0]):
            continue
        line = words[0]
        if not is_z85_key(line):
            raise RemoteSetupError(f"curve_allow: {path}:{n} is not a Z85 public key (40 characters, as "
                                   "'unimoe-audio keys' prints)")
        keys.append(line)
    return keys


def load_allowed_keys(entries: Iterable[str]) -> set[bytes]:
    """The client keys of ``curve_allow``: Z85 strings, files of keys (one a line; ``#`` comment lines), or
    folders of ``*.public`` files. Raises RemoteSetupError naming the bad entry."""
    keys: set[str] = set()
    for entry in entries:
        entry = str(entry).strip()
        if not entry:
            continue
        if is_z85_key(entry) and not Path(entry).exists():
            keys.add(entry)
            continue
        path = Path(entry).expanduser()
        if path.is_dir():
            files = sorted(path.glob("*.public"))
            if not files:
                raise RemoteSetupError(f"curve_allow: folder {path} holds no *.public key files")
            for f in files:
                keys.update(_keys_in_file(f))
        elif path.is_file():
            found = _keys_in_file(path)
            if not found:
                raise RemoteSetupError(f"curve_allow: {path} holds no key")
            keys.update(found)
        else:
            raise RemoteSetupError(f"curve_allow: {entry!r} is neither a Z85 public key nor an existing file or "
                                   "folder of keys")
    return {k.encode("ascii") for k in keys}


def persistent_hmac_key(folder: Path) -> str:
    """The daemon's signing key when it serves the network: kept in ``<folder>/hmac.key`` (user-only) so
    that exported profiles stay valid across restarts (on loopback a fresh key per start is enough)."""
    path = ensure_private_dir(Path(folder)) / "hmac.key"
    if path.is_file():
        key = path.read_text("ascii").strip()
        if re.fullmatch(r"[0-9a-f]{64}", key):
            return key
    key = secrets.token_hex(32)
    write_private_file(path, key.encode("ascii") + b"\n")
    return key


# ---------------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------------
def export_profile(connection_file: Path, address: str | None = None) -> ConnectionInfo:
    """A profile of the daemon running here (from its connection file), reachable at ``address``."""
    info = read_connection_file(connection_file)
    if not info.curve_server_key:
        raise RemoteSetupError(f"the daemon (pid {info.pid}) listens on {info.host} only: start it on a network "
                               "address ('unimoe-audio serve --host ADDRESS', with curve_allow set) to export a profile")
    host = address or info.host
    if host in WILDCARD_HOSTS:
        raise RemoteSetupError(f"the daemon listens on every interface ({info.host}); say which address "
                               "workstations should use: --address HOST_OR_IP")
    return info.model_copy(update={"host": host, "pid": 0, "name": ""})


def write_profile(path: Path, info: ConnectionInfo) -> None:
    write_connection_file(Path(path), info)  # user-only, atomic: it holds the signing key


def read_profile(path: Path) -> ConnectionInfo:
    """A profile file (from 'remote export'); its mode is not checked (it may have been copied)."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
        info = ConnectionInfo.model_validate(data)
    except FileNotFoundError:
        raise RemoteSetupError(f"no profile file {path}") from None
    except Exception as exc:  # noqa: BLE001 - JSON or pydantic
        raise RemoteSetupError(f"{path} is not a connection profile: {exc}".splitlines()[0]) from None
    if not info.curve_server_key:
        raise RemoteSetupError(f"{path} has no curve_server_key: export it from a daemon that listens on the "
                               "network ('unimoe-audio remote export' on the host)")
    if info.host in WILDCARD_HOSTS:
        raise RemoteSetupError(f"{path} names no address (host {info.host!r}); export it again with --address")
    return info


def _profile_path(settings: Any, name: str) -> Path:
    if not PROFILE_NAME.match(name):
        raise RemoteSetupError(f"profile name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    return Path(settings.remotes_path) / f"{name}.json"


def install_profile(settings: Any, name: str, source: Path, *, replace: bool = False) -> Path:
    path = _profile_path(settings, name)
    info = read_profile(source)
    if path.exists() and not replace:
        raise RemoteSetupError(f"a profile named {name!r} exists; remove it first ('remote rm {name}') or use --force")
    write_profile(path, info.model_copy(update={"name": name, "pid": 0}))
    return path


def load_profile(settings: Any, name: str) -> ConnectionInfo:
    path = _profile_path(settings, name)
    if not path.is_file():
        have = ", ".join(p.name for p in list_profiles(settings)) or "none"
        raise RemoteSetupError(f"no remote profile named {name!r} (installed: {have}); install one with "
                               "'unimoe-audio remote add NAME FILE'")
    info = read_connection_file(path)  # refuses a file others can read: it holds the signing key
    return info.model_copy(update={"name": name, "pid": 0})


def list_profiles(settings: Any) -> list[ConnectionInfo]:
    folder = Path(settings.remotes_path)
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(Exception):
            out.append(read_connection_file(p).model_copy(update={"name": p.stem, "pid": 0}))
    return out


def remove_profile(settings: Any, name: str) -> bool:
    path = _profile_path(settings, name)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------------------------------
# Receiving a job's file (fetch): chunks on the request socket, checked, renamed into place
# ---------------------------------------------------------------------------------------------------
def receive_file(request: Callable[[P.FetchRequest], Message], job_id: str, dest: Path, *, part: str = "result",
                 name: str | None = None, chunk: int = FETCH_CHUNK, attempts: int = 3) -> P.FetchReply:
    """Fetch a job's file into ``dest``, atomically: chunks go to a temporary file in ``dest``'s folder,
    whose size and sha256 must match the daemon's before it is renamed onto ``dest``. ``request`` sends a
    ``fetch`` request and returns the reply message (``Channel.request_raw``). A file that changes on
    the host while it travels (its sha256 differs between replies) is fetched again, ``attempts`` times."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            first: P.FetchReply | None = None
            digest = hashlib.sha256()
            offset = 0
            changed = False
            with os.fdopen(fd, "wb") as fh:
                while True:
                    msg = request(P.FetchRequest(job_id=job_id, part=part, name=name, offset=offset, size=chunk))
                    if msg.msg_type == "error":
                        raise RemoteError.from_reply(msg.content)
                    rep = P.FetchReply.model_validate(msg.content)
                    data = msg.buffers[0] if msg.buffers else b""
                    if first is None:
                        first = rep
                    elif (rep.sha256, rep.total_size, rep.name) != (first.sha256, first.total_size, first.name):
                        changed = True
                        break
                    if rep.offset != offset or len(data) != rep.length or offset + len(data) > rep.total_size:
                        raise WireError("bad_message", f"fetch of job {job_id}: chunk at {rep.offset} of "
                                        f"{len(data)} bytes does not follow byte {offset}", field="fetch")
                    fh.write(data)
                    digest.update(data)
                    offset += len(data)
                    if offset >= rep.total_size:
                        break
                    if not data:
                        raise WireError("bad_message", f"fetch of job {job_id}: empty chunk at {offset}",
                                        field="fetch")
                if not changed:
                    fh.flush()
                    os.fsync(fh.fileno())
            if changed:
                continue
            assert first is not None
            if offset != first.total_size or digest.hexdigest() != first.sha256:
                raise WireError("bad_message", f"fetch of job {job_id}: got {offset} bytes with sha256 "
                                f"{digest.hexdigest()}, the host has {first.total_size} bytes, {first.sha256}",
                                field="sha256")
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, dest)
            tmp = ""
            return first
        finally:
            if tmp:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    raise WireError("bad_message", f"fetch of job {job_id}: the file kept changing on the host", field="fetch")
