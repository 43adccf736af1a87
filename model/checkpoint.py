"""Load a UniMoE-Audio checkpoint straight from safetensors (spec 2.3).

Accepted layouts: a folder with ``config.json`` and ``model.safetensors.index.json`` + shards, a
folder with ``model.safetensors`` (or several ``*.safetensors`` and no index), or one
``.safetensors`` file whose folder holds ``config.json``.

Key names: the published files are written by ``save_pretrained``, which renames ``language_model.``
to ``model.``; in-memory names (``language_model.``) are accepted too. The module is built on the
meta device; each tensor is read from the memory-mapped file and materialised once, directly on the
target device and dtype. Every missing, unexpected or mis-shaped key is an error that names the key
and the file; ``visual.*`` and ``lm_head.weight`` are skipped unless asked for.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from .config import ModelConfig, load_config
from .decoder import UniMoEAudioModel
from .errors import CheckpointError
from .keys import normalize_key, to_disk_key

PATCH_KEY = "visual.patch_embed.proj.weight"


def _fail(msg: str) -> CheckpointError:
    return CheckpointError(msg, field="checkpoint")


def weight_files(path: str | Path) -> tuple[Path, dict[Path, list[str] | None]]:
    """(folder holding config.json, {file: keys the index assigns to it, or None = all keys})."""
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".safetensors":
            raise _fail(f"{p} is not a .safetensors file")
        return p.parent, {p: None}
    if not p.is_dir():
        raise _fail(f"no checkpoint at {p}")
    index = p / "model.safetensors.index.json"
    if index.is_file():
        try:
            wmap = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _fail(f"{index}: unreadable index ({exc})") from exc
        files: dict[Path, list[str] | None] = {}
        for key, fname in wmap.items():
            files.setdefault(p / fname, []).append(key)
        for f in files:
            if not f.is_file():
                raise _fail(f"{f.name} is listed in {index.name} but missing from {p}")
        return p, files
    single = p / "model.safetensors"
    if single.is_file():
        return p, {single: None}
    found = sorted(p.glob("*.safetensors"))
    if not found:
        raise _fail(f"no safetensors weights in {p}")
    return p, {f: None for f in found}


def _open(f: Path, device: str):
    from safetensors import safe_open

    try:
        return safe_open(str(f), framework="pt", device=device)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise _fail(f"{f.name}: corrupt or truncated safetensors file ({exc})") from exc


def iter_tensors(path: str | Path, device: str = "cpu") -> Iterator[tuple[str, str, Path, object]]:
    """(normalized name, on-disk name, file, open handle) for every tensor of the checkpoint."""
    _, files = weight_files(path)
    for f, listed in files.items():
        h = _open(f, device)
        keys = set(h.keys())
        if listed is not None:
            absent = sorted(set(listed) - keys)
            if absent:
                raise _fail(f"{f.name} lacks {len(absent)} tensors its index lists, e.g. {absent[:5]}")
        for k in sorted(keys):
            yield normalize_key(k), k, f, h


def _set_param(model: nn.Module, name: str, value: torch.Tensor) -> None:
    mod_name, _, leaf = name.rpartition(".")
    mod = model.get_submodule(mod_name) if mod_name else model
    mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)


def _owned(t: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
    """``t`` in memory of its own: a tensor read from a safetensors file on the CPU is a view of the
    file's mapping, and one such view keeps the whole mapping alive, with every page of the file the
    loader touched (experts restacked, int4 repacked, weights quantized while loading) resident and
    counted in the process's memory although no tensor uses it any more (measured at full size: 21
    GB resident for a 14 GB bf16 model). A copy costs one memcpy at load; the page cache keeps the
    file for the next load anyway."""
    if t is read and t.device.type == "cpu":
        return t.clone()
    return t


def _listing(keys: list[str], limit: int = 8) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
               load_vision: bool = True, load_lm_head: bool = False,
               config: ModelConfig | None = None, quant: str | None = None,
               prepare: bool = True) -> UniMoEAudioModel:
    """``quant`` None/"none": the folder's own storage (full precision, or what its quantization
    marker says); "int8"/"int4": quantize the attention and expert linears tensor by tensor while
    loading (never holding the full-precision model), or load a folder stored that way. ``prepare``
    builds the quantized kernels now (int4 then keeps only the kernel's packed copy; False to save)."""
    from . import quant as Q
    from .allocator import fix_mmap_threshold, malloc_trim
    from .kernels import aligned

    fix_mmap_threshold()  # else the streamed tensors fragment the heap (allocator.py: 24 GB for 7 GB)
    folder, _ = weight_files(path)
    cfg = config or load_config(folder)
    device = torch.device(device)
    stored = Q.folder_quant(folder)
    want = Q.check_method(quant)
    if stored != "none" and want not in ("none", stored):
        raise _fail(f"{folder} is stored as {stored}; it cannot be loaded as {want} "
                    f"(import the full-precision model again with --quant {want})")
    method = stored if stored != "none" else want
    with torch.device("meta"):
        model = UniMoEAudioModel(cfg, vision=load_vision, lm_head=load_lm_head)
    qmods: dict[str, Q.QuantLinear] = {}
    if method != "none":
        for n in Q.make_quant_skeleton(model, method, dtype, device):
            qmods[n] = model.get_submodule(n)
    expected = {n: tuple(p.shape) for n, p in model.named_parameters()}
    buffers: dict[str, torch.Tensor] = {}
    if stored != "none":  # packed codes and scales come from the file
        for n, q in qmods.items():
            for suffix, t in q.stored().items():
                if suffix != "bias":
                    buffers[f"{n}.{suffix}"] = t
    to_quantize = {f"{n}.weight": q for n, q in qmods.items()} if stored == "none" else {}
    open_dev = "cpu" if device.type in ("cpu", "meta", "mps") else str(device)
    loaded: dict[str, Path] = {}
    aligned_copies = 0  # stored quantized tensors copied off a misaligned file offset (kernels.aligned)
    unexpected: list[str] = []
    for name, disk, f, h in iter_tensors(path, open_dev):
        if name.startswith("visual.") and not load_vision:
            continue
        if name == "lm_head.weight" and not load_lm_head:
            continue
        if name not in expected and name not in buffers and name not in to_quantize:
            unexpected.append(f"{disk} ({f.name})")
            continue
        if name in loaded:
            raise _fail(f"{disk} appears twice: in {loaded[name].name} and {f.name}")
        try:
            t = h.get_tensor(disk)
        except Exception as exc:
            raise _fail(f"{f.name}: cannot read {disk} ({exc})") from exc
        if name in buffers:
            ref = buffers[name]
            if tuple(t.shape) != tuple(ref.shape) or t.dtype != ref.dtype:
                raise _fail(f"{disk} in {f.name} is {t.dtype} {list(t.shape)}, expected {ref.dtype} "
                            f"{list(ref.shape)} ({stored} format version {Q.FORMAT_VERSION})")
            mod_name, _, leaf = name.rpartition(".")
            # a memory-mapped tensor starts wherever the file put it: the kernels need it aligned
            moved = t.to(device)
            t2 = aligned(moved)
            aligned_copies += t2 is not moved
            t2 = _owned(t2, t)  # aligned already: still a view of the file's mapping
            qmods[mod_name]._buffers[leaf] = t2
            loaded[name] = f
            continue
        if name in to_quantize:
            q = to_quantize[name]
            want_shape = (q.out_features, q.in_features)
            if tuple(t.shape) != want_shape:
                raise _fail(f"{disk} in {f.name} has shape {list(t.shape)}, expected {list(want_shape)}")
            if not t.is_floating_point():
                raise _fail(f"{disk} in {f.name} has dtype {t.dtype}, expected a float tensor")
            q.set_weight(t.to(device=device, dtype=torch.float32))
            loaded[name] = f
            continue
        want = expected[name]
        if name == PATCH_KEY and t.dim() == 5 and len(want) == 4:
            # a standard Conv3d weight [out, C, kT, P, P]; the reference folds time into channels
            t = t.reshape(t.shape[0], t.shape[1] * t.shape[2], t.shape[3], t.shape[4])
        if tuple(t.shape) != want:
            raise _fail(f"{disk} in {f.name} has shape {list(t.shape)}, expected {list(want)}")
        if not t.is_floating_point():
            raise _fail(f"{disk} in {f.name} has dtype {t.dtype}, expected a float tensor")
        _set_param(model, name, _owned(t.to(device=device, dtype=dtype), t))
        loaded[name] = f
    if unexpected:
        raise _fail(f"unexpected tensors in {folder}: {_listing(unexpected)}")
    missing = sorted((set(expected) | set(buffers) | set(to_quantize)) - set(loaded))
    if missing:
        raise _fail(f"missing tensors in {folder}: {_listing([to_disk_key(m) for m in missing])}")
    model.eval()
    malloc_trim()
    model.aligned_copies = aligned_copies  # type: ignore[assignment]  (kernels.report)
    if method != "none" and prepare:
        Q.prepare_kernels(model, dtype)
    return model
