"""The local models folder: list, validate, import, remove, pull from the Hugging Face hub, make-tiny.

Light on purpose (stdlib + settings): checkpoints are validated by reading ``config.json``, the
safetensors index and each shard's JSON header, never by loading tensors, so this runs in embedded
Pythons without torch. ``huggingface_hub`` is imported lazily, only by :func:`pull_model`. The tiny
model bundle is built by the model layer in a child process (``python -m unimoe_audio.model.tiny_bundle``).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .settings import TINY_MODEL, Settings

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# A safetensors header is JSON; anything this large is not a real header.
_MAX_HEADER = 100 * 1024 * 1024
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


class ModelStoreError(Exception):
    """A model folder is missing, invalid, or an operation on the store failed."""


@dataclass
class ModelCheck:
    """What validating one checkpoint folder found."""

    path: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    shards: int = 0
    tensors: int = 0
    parameters: int = 0
    dtypes: list[str] = field(default_factory=list)
    size_bytes: int = 0
    model_type: str | None = None
    has_tokenizer: bool = False
    has_dac: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ModelInfo:
    name: str
    path: str
    ok: bool
    selected: bool
    size_bytes: int
    shards: int
    parameters: int
    problems: list[str]
    builtin: bool = False
    link: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    """The JSON header of a safetensors file and the byte offset where tensor data starts."""
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ModelStoreError(f"{path.name}: too short to be a safetensors file")
        (n,) = struct.unpack("<Q", raw)
        if n <= 0 or n > _MAX_HEADER:
            raise ModelStoreError(f"{path.name}: bad safetensors header length {n}")
        body = fh.read(n)
    if len(body) != n:
        raise ModelStoreError(f"{path.name}: truncated safetensors header")
    try:
        header = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelStoreError(f"{path.name}: safetensors header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelStoreError(f"{path.name}: safetensors header is not an object")
    return header, 8 + n


def _check_shard(path: Path, check: ModelCheck) -> set[str]:
    """Validate one shard's header against its size; return the tensor names it holds."""
    header, data_start = read_safetensors_header(path)
    size = path.stat().st_size
    names: set[str] = set()
    end_max = 0
    dtypes = set(check.dtypes)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = info["dtype"]
            shape = [int(d) for d in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ModelStoreError(f"{path.name}: tensor {name!r} has a malformed header entry") from None
        count = 1
        for d in shape:
            count *= d
        width = _DTYPE_BYTES.get(dtype)
        if width is not None and end - start != count * width:
            raise ModelStoreError(f"{path.name}: tensor {name!r} spans {end - start} bytes, wanted {count * width}")
        names.add(name)
        dtypes.add(dtype)
        check.parameters += count
        end_max = max(end_max, end)
    if data_start + end_max > size:
        raise ModelStoreError(
            f"{path.name}: truncated ({size} bytes on disk, header needs {data_start + end_max}); "
            "re-run 'unimoe-audio models pull' to resume"
        )
    check.dtypes = sorted(dtypes)
    check.tensors += len(names)
    check.shards += 1
    return names


def validate_model_dir(path: str | os.PathLike[str], dac: str | os.PathLike[str] | None = None) -> ModelCheck:
    """Check that a folder holds everything loading needs, reading JSON and headers only: config, weights
    (every shard's header against its size), the tokenizer files the loader reads, the DAC weights
    (``dac``: the configured ``UNIMOE_AUDIO_DAC``, else ``<model>/dac``), and, for a pulled folder, that its
    pull finished (every file verified). "ok" means the model loads."""
    from . import model_pull

    root = Path(path).expanduser()
    check = ModelCheck(path=str(root), ok=False)
    if not root.is_dir():
        check.problems.append(f"{root} is not a folder")
        return check
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        check.problems.append("config.json is missing")
    else:
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
            if not isinstance(cfg, dict):
                raise ValueError("not a JSON object")
            check.model_type = cfg.get("model_type")
        except (ValueError, UnicodeDecodeError) as exc:
            check.problems.append(f"config.json is not valid JSON ({exc})")
    pulled = model_pull.pull_state_problem(root)
    if pulled:
        check.problems.append(pulled)
    check.has_tokenizer = has_tokenizer(root)
    if not check.has_tokenizer:
        check.problems.append("no tokenizer: tokenizer.json, or vocab.json + merges.txt (in the folder or tokenizer/)")
    check.has_dac = model_pull.dac_weights(Path(dac).expanduser()) is not None if dac else model_pull.has_dac(root)
    if not check.has_dac:
        check.problems.append(f"no DAC codec weights in {Path(dac) if dac else root / 'dac'} (weights_16khz.pth, or "
                              "config.json with model.safetensors): 'unimoe-audio models pull' fetches it, or "
                              "'models import DIR --dac descript/dac_16khz'")
    check.size_bytes = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and ".cache" not in p.parts)

    index_path = root / INDEX_NAME
    try:
        if index_path.is_file():
            try:
                index = json.loads(index_path.read_text(encoding="utf-8"))
                weight_map = index["weight_map"]
                if not isinstance(weight_map, dict) or not weight_map:
                    raise ValueError("empty weight_map")
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise ModelStoreError(f"{INDEX_NAME} is malformed ({exc})") from None
            by_shard: dict[str, set[str]] = {}
            for tensor, shard in weight_map.items():
                by_shard.setdefault(str(shard), set()).add(tensor)
            for shard, wanted in sorted(by_shard.items()):
                shard_path = root / shard
                if not shard_path.is_file():
                    check.problems.append(f"shard {shard} named by the index is missing")
                    continue
                try:
                    have = _check_shard(shard_path, check)
                except ModelStoreError as exc:
                    check.problems.append(str(exc))
                    continue
                missing = wanted - have
                if missing:
                    check.problems.append(
                        f"shard {shard} lacks {len(missing)} tensor(s) the index names, e.g. {sorted(missing)[0]}"
                    )
        else:
            shards = sorted(root.glob("*.safetensors"))
            if not shards:
                check.problems.append(f"no weights: neither {INDEX_NAME} nor any *.safetensors file")
            for shard_path in shards:
                try:
                    _check_shard(shard_path, check)
                except ModelStoreError as exc:
                    check.problems.append(str(exc))
    except ModelStoreError as exc:
        check.problems.append(str(exc))
    check.ok = not check.problems
    return check


def has_tokenizer(root: Path) -> bool:
    """The files model/tokenizer.py loads: tokenizer.json, or vocab.json + merges.txt (root or tokenizer/)."""
    for folder in (root, root / "tokenizer"):
        if (folder / "tokenizer.json").is_file() or ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
            return True
    return False


def _model_dirs(settings: Settings) -> list[Path]:
    root = settings.models_path
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_models(settings: Settings) -> list[ModelInfo]:
    """Installed models, plus the built-in tiny model (always available, random weights)."""
    out = []
    for d in _model_dirs(settings):
        chk = validate_model_dir(d, dac=settings.dac)
        out.append(
            ModelInfo(
                name=d.name, path=str(d), ok=chk.ok, selected=(settings.model == d.name or settings.model == str(d)),
                size_bytes=chk.size_bytes, shards=chk.shards, parameters=chk.parameters, problems=chk.problems,
                link=d.is_symlink(),
            )
        )
    out.append(
        ModelInfo(
            name=TINY_MODEL, path="(built in)", ok=True, selected=settings.model == TINY_MODEL, size_bytes=0, shards=0,
            parameters=0, problems=[], builtin=True,
        )
    )
    return out


def real_model_installed(settings: Settings) -> bool:
    """True when the configured model resolves to a valid checkpoint (not the tiny fallback)."""
    if settings.model == TINY_MODEL:
        return False
    candidate = Path(settings.model).expanduser()
    if not candidate.is_absolute() or not candidate.exists():
        candidate = settings.models_path / settings.model
    return validate_model_dir(candidate, dac=settings.dac).ok


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ModelStoreError(f"bad model name {name!r}: use a plain folder name")
    if name == TINY_MODEL:
        raise ModelStoreError(f"{TINY_MODEL!r} is the built-in model's name; pick another")
    return name


def hf_cache_snapshot_name(src: Path) -> str | None:
    """The repository name of a Hugging Face cache snapshot folder
    (``.../models--org--Name/snapshots/<commit>`` -> ``Name``), or None for any other folder."""
    parts = src.parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].split("--")[-1] or None
    return None


def import_model(
    settings: Settings, src: str | os.PathLike[str], name: str | None = None, *, link: bool = False, force: bool = False,
    quant: str | None = None, dac: str | None = None, note: Any = None,
) -> tuple[Path, ModelCheck]:
    """Validate ``src`` and copy it (or symlink it with ``link``) into the models folder as ``name``.

    ``quant`` "int8"/"int4" stores the attention and expert weights quantized instead of copying
    (done once, by the model layer in a child process, so this module never imports torch); the
    daemon then loads the quantized files directly, without the full-precision peak.

    A Hugging Face cache snapshot (``models--org--Name/snapshots/<commit>``) is named ``Name`` and its
    symlinks into ``blobs/`` become files. A model without DAC weights is refused unless ``dac`` says
    where they come from: a folder (copied into ``<model>/dac``) or a hub repository id (pulled there,
    verified), or ``UNIMOE_AUDIO_DAC`` is set."""
    from . import model_pull

    say = note or (lambda m: None)
    given = Path(src).expanduser()
    src_path = given.resolve()
    snapshot = hf_cache_snapshot_name(given.absolute()) or hf_cache_snapshot_name(src_path)
    chk = validate_model_dir(src_path, dac=settings.dac)
    dac_missing = not chk.has_dac
    problems = [p for p in chk.problems if not (dac_missing and p.startswith("no DAC codec weights"))]
    if problems:
        raise ModelStoreError(f"{src_path} is not a usable checkpoint: " + "; ".join(problems))
    dac_dir = Path(dac).expanduser() if dac and Path(dac).expanduser().exists() else None
    if dac and dac_dir is not None and model_pull.dac_weights(dac_dir) is None:
        raise ModelStoreError(f"--dac {dac}: no DAC weights there (weights_16khz.pth, or config.json with "
                              "model.safetensors)")
    if dac_missing and not dac:
        raise ModelStoreError(
            f"{src_path} has no DAC codec weights (dac/ with weights_16khz.pth, or config.json with model.safetensors)"
            + (" — a Hugging Face cache snapshot holds only the model repository" if snapshot else "")
            + ": add '--dac descript/dac_16khz' to fetch it from the hub, or '--dac FOLDER' to copy one you have")
    if quant in ("none", ""):
        quant = None
    if quant is not None and quant not in ("int8", "int4"):
        raise ModelStoreError(f"unknown quantization {quant!r}: use int8 or int4")
    if quant is not None and link:
        raise ModelStoreError("--link and --quant exclude each other: a quantized import writes new files")
    if dac and link:
        raise ModelStoreError("--link and --dac exclude each other: --dac writes into the model's folder")
    name = _check_name(name or snapshot or src_path.name)
    dest = settings.models_path / name
    if (dest.exists() or dest.is_symlink()) and not force:
        raise ModelStoreError(f"model {name!r} already exists at {dest} (use --force to replace it)")
    settings.models_path.mkdir(parents=True, exist_ok=True)
    tmp = settings.models_path / f".import-{name}-{uuid.uuid4().hex[:8]}"
    try:
        if quant is not None:
            proc = subprocess.run([sys.executable, "-m", "unimoe_audio.model.convert", str(src_path), str(tmp),
                                   "--method", quant], text=True, capture_output=True)
            if proc.returncode != 0:
                raise ModelStoreError(f"quantizing {src_path} to {quant} failed: {_child_failure(proc)}")
        elif not link:
            shutil.copytree(src_path, tmp, ignore=shutil.ignore_patterns(".cache", ".git"))
        if dac and not link:
            if (tmp / "dac").exists():
                shutil.rmtree(tmp / "dac")
            if dac_dir is not None and dac_dir.is_dir():
                shutil.copytree(dac_dir, tmp / "dac", ignore=shutil.ignore_patterns(".cache", ".git"))
            elif dac_dir is not None:  # a weights_16khz.pth file
                (tmp / "dac").mkdir()
                shutil.copy2(dac_dir, tmp / "dac" / dac_dir.name)
            else:
                say(f"fetching the DAC codec from {dac} into {dest / 'dac'}")
                try:
                    model_pull.pull_repo(dac, tmp / "dac", note=say)
                except model_pull.PullError as exc:
                    raise ModelStoreError(f"--dac {dac}: {exc}") from None
        if dest.exists() or dest.is_symlink():
            remove_model(settings, name)  # only now: a failed import leaves the old model in place
        if link:
            dest.symlink_to(src_path, target_is_directory=True)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest, validate_model_dir(dest, dac=settings.dac)


def _child_failure(proc: subprocess.CompletedProcess) -> str:
    """Why a child process failed, in words: its last line of output, or the signal that ended it."""
    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:]
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else str(-proc.returncode)
        hint = " (the system ran out of memory?)" if sig == "SIGKILL" else ""
        return f"the quantizer was killed by {sig}{hint}" + (f"; last output: {tail[0]}" if tail else "")
    return tail[0] if tail else f"exit code {proc.returncode}, no output"


def remove_model(settings: Settings, name: str) -> Path:
    """Delete an installed model (a symlinked import only loses its link)."""
    _check_name(name)
    dest = settings.models_path / name
    if dest.is_symlink():
        dest.unlink()
        return dest
    if not dest.is_dir():
        raise ModelStoreError(f"no model named {name!r} in {settings.models_path}")
    root = settings.models_path.resolve()
    if dest.resolve().parent != root:
        raise ModelStoreError(f"refusing to delete {dest}: not directly inside {root}")
    shutil.rmtree(dest)
    return dest


def pull_model(
    settings: Settings,
    repo: str | None = None,
    name: str | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
    progress: bool = True,
    dac_repo: str | None = None,
    note: Any = None,
) -> tuple[Path, ModelCheck]:
    """Download a checkpoint from the Hugging Face hub into the models folder, with the DAC codec in
    ``<model>/dac`` (from ``dac_repo``, default descript/dac_16khz, when the repo carries none), and
    verify every file's size and hash (client/model_pull.py).

    The folder counts as installed only once every file of the model and of its DAC is verified (the
    pull record in ``.cache``); interrupted downloads resume from ``<dest>/.cache/unimoe-partial``; a
    refusal (gated, private, missing) leaves no folder behind. With ``HF_HUB_OFFLINE`` set nothing is
    downloaded: an installed, complete model is reported as such, anything else is an error saying so.
    """
    from . import model_pull

    repo = repo or settings.hf_repo
    name = _check_name(name or repo.rstrip("/").split("/")[-1])
    dest = settings.models_path / name
    say = note or (lambda m: None)
    try:
        import huggingface_hub  # noqa: F401
    except ImportError as exc:  # pragma: no cover - huggingface_hub is a declared dependency
        raise ModelStoreError("'models pull' needs huggingface_hub: pip install huggingface_hub") from exc
    if model_pull.offline():
        chk = validate_model_dir(dest, dac=settings.dac) if dest.is_dir() else None
        if chk is not None and chk.ok:
            say(f"HF_HUB_OFFLINE is set: nothing downloaded; {name} is already installed at {dest}")
            return dest, chk
        why = "is not installed" if chk is None else "is not usable (" + "; ".join(chk.problems) + ")"
        raise ModelStoreError(f"HF_HUB_OFFLINE is set, so nothing can be downloaded, and {name} {why}: unset "
                              "HF_HUB_OFFLINE to download it, or 'unimoe-audio models import DIR' a copy you have")
    created = not dest.exists()
    try:
        commit, files = model_pull.remote_files(repo, revision, token)  # a refusal here creates nothing
        model_pull.write_pull_state(dest, repo=repo, commit=commit, complete=False)
        model_pull.pull_repo(repo, dest, token=token, progress=progress, note=say, listing=(commit, files))
        dac_from = dac_commit = None
        if not model_pull.carries_dac(files):
            # Always verified, never assumed from what dac/ holds: a killed or refused DAC file is fetched
            # again here (the verified-file record keeps this cheap when all is in place).
            dac_from = dac_repo or model_pull.DAC_REPO
            say(f"fetching the DAC codec from {dac_from} into {dest / 'dac'}")
            dac_commit, _ = model_pull.pull_repo(dac_from, dest / "dac", token=token, progress=progress, note=say)
        model_pull.write_pull_state(dest, repo=repo, commit=commit, dac_repo=dac_from, dac_commit=dac_commit,
                                    complete=True)
    except model_pull.PullError as exc:
        if not exc.resumable:
            model_pull.remove_if_refused(dest, created)
        raise ModelStoreError(str(exc)) from None
    return dest, validate_model_dir(dest, dac=settings.dac)


MAKE_TINY_SIZES = ("tiny", "small", "full")  # model/tiny.py SIZES (this module never imports torch)


def make_tiny(directory: str | os.PathLike[str], size: str = "tiny", seed: int = 0,
              note: Any = None) -> subprocess.CompletedProcess[str]:
    """Build a random-weight model bundle of ``size`` in ``directory`` via the model layer, in a child
    process; its progress lines ("wrote model-00002-of-00004.safetensors (2/4)") go to ``note``."""
    if size not in MAKE_TINY_SIZES:
        raise ModelStoreError(f"unknown size {size!r}: use one of {', '.join(MAKE_TINY_SIZES)}")
    cmd = [sys.executable, "-m", "unimoe_audio.model.tiny_bundle", str(Path(directory).expanduser()),
           "--size", size, "--seed", str(int(seed))]
    proc = subprocess.Popen(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    err: list[str] = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        err.append(line)
        if note is not None and line.startswith("wrote "):
            note(line.strip())
    out = proc.stdout.read()
    rc = proc.wait()
    return subprocess.CompletedProcess(cmd, rc, out, "".join(err))


def human_bytes(n: int) -> str:
    """Bytes in decimal units (1 GB = 10**9 bytes): the one unit of the memory estimate, its log line,
    ``status``, ``models ls`` and the ``memory_budget`` setting."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}" if size >= 10 else f"{size:.2f} {unit}"
        size /= 1000
    return f"{n} B"
