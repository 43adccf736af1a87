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

A pull is marked in ``<dest>/.cache/unimoe-pull.json`` (:data:`PULL_STATE_NAME`): ``complete`` turns
true only once every file of the model and of its DAC is verified, and ``models ls``/``check`` treat a
folder whose pull is not complete as not installed (``pull_state_problem``), so a killed or refused
pull never leaves a model that looks usable.

The token goes to the hub's own origin only: the hub answers weight downloads with a redirect to its
CDN, and a redirect that leaves the hub's origin loses the ``Authorization`` header, as in
``huggingface_hub``'s own client.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

#: Where the DAC 16 kHz codec comes from when the model repository carries none (``<model>/dac``).
DAC_REPO = "descript/dac_16khz"
VERIFIED_NAME = "unimoe-verified.json"
PULL_STATE_NAME = "unimoe-pull.json"
PROGRESS_MIN_BYTES = 1 << 20  # files this big get a progress line per further 10%
_CHUNK = 4 * 1024 * 1024


class PullError(Exception):
    """The download or its verification failed (the message says which file and why).

    ``resumable``: a rerun continues where this one stopped (a network failure mid-download); the
    message then says so. Refusals (gated, private, missing) are not."""

    def __init__(self, message: str, *, resumable: bool = False):
        super().__init__(message + (" (run again to resume)" if resumable else ""))
        self.resumable = resumable


def hub_origin() -> str:
    """scheme://host[:port] of the hub (``HF_ENDPOINT``): the only origin that sees the token."""
    from huggingface_hub import constants

    return _origin(constants.ENDPOINT)


def _origin(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return f"{u.scheme.lower()}://{(u.hostname or '').lower()}:{port}"


class _HubOnlyAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects, dropping ``Authorization`` on any hop whose origin is not the hub's."""

    def __init__(self, origin: str):
        self.origin = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and _origin(newurl) != self.origin:
            new.remove_header("Authorization")
        return new


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read the way huggingface_hub reads it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _refusal(repo: str, exc: BaseException, token: bool) -> PullError:
    """``token``: whether a token was sent (given, or found by huggingface_hub)."""
    from huggingface_hub import errors

    code = ""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, urllib.error.HTTPError):
        code, status = exc.headers.get("X-Error-Code", "") or "", exc.code
    if isinstance(exc, (errors.GatedRepoError, _Gated)) or code == "GatedRepo":
        if token:
            return PullError(f"{repo} is a gated repository and the token in HF_TOKEN has no access to it: accept "
                             f"its terms on the hub page ({_page(repo)}) with the account the token belongs to, "
                             "then run again")
        return PullError(f"{repo} is a gated repository: accept its terms on the hub page ({_page(repo)}), make a "
                         "read token in your account settings, then run again with HF_TOKEN=hf_... set")
    if isinstance(exc, errors.RevisionNotFoundError) or code == "RevisionNotFound":
        return PullError(f"{repo}: no such revision on the hub (check --revision)")
    if isinstance(exc, errors.RepositoryNotFoundError) or code == "RepoNotFound":
        if token:
            return PullError(f"{repo} was not found on the hub, or the token in HF_TOKEN cannot read it: check the "
                             "repository's name and the token's access")
        return PullError(f"{repo} was not found on the hub, or it is private: check the name; for a private "
                         "repository set HF_TOKEN=hf_... to a token that can read it")
    if status in (401, 403):
        return PullError(f"{repo}: the hub refused the download (HTTP {status}"
                         + (", the token in HF_TOKEN was not accepted" if token else ", no token was sent")
                         + "): set HF_TOKEN to a valid read token")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return PullError(f"{repo}: HF_HUB_OFFLINE is set, so nothing can be downloaded")
    if status is not None and int(status) >= 500:
        return PullError(f"{repo}: the hub answered HTTP {status} (a fault on its side): try again later")
    if isinstance(exc, (urllib.error.URLError, OSError, errors.HfHubHTTPError)) or "Connect" in type(exc).__name__ \
            or "Timeout" in type(exc).__name__:
        return PullError(f"download of {repo} failed: {type(exc).__name__}: {exc}", resumable=True)
    return PullError(f"download of {repo} failed: {type(exc).__name__}: {exc}")


def _page(repo: str) -> str:
    from huggingface_hub import constants

    return f"{constants.ENDPOINT.rstrip('/')}/{repo}"


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
    """(commit, files) of ``repo`` at ``revision`` from the hub's API; refusals become :class:`PullError`s
    that name the fix (gated: accept and set HF_TOKEN; private or missing; bad revision)."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(token=token)
    try:
        info = api.model_info(repo, revision=revision)
        commit = info.sha
        if not commit:
            raise PullError(f"{repo}: the hub gave no commit for revision {revision or 'main'}")
        if getattr(info, "gated", False) and not _have_token(token):
            # The listing of a gated repository is public but its files are not: say so before any download.
            raise _refusal(repo, _Gated(), False)
        files = []
        for f in api.list_repo_tree(repo, revision=commit, recursive=True):
            if isinstance(f, RepoFile):
                files.append(RemoteFile(f.path, int(f.lfs.size if f.lfs else f.size),
                                        f.lfs.sha256 if f.lfs else None, f.blob_id))
    except PullError:
        raise
    except Exception as exc:  # network, auth, missing repo
        raise _refusal(repo, exc, _have_token(token)) from None
    return commit, files


class _Gated(Exception):
    pass


def _have_token(token: str | None) -> bool:
    """Whether a token will be sent: the one given, else the one huggingface_hub finds (HF_TOKEN, login)."""
    if token:
        return True
    from huggingface_hub.utils import get_token

    return bool(get_token())


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
    """Fetch ``url`` into ``part``, continuing what is already there with a Range request (kept on the
    redirect to the CDN; the token is not)."""
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
    opener = urllib.request.build_opener(_HubOnlyAuth(_origin(url)))
    with opener.open(req, timeout=60) as resp:
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
              progress: bool = True, note: Callable[[str], None] = lambda m: None,
              listing: tuple[str, list[RemoteFile]] | None = None) -> tuple[str, list[RemoteFile]]:
    """Download ``repo`` into ``dest`` (resuming partial files), verify every file, return (commit, files).

    Raises :class:`PullError` naming each bad file (they are removed, so a rerun fetches them again)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    commit, files = listing or remote_files(repo, revision, token)
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
            record.pop(f.path, None)
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
            else:
                st = target.stat()
                record[f.path] = [st.st_size, st.st_mtime_ns, want]
    except urllib.error.HTTPError as exc:
        raise _refusal(repo, exc, _have_token(token)) from None
    except (urllib.error.URLError, OSError) as exc:  # the connection broke: the .part files resume
        raise PullError(f"download of {repo} failed: {exc}", resumable=True) from None
    finally:
        record_path.parent.mkdir(parents=True, exist_ok=True)
        record_path.write_text(json.dumps(record, indent=1), "utf-8")
    note(f"verified {len(files) - len(problems)} of {len(files)} file(s) of {repo} (sizes and hashes)")
    if problems:
        raise PullError(f"{repo}: " + "; ".join(problems) + " (the bad files were removed: run again to fetch them)")
    return commit, files


# -- the pull's own record: complete only when the model and its DAC are verified -----------------------

def read_pull_state(model_dir: Path) -> dict[str, Any] | None:
    """The pull record of ``model_dir``, or None when the folder was not made by ``models pull``."""
    try:
        state = json.loads((Path(model_dir) / ".cache" / PULL_STATE_NAME).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_pull_state(model_dir: Path, **state: Any) -> None:
    path = Path(model_dir) / ".cache" / PULL_STATE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1), "utf-8")
    os.replace(tmp, path)


def pull_state_problem(model_dir: Path) -> str | None:
    """What keeps a pulled folder from being installed (its pull did not finish), or None."""
    state = read_pull_state(model_dir)
    if state is None or state.get("complete"):
        return None
    repo = state.get("repo") or "the model"
    return (f"the download of {repo} did not finish (files missing or unverified): "
            f"run 'unimoe-audio models pull {repo}' again to resume it")


def carries_dac(files: list[RemoteFile]) -> bool:
    """Whether a repository's listing holds the DAC weights itself (``dac/`` weights or weights_16khz.pth)."""
    names = {f.path for f in files}
    return any(n.endswith(".pth") and (n.startswith("dac/") or "weights_16khz" in n) for n in names) or (
        "dac/config.json" in names and bool({"dac/model.safetensors", "dac/pytorch_model.bin"} & names))


def remove_if_refused(dest: Path, created: bool) -> None:
    """After a refusal, leave no folder behind that this pull created and filled with nothing of use."""
    if not created or not dest.is_dir():
        return
    useful = [p for p in dest.rglob("*") if p.is_file() and ".cache" not in p.relative_to(dest).parts]
    partial = [p for p in (dest / ".cache").rglob("*.part") if p.stat().st_size > 0] if (dest / ".cache").is_dir() else []
    if not useful and not partial:
        shutil.rmtree(dest, ignore_errors=True)


def dac_weights(folder: Path) -> Path | None:
    """The DAC weights file the codec loader would use in ``folder`` (mirrors model/codec.py without torch):
    ``weights_16khz.pth``, a Hugging Face folder's config.json *with* its model.safetensors or
    pytorch_model.bin, or any ``.pth``; None when there is none."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    if not folder.is_dir():
        return None
    if (folder / "weights_16khz.pth").is_file():
        return folder / "weights_16khz.pth"
    if (folder / "config.json").is_file():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (folder / name).is_file():
                return folder / name
        return None  # the loader picks config.json here and then fails: no DAC
    pths = sorted(folder.glob("*.pth"))
    return pths[0] if pths else None


def has_dac(model_dir: Path) -> bool:
    """Whether ``<model>/dac`` (or a weights_16khz*.pth beside the model) holds DAC weights, not only a config."""
    return dac_weights(Path(model_dir) / "dac") is not None or any(Path(model_dir).glob("weights_16khz*.pth"))
