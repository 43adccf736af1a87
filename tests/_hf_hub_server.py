"""A local stand-in for the Hugging Face Hub on 127.0.0.1, serving repositories from folders the way
huggingface_hub's client expects them (point it there with ``HF_ENDPOINT``). Written from the hub's
observable behaviour as huggingface_hub's client reads it, not from its code; a test proves it faithful
by ``huggingface_hub.snapshot_download`` fetching the same repositories byte-identical.

Two origins, as on the real hub: the hub itself (API, ``resolve``) and a CDN on another port. Endpoints:

* ``GET /api/models/<repo>[/revision/<rev>]`` - model info: ``id``, ``sha`` (the commit), ``siblings``,
  ``gated`` (False, or "manual" for a gated repository: its info and listing are public, its files not)
* ``GET /api/models/<repo>/tree/<rev>[/<path>]`` - the file listing: size, git blob id (``oid``), and
  ``lfs`` (sha256, size) for the large files
* ``HEAD|GET /<repo>/resolve/<rev>/<path>`` - a small file: 200 with ``X-Repo-Commit``, ``ETag`` (its blob
  id), ``Content-Length``; an LFS file: 302 to the CDN origin with ``X-Linked-Etag`` (sha256) and
  ``X-Linked-Size``, as the hub answers weights
* CDN ``HEAD|GET /blobs/<sha256>?sig=...`` - the bytes; ``Range: bytes=N-`` answers 206
* errors carry ``X-Error-Code`` / ``X-Error-Message``: ``RepoNotFound`` (404, or 401 for a private repo
  without a token that can read it), ``GatedRepo`` (401 without a token, 403 with one not on the repo's
  access list), ``RevisionNotFound``, ``EntryNotFound``; a token the hub does not know gets 401
  "Invalid credentials in Authorization header".

Knobs for tests: ``slow`` (paths sent in pieces with pauses, ``pace`` = (bytes, seconds), so a
download can be killed halfway), ``corrupt`` (paths served with one byte flipped, same size), ``requests`` (a log of
:class:`Seen`: origin, method, path, range and authorization headers of every request, hub and CDN).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_MIN_BYTES = 1024  # files at least this big are "LFS" files (the hub's rule is by pattern; size suffices here)


@dataclass
class Seen:
    origin: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorization: str | None

    def __iter__(self):  # (method, path, range), as the older tests unpack it
        return iter((self.method, self.path, self.range))


class HubRepo:
    def __init__(self, repo_id: str, folder: Path, *, private: bool = False, gated: bool = False,
                 readers: set[str] | None = None):
        self.repo_id = repo_id
        self.private, self.gated = private, gated
        self.readers = set(readers or ())  # tokens that may read a private or gated repository
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


class HubServer:
    def __init__(self, repos: dict[str, Path], *, private: set[str] = frozenset(), gated: set[str] = frozenset(),
                 tokens: dict[str, set[str]] | None = None):
        """``tokens``: token -> the private/gated repos it may read (every token listed is a valid one)."""
        tokens = tokens or {}
        self.tokens = set(tokens)
        self.repos = {rid: HubRepo(rid, folder, private=rid in private, gated=rid in gated,
                                   readers={t for t, rs in tokens.items() if rid in rs})
                      for rid, folder in repos.items()}
        self.slow: set[str] = set()
        self.corrupt: set[str] = set()
        self.pace = (16384, 0.02)  # what ``slow`` sends at a time, and the pause between
        self.requests: list[Seen] = []
        self._blobs: dict[str, tuple[HubRepo, str]] = {}  # sha256 -> (repo, path), for the CDN
        for repo in self.repos.values():
            for path in repo.files:
                e = repo.entry(path)
                if "lfs" in e:
                    self._blobs[e["lfs"]["oid"]] = (repo, path)
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("hub"))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), self._handler("cdn"))
        for s in (self._hub, self._cdn):
            s.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self._hub, self._cdn)]

    def __enter__(self) -> "HubServer":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        for s in (self._hub, self._cdn):
            s.shutdown()
            s.server_close()

    def seen(self, origin: str | None = None) -> list[Seen]:
        return [r for r in self.requests if origin is None or r.origin == origin]

    def _find(self, parts: list[str]) -> tuple[HubRepo, list[str]] | None:
        for n in (2, 1):
            rid = "/".join(parts[:n])
            if rid in self.repos:
                return self.repos[rid], parts[n:]
        return None

    def _handler(self, origin: str):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, headers: dict[str, str], body: bytes = b"") -> None:
                self.send_response(code)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD" and body:
                    self.wfile.write(body)

            def _json(self, obj, code: int = 200) -> None:
                self._send(code, {"Content-Type": "application/json"}, json.dumps(obj).encode())

            def _error(self, code: int, error_code: str | None, message: str) -> None:
                headers = {"Content-Type": "application/json", "X-Error-Message": message}
                if error_code:
                    headers["X-Error-Code"] = error_code
                self._send(code, headers, json.dumps({"error": message}).encode())

            def _token(self) -> str | None | bool:
                """The bearer token; False for one the hub does not know."""
                auth = self.headers.get("Authorization")
                if not auth:
                    return None
                tok = auth.removeprefix("Bearer ").strip()
                return tok if tok in hub.tokens else False

            def _refuse(self, repo: HubRepo, files: bool) -> bool:
                """Answer a refusal (and return True) when this request may not read ``repo``."""
                tok = self._token()
                if tok is False:
                    self._error(401, None, "Invalid credentials in Authorization header")
                    return True
                if repo.private and tok not in repo.readers:
                    self._error(401, "RepoNotFound", "Repository not found")
                    return True
                if repo.gated and files and tok not in repo.readers:
                    if tok is None:
                        self._error(401, "GatedRepo", f"Access to model {repo.repo_id} is restricted. You must have "
                                                      "access to it and be authenticated to access it. Please log in.")
                    else:
                        self._error(403, "GatedRepo", f"Access to model {repo.repo_id} is restricted and you are not "
                                                      "in the authorized list.")
                    return True
                return False

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                url = urlparse(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                hub.requests.append(Seen(origin, self.command, url.path, self.headers.get("Range"),
                                         self.headers.get("Authorization")))
                if origin == "cdn":
                    return self._cdn(parts)
                if parts[:2] == ["api", "models"]:
                    return self._api(parts[2:])
                found = hub._find(parts)
                if found is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                repo, rest = found
                if rest[:1] != ["resolve"] or len(rest) < 3:
                    return self._error(404, None, "unknown route")
                if self._refuse(repo, files=True):
                    return
                if rest[1] not in ("main", repo.commit):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
                path = "/".join(rest[2:])
                if path not in repo.files:
                    return self._error(404, "EntryNotFound", f"{path} does not exist on {rest[1]}")
                e = repo.entry(path)
                if "lfs" in e:  # weights live on the CDN: redirect there, as the hub does
                    return self._send(302, {"Location": f"{hub.cdn_url}/blobs/{e['lfs']['oid']}?sig=stand-in",
                                            "X-Repo-Commit": repo.commit, "ETag": f'"{e["oid"]}"',
                                            "X-Linked-Etag": f'"{e["lfs"]["oid"]}"',
                                            "X-Linked-Size": str(e["size"])})
                self._bytes(repo, path, {"X-Repo-Commit": repo.commit, "ETag": f'"{e["oid"]}"'})

            def _api(self, parts: list[str]) -> None:
                found = hub._find(parts)
                if found is None:
                    return self._error(404, "RepoNotFound", "Repository not found")
                repo, rest = found
                if self._refuse(repo, files=False):
                    return
                if rest[:1] == ["revision"] and rest[1:2] and rest[1] not in ("main", repo.commit):
                    return self._error(404, "RevisionNotFound", f"Invalid rev id: {rest[1]}")
                if not rest or rest[:1] == ["revision"]:
                    return self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit,
                                       "private": repo.private, "gated": "manual" if repo.gated else False,
                                       "siblings": [{"rfilename": f} for f in repo.files]})
                if rest[:1] == ["tree"]:
                    prefix = "/".join(rest[2:])
                    return self._json([repo.entry(f) for f in repo.files if f.startswith(prefix)])
                return self._error(404, None, "unknown api route")

            def _cdn(self, parts: list[str]) -> None:
                if parts[:1] != ["blobs"] or len(parts) != 2 or parts[1] not in hub._blobs:
                    return self._error(404, None, "no such blob")
                repo, path = hub._blobs[parts[1]]
                self._bytes(repo, path, {"ETag": f'"{parts[1]}"'})

            def _bytes(self, repo: HubRepo, path: str, headers: dict[str, str]) -> None:
                data = repo.files[path]
                if path in hub.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                for k, v in headers.items():
                    self.send_header(k, v)
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
                        step, pause = hub.pace
                        for i in range(0, len(body), step):
                            self.wfile.write(body[i:i + step])
                            self.wfile.flush()
                            time.sleep(pause)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
