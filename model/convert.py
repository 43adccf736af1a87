"""Store a full-precision model folder with int8/int4 weights: loaded tensor by tensor, quantizing as it
goes (checkpoint.py), then written by quant.py's ``save_quantized``. What ``models import --quant`` runs
as ``python -m unimoe_audio.model.convert SRC DEST --method int8``."""
from __future__ import annotations

from pathlib import Path

import torch

from .checkpoint import load_model
from .quant import check_method, folder_quant, save_quantized


def convert_folder(src: str | Path, dest: str | Path, method: str) -> Path:
    """Quantize a full-precision model folder into ``dest`` (loads tensor by tensor, quantizing as it
    goes, so the peak is the quantized model plus one tensor)."""
    method = check_method(method)
    if method == "none":
        raise ValueError("nothing to do for quantization 'none'")
    if folder_quant(src) != "none":
        raise ValueError(f"{src} is already quantized ({folder_quant(src)})")
    model = load_model(src, device="cpu", dtype=torch.bfloat16, load_vision=True, quant=method, prepare=False)
    return save_quantized(model, src, dest, method)


def main(argv: list[str] | None = None) -> int:
    """``python -m unimoe_audio.model.convert SRC DEST --method int8`` (what ``models import --quant`` runs)."""
    import argparse

    ap = argparse.ArgumentParser(description="Store a model folder with int8/int4 weights.")
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--method", choices=("int8", "int4"), required=True)
    a = ap.parse_args(argv)
    out = convert_folder(a.src, a.dest, a.method)
    print(out)
    return 0


if __name__ == "__main__":
    # run the imported module's main: classes defined in __main__ would not be the ones the loader uses
    from unimoe_audio.model import convert as _self

    raise SystemExit(_self.main())
