"""Sending a workstation's own media to a remote daemon (the ``upload`` request).

A remote host never reads a workstation's paths (its own disk may hold a different file under the same
name). Before a request that names input media (reference audio, a video, a voice recording: each task's
``input_files``, listed by :func:`~unimoe_audio.client.protocol.input_media_fields`) goes to a remote
host, each file is sent over the same signed, encrypted connection, in chunks, and the field is replaced by ``sha256:<hex>``.
The host keeps uploads by content, so a file it already has is not sent again (one small request), and
an interrupted upload resumes where the host's copy ends. The host checks the whole file's sha256.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel

from . import protocol as P

#: Default bytes per chunk; each upload request (content + chunk) must stay under max_message_bytes.
CHUNK = 1 << 20
_HEADROOM = 16 * 1024
_ATTEMPTS = 4  # a chunk lost to a timeout is asked for again (the host says where its copy ends)

_hashes: dict[tuple[str, int, int, int], str] = {}

# send(content: UploadRequest, chunk: bytes | None) -> UploadReply
Send = Callable[[P.UploadRequest, "bytes | None"], P.UploadReply]


def file_sha256(path: Path) -> tuple[str, int]:
    """(hex sha256, size) of a file; cached by inode, size and mtime (a take re-sent is hashed once)."""
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    digest = _hashes.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        digest = _hashes[key] = h.hexdigest()
    return digest, st.st_size


def chunk_size(max_message_bytes: int | None) -> int:
    if not max_message_bytes:
        return CHUNK
    return max(1024, min(CHUNK, P.UPLOAD_CHUNK_MAX, max_message_bytes - _HEADROOM))


def upload_file(send: Send, path: str | os.PathLike[str], *, chunk: int = CHUNK,
                progress: Callable[[int, int], Any] | None = None, retry: tuple[type[BaseException], ...] = ()) -> str:
    """Send one file; returns its ref (``sha256:<hex>``). ``retry``: exceptions after which the host is
    asked how much it holds and the upload goes on from there."""
    p = Path(path).expanduser()
    digest, size = file_sha256(p)
    base = P.UploadRequest(sha256=digest, size=size, offset=0, name=p.name[:255])
    failures = 0
    reply = send(base, None)  # does the host have it, or part of it?
    with open(p, "rb") as fh:
        while not reply.complete:
            offset = reply.received
            if progress:
                progress(offset, size)
            fh.seek(offset)
            data = fh.read(chunk)
            if len(data) != min(chunk, size - offset):
                raise OSError(f"{p} changed while it was being sent")
            try:
                reply = send(base.model_copy(update={"offset": offset}), data)
            except retry:
                failures += 1
                if failures >= _ATTEMPTS:
                    raise
                reply = send(base, None)
    if progress:
        progress(size, size)
    return reply.ref


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def with_uploads(msg_type: str, request: BaseModel, send: Send, **kw: Any) -> BaseModel:
    """``request`` with each input media path replaced by the ref of its uploaded copy (a value that is
    already a ref is kept)."""
    for dotted in P.input_media_fields(msg_type):
        value = _get(request, dotted)
        if not isinstance(value, str) or not value or P.is_media_ref(value):
            continue
        try:
            ref = upload_file(send, value, **kw)
        except OSError as exc:
            raise P.ProtocolError("not_found", f"{value}: {exc.strerror or exc}", field=dotted,
                                  wanted="a readable file on this machine") from None
        *parents, name = dotted.split(".")
        request = _replace(request, parents, name, ref)
    return request


def _replace(model: BaseModel, parents: list[str], name: str, value: Any) -> BaseModel:
    if not parents:
        return model.model_copy(update={name: value})
    child = getattr(model, parents[0])
    return model.model_copy(update={parents[0]: _replace(child, parents[1:], name, value)})
