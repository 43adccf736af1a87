"""The connection file (``runtime_dir/daemon.json``, user-only 0600): how a client finds the daemon.

Also the private-file helpers it is written with, and the liveness check of the pid it names.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .protocol import PROTOCOL_VERSION, SIGNATURE_SCHEME
from .wire import DaemonNotRunning, WireError

CONNECTION_FILE_NAME = "daemon.json"

class ConnectionInfo(BaseModel):
    model_config = ConfigDict(extra="ignore")

    transport: str = "tcp"
    host: str = "127.0.0.1"
    request_port: int
    control_port: int
    events_port: int
    osc_port: int | None = None
    osc_host: str | None = None
    key: str = Field(description="HMAC-SHA256 signing key (hex).")
    signature_scheme: str = SIGNATURE_SCHEME
    pid: int = 0
    protocol_version: str = PROTOCOL_VERSION
    version: str = ""
    curve_server_key: str | None = Field(None, description="Z85 public key of the daemon when CurveZMQ is on.")
    started: float = 0.0
    model: str = ""
    max_message_bytes: int | None = Field(None, description="Largest request the daemon takes (bytes, all frames); "
                                          "clients refuse to send a bigger one (too_large) without asking.")
    name: str = Field("", description="The remote profile's name ('remote add'); empty for the local daemon.")

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("ascii")

    @property
    def connect_host(self) -> str:
        if self.host in ("0.0.0.0", "*", ""):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host

    def endpoint(self, which: str) -> str:
        port = {"request": self.request_port, "control": self.control_port, "events": self.events_port}[which]
        host = self.connect_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{self.transport}://{host}:{port}"


def ensure_private_dir(path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    return path


def write_private_file(path: Path, data: bytes) -> None:
    """Write atomically (temp file in the same folder, then rename) with mode 0600."""
    path = Path(path)
    ensure_private_dir(path.parent)
    write_atomic(path, data, 0o600, prefix=f".{path.name}.")


def write_atomic(path: Path, data: bytes, mode: int, prefix: str, suffix: str = ".tmp") -> None:
    """Write ``data`` to a temporary file ``<prefix><random><suffix>`` beside ``path`` (mode ``mode``,
    synced), then rename it onto ``path``: the file is complete or absent, never partial."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=Path(path).parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_connection_file(path: Path, info: ConnectionInfo) -> None:
    write_private_file(Path(path), json.dumps(info.model_dump(mode="json"), indent=2).encode("utf-8"))


def read_connection_file(path: Path) -> ConnectionInfo:
    path = Path(path)
    try:
        st = path.stat()
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise DaemonNotRunning(f"no daemon connection file at {path} (is the daemon running?)") from None
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise WireError("bad_message", f"{path} belongs to another user", field="connection_file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise WireError("bad_message", f"{path} is readable by others (wanted mode 0600)", field="connection_file")
    try:
        return ConnectionInfo.model_validate_json(text)
    except Exception as exc:
        raise WireError("bad_message", f"unreadable connection file {path}: {exc}".splitlines()[0],
                        field="connection_file") from None


def remove_connection_file(path: Path, pid: int | None = None) -> bool:
    """Remove the connection file, only if it names ``pid`` (when given). True when removed."""
    path = Path(path)
    if pid is not None:
        try:
            if json.loads(path.read_text("utf-8")).get("pid") != pid:
                return False
        except (OSError, ValueError):
            return False
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False


def pid_alive(pid: int) -> bool:
    """True while process ``pid`` runs. An exited process not yet reaped by its parent (a zombie: a
    detached daemon waits for init, which may reap late) is not alive."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # "pid (comm) state ...": comm may hold spaces and parentheses, so split after the last ')'
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc (macOS, Windows): kill(0) is all we know
