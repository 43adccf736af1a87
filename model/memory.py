"""How much memory a model needs before it is loaded, and how much the device has.

    est = estimate(model_dir, dtype=torch.float32, quant="none", load_vision=True)
    est.total_bytes        # weights + load transients + runtime (KV cache, codec, framework)
    check_fits(est, available_bytes(device, budget_gb), device)   # MemoryTooSmall with advice

Everything is computed from ``config.json`` and the safetensors headers (no tensor is read), so the
daemon can refuse a load that would be killed by the OOM killer and say what would fit instead
("needs 28.6 GB, 22.1 GB free: use dtype bfloat16 or quant int8").

What the device has: the ``memory_budget`` setting when given (``UNIMOE_AUDIO_MEMORY_BUDGET``, in
GB; a cap you choose, e.g. to leave room for a DAW), else CUDA's free memory
(``torch.cuda.mem_get_info``), else the system's available memory (``MemAvailable``, bounded by a
cgroup v2 ``memory.max`` when the process runs in a container). MPS shares system memory.
"""
from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import UniMoEError

GB = 1e9
_DT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
             "F8_E4M3": 1, "F8_E5M2": 1}
# the framework itself once the model runs (allocator caches, kernels' workspaces, Python objects)
_RUNTIME_OVERHEAD = {"cpu": 0.3 * GB, "cuda": 0.6 * GB, "mps": 0.5 * GB}
KV_ROWS = 8  # a CFG batch of 4 items
KV_TOKENS = 2048  # one 19.6 s window plus its prompt


class MemoryTooSmall(UniMoEError):
    """The configured model, dtype and quantization do not fit the memory the device has."""

    code = "out_of_memory"


@dataclass
class Estimate:
    device: str
    dtype: str
    quant: str
    weights_bytes: int = 0  # the loaded weights (quantized linears at their packed size)
    transient_bytes: int = 0  # extra during loading / first forward (one tensor in fp32, one layer restacked)
    runtime_bytes: int = 0  # KV cache for KV_ROWS x KV_TOKENS, the DAC codec, framework overhead
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.transient_bytes + self.runtime_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        return d


def _headers(folder: Path) -> list[dict[str, Any]]:
    files = sorted(folder.glob("*.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
    out = []
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            out.append(json.loads(fh.read(n)))
    return out


def _dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def folder_specs(folder: Path) -> list[tuple[str, str, list[int]]]:
    """(on-disk name, safetensors dtype, shape) of every tensor of a model folder (headers only)."""
    return [(k, v["dtype"], [int(d) for d in v["shape"]]) for h in _headers(folder) for k, v in h.items()
            if k != "__metadata__"]


def estimate(model_dir: str | Path, *, dtype: torch.dtype, quant: str = "none", device: str = "cpu",
             load_vision: bool = True, kv_rows: int = KV_ROWS, kv_tokens: int = KV_TOKENS) -> Estimate:
    """Memory the model in ``model_dir`` needs with ``dtype`` and ``quant`` (see the module docstring)."""
    from . import quant as Q

    folder = Path(model_dir)
    stored = Q.folder_quant(folder)
    cfg = json.loads((folder / "config.json").read_text())
    dac = folder / "dac"
    dac_bytes = sum(p.stat().st_size for p in dac.rglob("*") if p.is_file()) if dac.is_dir() else 0
    return estimate_specs(folder_specs(folder), cfg, stored=stored, dtype=dtype, quant=quant, device=device,
                          load_vision=load_vision, dac_bytes=dac_bytes, kv_rows=kv_rows, kv_tokens=kv_tokens)


def estimate_specs(specs: list[tuple[str, str, list[int]]], cfg: dict[str, Any], *, stored: str, dtype: torch.dtype,
                   quant: str, device: str, load_vision: bool, dac_bytes: int, kv_rows: int = KV_ROWS,
                   kv_tokens: int = KV_TOKENS) -> Estimate:
    """:func:`estimate` from tensor specs and a config dict (also for sizes whose weights are absent)."""
    from . import quant as Q
    from .checkpoint import normalize_key

    method = stored if stored != "none" else Q.check_method(quant)
    wb = _dtype_bytes(dtype)
    dev = torch.device(device).type
    est = Estimate(device=dev, dtype=str(dtype).replace("torch.", ""), quant=method)
    weights = 0
    largest = 0
    per_layer_experts: dict[str, int] = {}
    for disk, sdt, shape in specs:
        info = {"dtype": sdt}
        if True:
            name = normalize_key(disk)
            if (name.startswith("visual.") and not load_vision) or name == "lm_head.weight":
                continue
            numel = 1
            for d in shape:
                numel *= d
            mod, _, leaf = name.rpartition(".")
            if Q.is_quantized_linear(mod) and method != "none":
                if stored != "none":  # packed codes and scales as stored (+ int4 scales in the act dtype)
                    b = numel * _DT_BYTES.get(info["dtype"], 4)
                    if leaf == "scale_zeros" and wb > 2:
                        b = b * wb // 2
                elif leaf == "weight":
                    n, k = shape
                    if method == "int8":
                        b = n * k + 4 * n
                    else:
                        g, np_, kp = Q.int4_layout(n, k)
                        b = np_ * kp // 2 + (kp // g) * np_ * 2 * max(wb, 2)
                else:  # bias
                    b = numel * wb
                largest = max(largest, numel * 4 * 3)  # quantizing works on one weight in fp32
            else:
                is_float = info["dtype"].startswith(("F", "BF"))
                b = numel * (wb if is_float else _DT_BYTES.get(info["dtype"], 4))
                largest = max(largest, numel * 4 if dev == "cpu" else numel * wb)
            weights += b
            if ".experts.deepspeed_experts." in name and method == "none":
                layer = name.split(".mlp.")[0]
                per_layer_experts[layer] = per_layer_experts.get(layer, 0) + b
    est.weights_bytes = int(weights)
    # load: one tensor converted at a time; first forward: one layer's experts restacked at a time
    est.transient_bytes = int(largest + max(per_layer_experts.values(), default=0))
    t = cfg.get("text_config", cfg)
    heads = int(t.get("num_attention_heads", 1))
    head_dim = int(t.get("hidden_size", 0)) // max(heads, 1)
    kv = 2 * int(t.get("num_hidden_layers", 0)) * int(t.get("num_key_value_heads", heads)) * head_dim
    kv_bytes = kv * kv_rows * kv_tokens * wb
    overhead = int(_RUNTIME_OVERHEAD.get(dev, 0.3 * GB))
    est.runtime_bytes = int(kv_bytes + dac_bytes + overhead)
    est.parts = {"kv_cache": int(kv_bytes), "codec": int(dac_bytes), "framework": overhead}
    return est


def _cgroup_available() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(int(limit) - used, 0)
    except (OSError, ValueError):
        return None


def system_available() -> int | None:
    """Available system memory in bytes (Linux MemAvailable, bounded by a cgroup limit), or None."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        try:  # macOS and others: total physical memory (an upper bound)
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = None
    cg = _cgroup_available()
    if cg is not None:
        avail = cg if avail is None else min(avail, cg)
    return avail


def available_bytes(device: torch.device, budget_gb: float | None = None) -> tuple[int | None, str]:
    """(bytes the model may use, where the figure comes from)."""
    if budget_gb is not None:
        return int(budget_gb * GB), "memory_budget setting"
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free), "CUDA free memory"
        except RuntimeError:
            return None, "unknown"
    return system_available(), "system available memory"


def _gb(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= 10 * GB else f"{n / GB:.2f} GB"


def advice(model_dir: str | Path, est: Estimate, avail: int, *, load_vision: bool = True) -> list[str]:
    """The settings (changed one at a time, cheapest loss first) under which the model would fit."""
    out = []
    cands: list[tuple[str, torch.dtype, str]] = []
    cur_dtype = getattr(torch, est.dtype)
    if est.dtype == "float32" and est.quant == "none":
        cands.append(("dtype bfloat16", torch.bfloat16, "none"))
    if est.quant == "none":
        cands.append(("quant int8", cur_dtype, "int8"))
    if est.quant in ("none", "int8"):
        cands.append(("quant int4", cur_dtype, "int4"))
    for label, dt, q in cands:
        if estimate(model_dir, dtype=dt, quant=q, device=est.device, load_vision=load_vision).total_bytes <= avail:
            out.append(label)
    return out


def check_fits(model_dir: str | Path, est: Estimate, avail: int | None, source: str, *,
               load_vision: bool = True) -> None:
    """Raise :class:`MemoryTooSmall` (naming what would fit) when ``est`` exceeds ``avail``."""
    if avail is None or est.total_bytes <= avail:
        return
    opts = advice(model_dir, est, avail, load_vision=load_vision)
    what = f"{est.dtype}" + (f", quant {est.quant}" if est.quant != "none" else "")
    msg = (f"the model needs {_gb(est.total_bytes)} on {est.device} ({what}), {_gb(avail)} free ({source})")
    if opts:
        wanted = "use " + " or ".join(opts)
    else:
        wanted = "free memory, raise memory_budget, or use a device with more memory (even quant int4 does not fit)"
    err = MemoryTooSmall(f"{msg}: {wanted}", field="memory", wanted=wanted)
    err.estimate, err.available, err.source = est, avail, source  # for the daemon's status
    raise err
