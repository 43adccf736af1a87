"""Media that remote workstations send with their requests (the ``upload`` request).

A remote client (one that connected with a CurveZMQ key other than this host's own) never names a path on
the host: it uploads each input file (reference audio, a video, a voice recording) and puts
``sha256:<hex>`` in the path field. Files are content-addressed per client, so a file is sent once and a
second client cannot name the first one's media. Layout: ``<data>/uploads/<client>/<sha256>`` (complete,
checked) and ``<sha256>.part`` (being received; resumed from its size). Each client has a quota
(``upload_quota_mb``; least recently used uploads make room first) and uploads expire
``upload_keep_days`` after their last use (sweeps at start and on each new upload).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..client.protocol import (
    MEDIA_REF_PREFIX,
    ProtocolError,
    UploadReply,
    UploadRequest,
    input_media_fields,
    is_media_ref,
)
from ..client import connection
from ..client.models_store import human_bytes
from .logs import get_logger

log = get_logger("uploads")

LOCAL = "local"  # the folder of clients that may also pass host paths (loopback, this host's own key)
RECENT_USE_S = 3600.0  # an upload used this recently is not evicted for room (a queued job may need it)


@dataclass(frozen=True)
class Peer:
    """Who sent a request: ``user`` is the CurveZMQ public key (Z85) on an encrypted socket, else ""."""

    user: str = ""
    remote: bool = False

    @property
    def folder_name(self) -> str:
        if not self.user:
            return LOCAL
        return hashlib.sha256(self.user.encode()).hexdigest()[:24]


class UploadStore:
    def __init__(self, root: Path, quota_bytes: int, keep_s: float):
        self.root = Path(root)
        self.quota = int(quota_bytes)
        self.keep_s = float(keep_s)
        connection.ensure_private_dir(self.root)

    def _dir(self, peer: Peer) -> Path:
        d = self.root / peer.folder_name
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    # -- receiving ---------------------------------------------------------------------------------
    def receive(self, peer: Peer, req: UploadRequest, buffers: list[bytes]) -> UploadReply:
        if len(buffers) > 1:
            raise ProtocolError("invalid_input", "an upload carries at most one chunk frame", field="frames")
        chunk = buffers[0] if buffers else b""
        folder = self._dir(peer)
        final, part = folder / req.sha256, folder / f"{req.sha256}.part"
        ref = MEDIA_REF_PREFIX + req.sha256
        if final.is_file():
            if final.stat().st_size != req.size:
                raise ProtocolError("invalid_input", f"{req.name or ref}: the host holds this sha256 with "
                                    f"{final.stat().st_size} bytes, not {req.size}", field="size")
            os.utime(final)
            return UploadReply(sha256=req.sha256, size=req.size, received=req.size, complete=True, ref=ref)
        have = part.stat().st_size if part.is_file() else 0
        if have > req.size:  # a part of another size under this hash: start over
            part.unlink()
            have = 0
        if not chunk or req.offset != have:
            if have == 0 and req.offset == 0:
                self._make_room(folder, req.size, req.name or ref)
            return UploadReply(sha256=req.sha256, size=req.size, received=have)
        if have + len(chunk) > req.size:
            raise ProtocolError("invalid_input", f"{req.name or ref}: chunk runs past the file's size {req.size}",
                                field="offset", wanted=f"a chunk of at most {req.size - have} bytes at offset {have}")
        if have == 0:
            self._make_room(folder, req.size, req.name or ref)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, chunk)
        finally:
            os.close(fd)
        have += len(chunk)
        if have < req.size:
            return UploadReply(sha256=req.sha256, size=req.size, received=have)
        digest = _sha256(part)
        if digest != req.sha256:
            part.unlink()
            raise ProtocolError("invalid_input", f"{req.name or ref}: the bytes received hash to {digest}, not "
                                f"{req.sha256} (changed while sending?); send it again", field="sha256")
        os.replace(part, final)
        log.info("upload %s (%s, %s) complete from client %s", req.sha256[:12], req.name or "-", human_bytes(req.size),
                 peer.folder_name)
        return UploadReply(sha256=req.sha256, size=req.size, received=have, complete=True, ref=ref)

    def _make_room(self, folder: Path, size: int, what: str) -> None:
        """Expire old uploads, then evict this client's least recently used ones until ``size`` fits."""
        self.sweep()
        files = [(p, p.stat()) for p in folder.iterdir() if p.is_file()]
        used = sum(st.st_size for _, st in files)
        if used + size <= self.quota:
            return
        now = time.time()
        for p, st in sorted(files, key=lambda f: f[1].st_mtime):
            if used + size <= self.quota:
                break
            if now - st.st_mtime < RECENT_USE_S:
                continue
            with contextlib.suppress(OSError):
                p.unlink()
                used -= st.st_size
                log.info("upload %s evicted for room (client %s)", p.name[:12], folder.name)
        if used + size > self.quota:
            raise ProtocolError(
                "quota_exceeded", f"{what} ({human_bytes(size)}) does not fit this workstation's upload quota on the "
                f"host: {human_bytes(used)} of {human_bytes(self.quota)} in use by uploads of the last hour",
                field="size", wanted="a smaller file, a later try, or a larger upload_quota_mb on the host")

    def sweep(self) -> int:
        """Remove uploads (and unfinished parts) unused for ``keep_s``; returns how many."""
        removed = 0
        cutoff = time.time() - self.keep_s
        with contextlib.suppress(OSError):
            for folder in self.root.iterdir():
                if not folder.is_dir():
                    continue
                for p in folder.iterdir():
                    with contextlib.suppress(OSError):
                        if p.stat().st_mtime < cutoff:
                            p.unlink()
                            removed += 1
        if removed:
            log.info("removed %d expired upload(s)", removed)
        return removed

    # -- resolving the media a request names -------------------------------------------------------
    def resolve(self, peer: Peer, value: str, field: str) -> str:
        """The host path for a path field's ``value``: an upload's file for ``sha256:<hex>``; the value
        itself for a local client's path. A remote client's path is never looked at on this disk."""
        if is_media_ref(value):
            path = self._dir(peer) / value[len(MEDIA_REF_PREFIX):]
            if not path.is_file():
                raise ProtocolError("not_found", f"no upload {value} from this workstation on the host (never sent, "
                                    "or expired after upload_keep_days)", field=field,
                                    wanted="upload the file again (the client does this by itself)")
            os.utime(path)  # in use: not expired or evicted while its job waits
            return str(path)
        if peer.remote:
            raise ProtocolError(
                "path_not_allowed", f"{value} is a path on your workstation; this host reads no paths for remote "
                "clients (its own disk may hold a different file of the same name)", field=field,
                wanted="the file uploaded first (unimoe-audio clients do this by themselves): sha256:<hex>")
        return value

    def resolve_request(self, peer: Peer, msg_type: str, req: Any) -> None:
        """Replace each input media field of ``req`` (in place) by the host path it stands for."""
        for dotted in input_media_fields(msg_type):
            *parents, name = dotted.split(".")
            obj = req
            for p in parents:
                obj = getattr(obj, p, None)
            value = getattr(obj, name, None) if obj is not None else None
            if isinstance(value, str) and value:
                setattr(obj, name, self.resolve(peer, value, dotted))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
