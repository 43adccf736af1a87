"""A local stand-in for the Hugging Face Hub on 127.0.0.1, serving repositories from folders the way
huggingface_hub expects them (point it there with ``HF_ENDPOINT``).

Endpoints (the ones ``snapshot_download`` calls):

* ``GET /api/models/<repo>[/revision/<rev>]`` - model info: ``id``, ``sha`` (the commit), ``siblings``
* ``GET /api/models/<repo>/tree/<rev>[/<path>]`` - the file listing: size, git blob id (``oid``), and
  ``lfs`` (sha256, size) for the large files
* ``HEAD|GET /<repo>/resolve/<rev>/<path>`` - the file, with ``X-Repo-Commit``, ``ETag`` (sha256 for
  LFS files, the blob id otherwise) and ``Content-Length``; ``Range: bytes=N-`` answers 206

Knobs for tests: ``slow`` (paths sent in small pieces with pauses, so a download can be killed
halfway), ``corrupt`` (paths served with one byte flipped, same size), ``requests`` (a log of
(method, path, range header)).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_MIN_BYTES = 1024  # files at least this big are "LFS" files (the hub's rule is by pattern; size suffices here)


class HubRepo:
    def __init__(self, repo_id: str, folder: Path):
        self.repo_id = repo_id
        self.files: dict[str, bytes] = {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        }
        listing = json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in self.files.items()}).encode()
        self.commit = hashlib.sha1(listing).hexdigest()

    def entry(self, path: str) -> dict:
        data = self.files[path]
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        e = {"type": "file", "path": path, "size": len(data), "oid": blob}
        if len(data) >= LFS_MIN_BYTES:
            e["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return e

    def etag(self, path: str) -> str:
        e = self.entry(path)
        return e["lfs"]["oid"] if "lfs" in e else e["oid"]


class HubServer:
    def __init__(self, repos: dict[str, Path]):
        self.repos = {rid: HubRepo(rid, folder) for rid, folder in repos.items()}
        self.slow: set[str] = set()
        self.corrupt: set[str] = set()
        self.requests: list[tuple[str, str, str | None]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _find(self, parts: list[str]) -> tuple[HubRepo, list[str]] | None:
        for n in (2, 1):
            rid = "/".join(parts[:n])
            if rid in self.repos:
                return self.repos[rid], parts[n:]
        return None

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _json(self, obj, code: int = 200) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _missing(self, what: str) -> None:
                self.send_response(404)
                self.send_header("X-Error-Code", "RepoNotFound" if "repo" in what else "EntryNotFound")
                self.send_header("X-Error-Message", what)
                body = json.dumps({"error": what}).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                hub.requests.append((self.command, url.path, self.headers.get("Range")))
                if parts[:2] == ["api", "models"]:
                    found = hub._find(parts[2:])
                    if found is None:
                        return self._missing("repo not found")
                    repo, rest = found
                    if not rest or rest[:1] == ["revision"]:
                        return self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                                           "private": False, "siblings": [{"rfilename": f} for f in repo.files]})
                    if rest[:1] == ["tree"]:
                        prefix = "/".join(rest[2:])
                        return self._json([repo.entry(f) for f in repo.files if f.startswith(prefix)])
                    return self._missing("unknown api route")
                found = hub._find(parts)
                if found is None:
                    return self._missing("repo not found")
                repo, rest = found
                if rest[:1] != ["resolve"] or len(rest) < 3:
                    return self._missing("unknown route")
                path = "/".join(rest[2:])
                if path not in repo.files:
                    return self._missing(f"no file {path}")
                data = repo.files[path]
                if path in hub.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                self.send_header("X-Repo-Commit", repo.commit)
                self.send_header("ETag", f'"{repo.etag(path)}"')
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.command == "HEAD":
                    return
                body = data[start:]
                try:
                    if path in hub.slow:
                        for i in range(0, len(body), 16384):
                            self.wfile.write(body[i:i + 16384])
                            self.wfile.flush()
                            time.sleep(0.02)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
