"""Write safetensors files whose tensors start on 64-byte file offsets, so that once the file is
memory-mapped (page-aligned) every tensor's data is aligned for vector kernels (kernels.py: the CPU
int8 kernel crashes on an 8-byte-aligned weight).

The format has no padding between tensors (readers check that the data offsets are contiguous), so
alignment comes from the order: the header is padded with spaces to end on a 64-byte boundary,
tensors whose byte size is a multiple of 64 come first (each then starts aligned), the rest after,
larger elements first (each still aligned to its own element size). Any safetensors reader reads
the result; ``save_file`` of the safetensors package sorts by dtype and name instead, which puts
tensors wherever the sizes before them end.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

ALIGN = 64
_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
           torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
           torch.bool: "BOOL"}


def layout(sizes: dict[str, tuple[int, int]]) -> list[str]:
    """The write order for {name: (byte size, element size)}: 64-multiples first, then by element
    size (largest first); names break ties (a stable file for the same tensors)."""
    return sorted(sizes, key=lambda n: (sizes[n][0] % ALIGN != 0, -sizes[n][1], n))


def save_aligned(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Like ``safetensors.torch.save_file``, with the alignment described in the module docstring."""
    ts = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    sizes = {k: (t.numel() * t.element_size(), t.element_size()) for k, t in ts.items()}
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    order = layout(sizes)
    off = 0
    for k in order:
        t = ts[k]
        if t.dtype not in _DTYPES:
            raise ValueError(f"{k}: dtype {t.dtype} cannot be stored")
        header[k] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + sizes[k][0]]}
        off += sizes[k][0]
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-(8 + len(raw))) % ALIGN)
    with open(path, "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little"))
        fh.write(raw)
        for k in order:
            t = ts[k]
            if t.numel():
                fh.write(t.reshape(-1).view(torch.uint8).numpy().tobytes())
