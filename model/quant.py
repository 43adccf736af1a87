"""Weight-only int8 / int4 linears for the attention, routed-expert and shared-expert projections
(and the vision tower's linears).

    quantize_model(model, "int8")          # in place: those nn.Linear -> QuantLinear
    save_quantized(model, src_dir, dest)    # a model folder whose safetensors hold the packed weights
    load_model(dest)                        # checkpoint.py: builds QuantLinear from the marker, never fp

Why torch's own kernels and not torchao: on this project's CPU (torch 2.13.0+cpu) torchao's int4 CPU
path needs ``mslk`` (no usable CPU wheel on PyPI), and its int8 path ends in the same aten kernel
used here (``aten._weight_int8pack_mm``). torch ships the gpt-fast CPU kernels
(``_weight_int8pack_mm``, ``_convert_weight_to_int4pack_for_cpu`` + ``_weight_int4pack_mm_for_cpu``),
so there is no new dependency; numbers in bench/README "Memory and quantization".

Formats (what is stored on disk, device independent):

* int8: symmetric per output channel. ``qweight`` int8 [N, K], ``scales`` float32 [N];
  ``w ~ qweight * scales[:, None]``.
* int4: asymmetric, groups of ``group_size`` input columns (128, 64 or 32: the largest dividing K;
  K is zero-padded to a multiple of 32 otherwise, and N to a multiple of 16, which the CPU kernel
  needs). ``qweight`` uint8 [Np, Kp/2] (two 4-bit values per byte, even column in the low nibble),
  ``scale_zeros`` bfloat16 [Kp/G, Np, 2]; ``w ~ (q - 8) * scale + zero`` (the tinygemm convention,
  checked against this dequantisation in tests).

At run time each ``QuantLinear`` picks a kernel for its device once (:meth:`QuantLinear.prepare`,
rules and trials in kernels.py): the fused aten kernel where this weight's shape and alignment are
safe for it and its trial on this shape agrees with the dequantised reference, else "dequant"
(unpack to the activation dtype and ``F.linear``): slower, but the same numbers and static shapes,
so a CUDA graph can capture either. The router gate, embeddings, norms and the codec head stay in
the model dtype (the gate decides routing; the others are small).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Literal

import torch
import torch.nn.functional as F
from torch import nn

QuantMethod = Literal["none", "int8", "int4"]
METHODS = ("none", "int8", "int4")
MARKER = "unimoe_audio_quant"  # key of config.json saying the weights are stored quantized
FORMAT_VERSION = 1

# which nn.Linear of the decoder are quantized (in-memory names)
_QUANT_RE = re.compile(
    r"^language_model\.layers\.\d+\.("
    r"self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.fixed_real_moe\.\d+\.(gate_proj|up_proj|down_proj)"
    r"|mlp\.dynamic_real_moe\.deepspeed_moe\.experts\.deepspeed_experts\.\d+\.(gate_proj|up_proj|down_proj)"
    r")$"
    # the vision tower's linears (0.67 B of the full model's weights; video scoring only)
    r"|^visual\.(blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate_proj|up_proj|down_proj))|merger\.mlp\.(0|2))$")


def is_quantized_linear(name: str) -> bool:
    """Whether the module called ``name`` (in-memory naming) is quantized by :func:`quantize_model`."""
    return bool(_QUANT_RE.match(name))


def check_method(method: str | None) -> str:
    m = (method or "none").lower()
    if m not in METHODS:
        raise ValueError(f"unknown quantization {method!r}; expected one of {', '.join(METHODS)}")
    return m


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def int4_layout(out_features: int, in_features: int) -> tuple[int, int, int]:
    """(group size, padded N, padded K) for an int4 weight [N, K]."""
    for g in (128, 64, 32):
        if in_features % g == 0:
            return g, _round_up(out_features, 16), in_features
    return 32, _round_up(out_features, 16), _round_up(in_features, 32)


# --- quantize / dequantize (pure tensor maths) -----------------------------------------------------------

def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w [N, K] -> (int8 [N, K], float32 scales [N])."""
    scales = (w.abs().amax(dim=1).float() / 127.0).clamp(min=1e-10)
    w = w.float() if w.dtype != torch.float32 else w.clone()
    # in place on the one float copy: quantizing the full model's 7 B weights is memory-bound
    q = w.div_(scales[:, None]).round_().clamp_(-127, 127).to(torch.int8)
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return (q.to(dtype) * scales.to(dtype)[:, None])


def quantize_int4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """w [N, K] -> (uint8 [Np, Kp/2], bf16 scale_zeros [Kp/G, Np, 2], G)."""
    n, k = w.shape
    g, np_, kp = int4_layout(n, k)
    w = F.pad(w.float(), (0, kp - k, 0, np_ - n))
    wg = w.reshape(np_, kp // g, g)
    lo, hi = wg.amin(-1), wg.amax(-1)
    scale = ((hi - lo) / 15.0).clamp(min=1e-8)
    # round the scale and zero first: the kernel sees their bf16 values, so quantize against them
    scale = scale.to(torch.bfloat16).float()
    zero = (lo + 8.0 * scale).to(torch.bfloat16).float()
    q = torch.round((wg - zero[..., None]) / scale[..., None] + 8.0).clamp(0, 15).to(torch.uint8)
    q = q.reshape(np_, kp)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).contiguous()
    sz = torch.stack((scale, zero), dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)  # [Kp/G, Np, 2]
    return packed, sz, g


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [N, K/2] -> int32 values 0..15 [N, K]."""
    lo = (packed & 0x0F).to(torch.int32)
    hi = (packed >> 4).to(torch.int32)
    return torch.stack((lo, hi), dim=-1).reshape(packed.shape[0], -1)


def dequantize_int4(packed: torch.Tensor, scale_zeros: torch.Tensor, group: int, dtype: torch.dtype) -> torch.Tensor:
    """The padded weight [Np, Kp] in ``dtype``."""
    q = unpack_int4(packed)
    n, k = q.shape
    sz = scale_zeros.float().transpose(0, 1)  # [Np, Kp/G, 2]
    w = (q.reshape(n, k // group, group).float() - 8.0) * sz[..., :1] + sz[..., 1:]
    return w.reshape(n, k).to(dtype)


# --- the module ------------------------------------------------------------------------------------------

# The fused kernels take bf16 activations whatever the model's dtype: on an avx2 CPU without native
# bf16, _weight_int8pack_mm on a [1376, 512] weight and 2 rows took 168 us with bf16 input against
# 2,925 us with fp32 input (fp32 F.linear: 300 us), so fp32 models cast in and out around them.
KERNEL_ACT = torch.bfloat16


class QuantLinear(nn.Module):
    """``y = x @ W.T + b`` with W stored int8 or int4 (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, method: str, bias: bool,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        super().__init__()
        if method not in ("int8", "int4"):
            raise ValueError(f"QuantLinear needs int8 or int4, not {method!r}")
        self.in_features, self.out_features, self.method = in_features, out_features, method
        if method == "int8":
            self.group_size, np_, kp = 0, out_features, in_features
            self.register_buffer("qweight", torch.empty((out_features, in_features), dtype=torch.int8, device=device))
            self.register_buffer("scales", torch.empty(out_features, dtype=torch.float32, device=device))
        else:
            self.group_size, np_, kp = int4_layout(out_features, in_features)
            self.register_buffer("qweight", torch.empty((np_, kp // 2), dtype=torch.uint8, device=device))
            self.register_buffer("scale_zeros", torch.empty((kp // self.group_size, np_, 2), dtype=torch.bfloat16,
                                                            device=device))
        self.padded = (np_, kp)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None
        self.act_dtype = dtype
        self._run: tuple | None = None  # (kernel name, tensors) prepared for the device and dtype
        self.refusal: str | None = None  # why the fused kernel was not used (kernels.py), for status
        self._released = False  # the stored codes were dropped for the kernel's own packed copy

    @classmethod
    def from_linear(cls, lin: nn.Linear, method: str) -> "QuantLinear":
        w = lin.weight.detach()
        q = cls(lin.in_features, lin.out_features, method, lin.bias is not None, dtype=w.dtype, device=w.device)
        q.set_weight(w)
        if lin.bias is not None:
            q.bias.data = lin.bias.detach().clone()
        return q

    def set_weight(self, w: torch.Tensor) -> None:
        """Quantize a full-precision weight [N, K] into the buffers."""
        with torch.no_grad():
            if self.method == "int8":
                q, s = quantize_int8(w)
                self.qweight, self.scales = q, s  # on w's device
            else:
                q, sz, _ = quantize_int4(w)
                self.qweight, self.scale_zeros = q, sz
        self._run = None

    def _need_codes(self) -> None:
        if self._released:
            raise RuntimeError("this int4 linear kept only its kernel's packed weights (it ran already); "
                               "quantize or load it again to save, move or dequantize it")

    def stored(self) -> dict[str, torch.Tensor]:
        """The tensors saved for this linear (suffix -> tensor)."""
        self._need_codes()
        out = {"qweight": self.qweight}
        out["scales" if self.method == "int8" else "scale_zeros"] = self.scales if self.method == "int8" \
            else self.scale_zeros
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def dequantized(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight W [N, K] this linear multiplies by (the reference the kernels are checked against)."""
        dtype = dtype or self.act_dtype
        self._need_codes()
        if self.method == "int8":
            return dequantize_int8(self.qweight, self.scales, dtype)
        w = dequantize_int4(self.qweight, self.scale_zeros, self.group_size, dtype)
        return w[: self.out_features, : self.in_features]

    def reference(self, x: torch.Tensor, block: int = 8) -> torch.Tensor:
        """``x @ W.T + b`` in fp32 from the stored codes, a few output rows at a time (no full-precision
        copy of the weight is ever built: a kernel's trial at load costs no memory)."""
        x32 = x.float()
        outs = []
        for r0 in range(0, self.out_features, block):
            r1 = min(r0 + block, self.out_features)
            if self.method == "int8":
                w = dequantize_int8(self.qweight[r0:r1], self.scales[r0:r1], torch.float32)
            else:
                w = dequantize_int4(self.qweight[r0:r1], self.scale_zeros[:, r0:r1], self.group_size, torch.float32)
                w = w[:, : self.in_features]
            outs.append(x32 @ w.t())
        y = torch.cat(outs, dim=1)
        return y if self.bias is None else y + self.bias.float()

    def _apply(self, fn, recurse=True):
        if self._released:
            run = self._run
            out = super()._apply(fn, recurse)
            if run is not None and self.qweight.device == run[1].device:
                self._run = run  # a dtype change keeps the kernel (it takes bf16 activations anyway)
                return out
            self._need_codes()
        self._run = None
        out = super()._apply(fn, recurse)
        # .to(dtype) must not turn the integer codes into floats: only the activation dtype follows
        if self.bias is not None:
            self.act_dtype = self.bias.dtype
        return out

    def to_act_dtype(self, dtype: torch.dtype) -> "QuantLinear":
        self.act_dtype = dtype
        if self.bias is not None:
            self.bias.data = self.bias.data.to(dtype)
        self._run = None
        return self

    # -- kernels ------------------------------------------------------------------------------------------
    def prepare(self, dtype: torch.dtype | None = None) -> str:
        """Pick and build the kernel for the buffers' device and ``dtype``; returns its name. The
        fused kernel only where kernels.py's rules admit this weight (shape and alignment: a crash in
        native code cannot be caught) and its trial on this shape agrees with the dequantised
        weights; else "dequant" for this weight alone."""
        from . import kernels

        dtype = dtype or self.act_dtype
        dev = self.qweight.device
        kind = self._fused_kind(dev)
        run: tuple | None = None
        self.refusal = None
        if kind is not None:
            self.refusal = self._refusal(dev)
            if self.refusal is None and not kernels.try_linear(self, kind, dtype):
                self.refusal = f"{kind} disagreed with the dequantised weights on [{self.out_features}, {self.in_features}]"
            if self.refusal is None:
                try:
                    run = self._build(kind, dtype)
                except (RuntimeError, NotImplementedError, AttributeError) as exc:
                    self.refusal = f"{kind}: {exc}"
        if run is None:
            run = self._build("dequant", dtype)
        self._run = run
        if run[0] in ("int4pack_cpu", "int4pack_cuda"):
            # the kernel holds its own repacked copy: drop the stored codes so int4 costs 0.5 byte a
            # weight, not 1 (saving needs them: quantize and save before running, as convert_folder does)
            self._released = True
            self._buffers["qweight"] = torch.empty(0, dtype=torch.uint8, device=dev)
        return run[0]

    def _fused_kind(self, dev: torch.device) -> str | None:
        if self.method == "int8":
            return "int8pack" if dev.type in ("cpu", "cuda") else None
        if dev.type == "cpu":
            return "int4pack_cpu"
        if dev.type == "cuda":
            return "int4pack_cuda"
        return None

    def _refusal(self, dev: torch.device) -> str | None:
        from . import kernels

        if self.method == "int8":
            return kernels.int8_refusal(dev.type, self.in_features, self.qweight.data_ptr())
        return kernels.int4_refusal(dev.type, self.padded[0], self.padded[1], self.group_size)

    def _build(self, kind: str, dtype: torch.dtype) -> tuple:
        if kind == "int8pack":
            return kind, self.qweight, self.scales.to(KERNEL_ACT)
        if kind == "int4pack_cpu":
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpack_int4(self.qweight), 2)
            return kind, packed, self.scale_zeros.to(KERNEL_ACT)
        if kind == "int4pack_cuda":
            from .kernels import int4_inner_k_tiles

            q = unpack_int4(self.qweight)
            tiles = int4_inner_k_tiles(self.padded[1])  # 8, 4 or 2 for this K (the rules checked it)
            packed = torch.ops.aten._convert_weight_to_int4pack((q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8), tiles)
            return kind, packed, self.scale_zeros.to(KERNEL_ACT)
        return "dequant", None, None

    def _call(self, run: tuple, x: torch.Tensor) -> torch.Tensor:
        kind = run[0]
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        np_, kp = self.padded
        if kind == "dequant":
            y = F.linear(x2, self.dequantized(x.dtype))
        else:
            if kp != self.in_features:
                x2 = F.pad(x2, (0, kp - self.in_features))
            xk = x2.to(KERNEL_ACT).contiguous()
            if kind == "int8pack":
                y = torch.ops.aten._weight_int8pack_mm(xk, run[1], run[2])
            elif kind == "int4pack_cpu":
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(xk, run[1], self.group_size, run[2])
            else:
                y = torch.ops.aten._weight_int4pack_mm(xk, run[1], self.group_size, run[2])
            y = y.to(x.dtype)
            if np_ != self.out_features:
                y = y[:, : self.out_features]
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features)

    @property
    def weight(self) -> torch.Tensor:
        """The integer tensor the kernel reads (code that tracks where weights live, like the CUDA-graph
        decode runner's recapture check, sees it move). Not a float weight: see :meth:`dequantized`."""
        run = self._run
        return run[1] if run is not None and run[1] is not None else self.qweight

    @property
    def kernel(self) -> str | None:
        return None if self._run is None else self._run[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self._run
        if run is None or (run[1] is not None and run[1].device != x.device):
            self.prepare(x.dtype)
            run = self._run
        return self._call(run, x)

    def extra_repr(self) -> str:
        g = f", group_size={self.group_size}" if self.method == "int4" else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.method}{g}"


# --- whole models ----------------------------------------------------------------------------------------

def _set_module(root: nn.Module, name: str, mod: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, mod)


def quantizable(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and is_quantized_linear(n)]


def quantize_model(model: nn.Module, method: str) -> nn.Module:
    """Replace the attention and expert linears by :class:`QuantLinear` (in place; returns ``model``)."""
    method = check_method(method)
    if method == "none":
        return model
    for name, lin in quantizable(model):
        _set_module(model, name, QuantLinear.from_linear(lin, method))
    _forget_stacks(model)
    model.quant = method  # type: ignore[attr-defined]
    return model


def make_quant_skeleton(model: nn.Module, method: str, dtype: torch.dtype, device: torch.device) -> list[str]:
    """Swap the quantized linears of a meta model for empty (meta) :class:`QuantLinear`; returns
    their names. The loader fills them, so no full-precision weight is ever built."""
    names = []
    for name, lin in quantizable(model):
        _set_module(model, name, QuantLinear(lin.in_features, lin.out_features, method, lin.bias is not None,
                                             dtype=dtype, device="meta"))
        names.append(name)
    _forget_stacks(model)
    model.quant = method  # type: ignore[attr-defined]
    return names


def _forget_stacks(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "_stacked"):
            m._stacked = None
        if hasattr(m, "_fused_qkv"):
            m._fused_qkv = None


def quant_of(model: nn.Module) -> str:
    return getattr(model, "quant", "none")


def prepare_kernels(model: nn.Module, dtype: torch.dtype | None = None) -> dict[str, int]:
    """Build every QuantLinear's kernel now (not inside a captured graph; kernels.check_model also
    chooses the experts' matmul); returns {kernel: count}."""
    out: dict[str, int] = {}
    for m in model.modules():
        if isinstance(m, QuantLinear):
            k = m.prepare(dtype)
            out[k] = out.get(k, 0) + 1
    return out


def stored_tensors(model: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """(in-memory name, tensor) of everything a quantized model folder stores."""
    quant = {n: m for n, m in model.named_modules() if isinstance(m, QuantLinear)}
    for name, p in model.named_parameters():
        mod = name.rpartition(".")[0]
        if mod in quant:
            continue
        yield name, p
    for mod, q in quant.items():
        for suffix, t in q.stored().items():
            yield f"{mod}.{suffix}", t


def tensor_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and buffers (what the weights occupy in memory)."""
    seen = set()
    n = 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = (t.data_ptr(), t.numel())
        if key in seen:
            continue
        seen.add(key)
        n += t.numel() * t.element_size()
    return n


def save_quantized(model: nn.Module, src_dir: str | Path, dest: str | Path, method: str,
                   shard_bytes: int = 2 << 30) -> Path:
    """Write ``dest``: ``src_dir``'s non-weight files (config with the marker, tokenizer, dac/...) and
    the quantized model as safetensors shards + index (on-disk key names)."""
    import shutil

    from .safetensors_aligned import save_aligned

    from .keys import to_disk_key

    src, dest = Path(src_dir), Path(dest)
    if not any(isinstance(m, QuantLinear) for m in model.modules()):
        raise ValueError("the model has no quantized linears to save")
    dest.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json" or p.name.startswith("."):
            continue
        if p.name == "config.json":
            continue
        target = dest / p.name
        if p.is_dir():
            shutil.copytree(p, target, dirs_exist_ok=True)
        else:
            shutil.copy2(p, target)
    cfg = json.loads((src / "config.json").read_text())
    cfg[MARKER] = {"method": method, "version": FORMAT_VERSION,
                   "modules": "attention q/k/v/o, routed and shared expert gate/up/down",
                   "int8": "per-output-channel symmetric, float32 scales",
                   "int4": "groups of 128/64/32 input columns, bf16 scale and zero, tinygemm convention"}
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in stored_tensors(model):
        nbytes = t.numel() * t.element_size()
        if size and size + nbytes > shard_bytes:
            shards.append({})
            size = 0
        shards[-1][to_disk_key(name)] = t.detach().to("cpu").contiguous()
        size += nbytes
    wmap = {}
    for i, sh in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        # tensors on 64-byte offsets: memory-mapped, the int8 codes are aligned for the CPU kernel
        save_aligned(sh, dest / fname, metadata={"format": "pt", MARKER: method})
        wmap.update({k: fname for k in sh})
    (dest / "model.safetensors.index.json").write_text(json.dumps({"metadata": {MARKER: method},
                                                                   "weight_map": wmap}, indent=1))
    return dest


def folder_quant(folder: str | Path) -> str:
    """The quantization a model folder's weights are stored in ("none" without the marker)."""
    p = Path(folder)
    cfg = p / "config.json" if p.is_dir() else p.parent / "config.json"
    try:
        raw = json.loads(cfg.read_text())
    except (OSError, ValueError):
        return "none"
    m = raw.get(MARKER)
    return check_method(m.get("method")) if isinstance(m, dict) else "none"
