"""Write a safetensors file tensor by tensor, without holding the tensors in memory.

    write_safetensors(path, [(name, "BF16", shape), ...], fill, metadata={"format": "pt"})

The header (names, dtypes, shapes, offsets) is known before any data: ``fill(name, fh, shape)`` then
writes each tensor's bytes in order, straight to the file. The file is what
``safetensors.torch.save_file`` writes (little-endian header length, JSON header padded with spaces to
a multiple of 8, contiguous data in header order), so it loads memory-mapped like any other.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import BinaryIO, Callable, Sequence

DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
               "BOOL": 1}


def write_safetensors(path: str | Path, specs: Sequence[tuple[str, str, Sequence[int]]],
                      fill: Callable[[str, BinaryIO, tuple[int, ...]], None],
                      metadata: dict[str, str] | None = None) -> int:
    """Write ``specs`` (name, safetensors dtype, shape) to ``path`` in order; ``fill`` writes each
    tensor's bytes. Written to ``path.tmp`` then renamed. Returns the file's size in bytes."""
    path = Path(path)
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    sizes = []
    offset = 0
    for name, dtype, shape in specs:
        n = DTYPE_BYTES[dtype]
        for d in shape:
            n *= int(d)
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape], "data_offsets": [offset, offset + n]}
        sizes.append(n)
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for (name, _, shape), n in zip(specs, sizes):
            start = fh.tell()
            fill(name, fh, tuple(int(d) for d in shape))
            if fh.tell() - start != n:
                raise RuntimeError(f"{name}: wrote {fh.tell() - start} bytes, the header says {n}")
    os.replace(tmp, path)
    return 8 + len(raw) + offset
