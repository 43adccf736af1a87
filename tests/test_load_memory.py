"""What loading leaves in memory. The loader fixes glibc's mmap threshold (model/allocator.py): without it, the full-size int8 import
fragmented the heap to 24 GB for a 7 GB result and was killed (CI). The mechanism is checked where it
acts: after a large block is freed, glibc's dynamic threshold would serve the next multi-MB tensor from
the heap; with the fixed threshold it gets a mapping of its own, returned to the system on free."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from unimoe_audio.client.models_store import _child_failure

PROBE = r"""
import json, sys, torch
from unimoe_audio.model import allocator
fixed = allocator.fix_mmap_threshold() if sys.argv[1] == "fix" else None
big = torch.empty(16 << 20, dtype=torch.uint8); big.fill_(1); del big   # raises the dynamic threshold
t = torch.empty(4 << 20, dtype=torch.uint8); t.fill_(1)
ptr = t.data_ptr()
where = None
for line in open("/proc/self/maps"):
    rng, *rest = line.split()
    lo, hi = (int(x, 16) for x in rng.split("-"))
    if lo <= ptr < hi:
        where = {"heap": line.rstrip().endswith("[heap]")}
print(json.dumps({"fixed": fixed, "where": where}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what the fix tunes")
def test_fixed_threshold_maps_large_tensors_on_their_own():
    with_fix = _probe("fix")
    assert with_fix["fixed"] is True
    # a mapping of its own (the kernel may merge it with neighbouring ones), not the brk heap
    assert with_fix["where"] is not None and not with_fix["where"]["heap"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc is what the fix tunes")
def test_without_the_fix_the_block_lands_in_the_heap():
    # the control: the probe above can fail (glibc's dynamic threshold is what hoards the memory)
    assert _probe("none")["where"]["heap"] is True


def test_a_killed_quantizer_is_named_not_silent():
    proc = subprocess.run([sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
                          capture_output=True, text=True)
    msg = _child_failure(proc)
    assert "killed by SIGKILL" in msg and "out of memory" in msg
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.exit('bad folder: no config.json')"],
                          capture_output=True, text=True)
    assert _child_failure(proc) == "bad folder: no config.json"


def test_a_loaded_model_maps_none_of_its_files(tmp_path):
    # a tensor read from a safetensors file is a view of the file's mapping, which keeps every page the
    # loader touched resident (21 GB for the 14 GB full-size bf16 model); the loader copies instead
    from unimoe_audio.model.checkpoint import load_model
    from unimoe_audio.model.tiny import make_tiny_checkpoint

    folder = make_tiny_checkpoint(tmp_path / "m")
    for quant in (None, "int8"):
        model = load_model(folder, device="cpu", dtype=torch.bfloat16, quant=quant)  # no conversion: views
        mapped = [line for line in open("/proc/self/maps") if str(folder) in line]
        assert mapped == [], (quant, mapped[:2])
        assert sum(p.numel() for p in model.parameters()) > 0


def test_the_peak_meter_leaves_out_the_files_a_load_reads(tmp_path):
    # while loading, pages of the weight files read through a mapping are page cache, not the process's
    # own memory (VmHWM counts them: 16.9 vs 14.9 GB at full size bf16); afterwards everything resident counts
    import mmap

    from unimoe_audio.model.memory import PeakMeter

    f = tmp_path / "weights.bin"
    f.write_bytes(b"\1" * (64 << 20))
    meter = PeakMeter(start=False)
    with open(f, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        with meter.loading():
            assert sum(mm[i] for i in range(0, len(mm), 4096)) == (64 << 20) // 4096  # every page read
            st = meter._status()
            counted = meter.sample()
            assert abs(counted - st["RssAnon"] - st.get("RssShmem", 0)) < 8 << 20 and st["RssFile"] >= 64 << 20
        during = meter.peak
        assert during < counted + (32 << 20)  # the 64 MB file was left out
        meter.sample()  # loaded: the whole resident set, the mapped file included
        assert meter.peak >= during + (60 << 20)
