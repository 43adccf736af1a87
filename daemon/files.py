"""Serving a job's files to a client on another machine (the ``fetch`` request).

Only files the daemon wrote for the job are served: its result WAV and sidecar (paths from its queue
row) and its partial previews (``<cache>/partials/<job_id>/partial-NNNN.wav``) — never a path the
client names. Each reply carries one chunk as a raw frame, with the whole file's size and sha256 so the
client checks what it assembled. Hashes are cached by (path, inode, size, mtime): a result never changes
after its atomic rename, so a 40-chunk download hashes it once.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ..client.protocol import FetchReply, FetchRequest, ProtocolError

_HASH_CACHE_SIZE = 64


class FileServer:
    def __init__(self, store: Any, cache_path: Path):
        self.store = store
        self.partials = Path(cache_path) / "partials"
        self._hashes: OrderedDict[tuple[str, int, int, int], str] = OrderedDict()

    def _path(self, req: FetchRequest) -> Path:
        row = self.store.row(req.job_id)
        if row is None:
            raise ProtocolError("not_found", f"no job {req.job_id!r}", field="job_id", wanted="an id from 'jobs'")
        if req.part == "partial":
            folder = self.partials / req.job_id
            if req.name:
                path = folder / req.name
            else:
                found = sorted(folder.glob("partial-*.wav")) if folder.is_dir() else []
                path = found[-1] if found else folder / "partial-0000.wav"
            if not path.is_file():
                raise ProtocolError("not_found", f"job {req.job_id} has no preview {path.name} (none yet, or the job "
                                    "ended and its previews were removed)", field="name")
            return path
        if row["state"] != "done":
            raise ProtocolError("not_found", f"job {req.job_id} is {row['state']}, not done: it has no {req.part} yet",
                                field="job_id", wanted="a done job")
        result = json.loads(row["result"]) if row.get("result") else {}
        path = result.get("path" if req.part == "result" else "sidecar")
        if not path or not Path(path).is_file():
            raise ProtocolError("not_found", f"job {req.job_id}: its {req.part} file is gone from the host "
                                f"({path or 'none recorded'})", field="part")
        return Path(path)

    def _sha256(self, path: Path, st: os.stat_result) -> str:
        key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
        digest = self._hashes.get(key)
        if digest is None:
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            digest = h.hexdigest()
            self._hashes[key] = digest
            while len(self._hashes) > _HASH_CACHE_SIZE:
                self._hashes.popitem(last=False)
        return digest

    def chunk(self, req: FetchRequest) -> tuple[FetchReply, bytes]:
        path = self._path(req)
        # One open file for stat, hash check and read, so a preview replaced meanwhile cannot mix.
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if req.offset > st.st_size:
                raise ProtocolError("invalid_input", f"offset {req.offset} is past the end ({st.st_size} bytes)",
                                    field="offset", wanted=f"0..{st.st_size}")
            digest = self._sha256(path, st)
            fh.seek(req.offset)
            data = fh.read(req.size)
        seconds = None
        if req.part == "result":
            row = self.store.row(req.job_id)
            seconds = (json.loads(row["result"]) if row and row.get("result") else {}).get("seconds")
        return FetchReply(job_id=req.job_id, part=req.part, name=path.name, total_size=st.st_size, sha256=digest,
                          offset=req.offset, length=len(data), seconds=seconds), data
