"""``models pull``: download a checkpoint and its DAC codec from the Hugging Face hub, resuming, then
verify every file's size and hash against the hub's listing.

huggingface_hub answers the questions (the commit of a revision, the file listing with sizes, sha256
and blob ids, each file's URL and request headers; ``HF_ENDPOINT`` for mirrors). The bytes are fetched
here, because recent huggingface_hub (2.x, as installed) writes each download to a fresh per-process temp file and deletes it
when interrupted, so a killed pull of a 30 GB model would start over. Here a file grows in
``<dest>/.cache/unimoe-partial/<path>.part`` and a later pull asks for the rest with ``Range``.

Each finished file is hashed against the listing: sha256 for LFS files, the git blob id (sha1 of
``blob <size>\\0`` + content) for small ones. A file that does not match is deleted so the next pull
fetches it again. Verified files are remembered (size, mtime, hash) in
``<dest>/.cache/unimoe-verified.json`` so a re-run does not re-hash gigabytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: Where the DAC 16 kHz codec comes from when the model repository carries none (``<model>/dac``).
DAC_REPO = "descript/dac_16khz"
VERIFIED_NAME = "unimoe-verified.json"
PROGRESS_MIN_BYTES = 1 << 20  # files this big get a progress line per further 10%
_CHUNK = 4 * 1024 * 1024


class PullError(Exception):
    """The download or its verification failed (the message says which file and why)."""


@dataclass
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1 (every file)


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1()
    h.update(b"blob %d\0" % path.stat().st_size)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def remote_files(repo: str, revision: str | None, token: str | None = None) -> tuple[str, list[RemoteFile]]:
    """(commit, files) of ``repo`` at ``revision`` from the hub's API."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(token=token)
    commit = api.model_info(repo, revision=revision).sha
    if not commit:
        raise PullError(f"{repo}: the hub gave no commit for revision {revision or 'main'}")
    files = []
    for f in api.list_repo_tree(repo, revision=commit, recursive=True):
        if isinstance(f, RepoFile):
            files.append(RemoteFile(f.path, int(f.lfs.size if f.lfs else f.size),
                                    f.lfs.sha256 if f.lfs else None, f.blob_id))
    return commit, files


def _check(path: Path, f: RemoteFile) -> str | None:
    """None when ``path`` is the hub's file, else what is wrong."""
    size = path.stat().st_size
    if size != f.size:
        return f"{f.path}: {size} bytes, the hub lists {f.size}"
    want = f.sha256 or f.blob_id
    got = sha256_of(path) if f.sha256 else git_blob_sha1(path) if f.blob_id else None
    if want is not None and got != want:
        return f"{f.path}: {'sha256' if f.sha256 else 'git blob id'} {got} differs from the hub's {want}"
    return None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _download(url: str, part: Path, size: int, headers: dict[str, str], report: Callable[[int], None]) -> None:
    """Fetch ``url`` into ``part``, continuing what is already there with a Range request."""
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if have > size:
        have = 0
    if have == size and size > 0:
        return
    req_headers = dict(headers)
    req_headers["Accept-Encoding"] = "identity"
    if have:
        req_headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=req_headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        if have and resp.status != 206:  # the server ignored the Range: start over
            have = 0
        with part.open("ab" if have else "wb") as fh:
            report(have)
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                fh.write(block)
                have += len(block)
                report(have)


def pull_repo(repo: str, dest: Path, *, revision: str | None = None, token: str | None = None,
              progress: bool = True, note: Callable[[str], None] = lambda m: None) -> str:
    """Download ``repo`` into ``dest`` (resuming partial files), verify it, return the commit."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    try:
        commit, files = remote_files(repo, revision, token)
    except PullError:
        raise
    except Exception as exc:  # network, auth, missing repo
        raise PullError(f"download of {repo} failed: {type(exc).__name__}: {exc} (run again to resume)") from None
    dest.mkdir(parents=True, exist_ok=True)
    cache = dest / ".cache"
    record_path = cache / VERIFIED_NAME
    try:
        record: dict[str, Any] = json.loads(record_path.read_text("utf-8"))
    except (OSError, ValueError):
        record = {}
    note(f"{repo} at {commit[:12]}: {len(files)} file(s), {_human(sum(f.size for f in files))}")
    headers = build_hf_headers(token=token)
    problems = []
    try:
        for f in files:
            target = dest / f.path
            want = f.sha256 or f.blob_id
            if target.is_file():
                st = target.stat()
                if record.get(f.path) == [st.st_size, st.st_mtime_ns, want] or _check(target, f) is None:
                    record[f.path] = [st.st_size, st.st_mtime_ns, want]
                    continue
            part = cache / "unimoe-partial" / (f.path + ".part")
            shown = [-1]

            def report(done: int, _f: RemoteFile = f, _shown: list[int] = shown) -> None:
                step = 10 if _f.size == 0 else int(10 * done / _f.size)
                if progress and _f.size >= PROGRESS_MIN_BYTES and step > max(0, _shown[0]):
                    _shown[0] = step
                    note(f"{_f.path}: {step * 10}% of {_human(_f.size)}")

            _download(hf_hub_url(repo, f.path, revision=commit), part, f.size, headers, report)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
            problem = _check(target, f)
            if problem:
                problems.append(problem)
                target.unlink(missing_ok=True)
                record.pop(f.path, None)
            else:
                st = target.stat()
                record[f.path] = [st.st_size, st.st_mtime_ns, want]
    except (urllib.error.URLError, OSError) as exc:
        raise PullError(f"download of {repo} failed: {exc} (run again to resume)") from None
    finally:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1), "utf-8")
    note(f"verified {len(files) - len(problems)} of {len(files)} file(s) of {repo} (sizes and hashes)")
    if problems:
        raise PullError(f"{repo}: " + "; ".join(problems) + " (the bad files were removed: run again to fetch them)")
    return commit


def has_dac(model_dir: Path) -> bool:
    d = model_dir / "dac"
    return (d / "config.json").is_file() or any(d.glob("*.pth")) or any(model_dir.glob("weights_16khz*.pth"))
