"""Band-limited resampling that reproduces torchaudio's default ``Resample``, without torchaudio.

UniMoE-Audio encodes voice prompts after ``torchaudio.transforms.Resample(sr, 16000)`` (Hann-windowed sinc,
lowpass_filter_width 6, rolloff 0.99). Other resamplers (soxr, julius) change a few percent of the prompt
codes, so the prompt path must use this recipe. torchaudio has no build for our torch, hence this file:

* reduce both rates by their gcd (44100 -> 16000 becomes 441 -> 160);
* one Hann-windowed sinc kernel per output phase, computed in float64 (the phase offsets are formed in
  float32 first, as torchaudio does) and cast to float32;
* pad the input by (width, width + orig), convolve with stride orig, keep ceil(new * n / orig) samples.

Bit-exactness. The kernel is bit-identical to torchaudio's, but the last bit of a float32 convolution depends
on how the BLAS accumulates the 475-tap dot products, which differs between CPUs: a plain ``F.conv1d`` on one
of our machines is 1 ulp off the fixture on 484 of 4800 samples. The fixture (torchaudio on the reference
machine) equals sequential float32 fused multiply-adds over the taps in blocks of 192, the block sums added in
order; ``exact=True`` computes exactly that, with the FMA emulated in float64 (a product of two float32 is
exact in float64, so only a double rounding at a float32 tie could differ: about 2^-29 per step). Zero taps
are skipped (adding +0 is exact), so it walks only the ~35 non-zero taps of each phase (about 1.2 s per
minute of 44.1 kHz audio on one core). The result no longer depends on the CPU, the thread count or the device.
Only 44.1 -> 16 kHz is verified against torchaudio (the one fixture); other rates use the same accumulation
rule, which is an assumption about the reference BLAS. Either way the exact and fast paths differ by ~1e-7, far
below the DAC's smallest codebook margin (6.9e-5 in the fixture), so codes do not depend on it.
``exact=False`` is a plain conv1d (output conversion, oversampling).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
# K-block of the reference machine's sgemm (see the module docstring).
_REFERENCE_K_BLOCK = 192
# Output frames per step of the exact path (bounds its float64 temporaries to a few MB).
_EXACT_ROWS = 8192


@lru_cache(maxsize=32)
def _kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    """Kernel [new, 1, 2*width + orig] (float32, CPU) and width, for gcd-reduced rates. Shared: never mutate."""
    base_freq = min(orig, new) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * orig / base_freq)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    # An integer arange divided by an int is float32 in torch; torchaudio relies on that rounding, so do we.
    phase = torch.arange(0, -new, -1)[:, None, None] / new
    t = (phase + idx) * base_freq
    t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t = t * math.pi
    kernels = torch.where(t == 0, torch.tensor(1.0, dtype=t.dtype), t.sin() / t)
    kernels = kernels * (window * (base_freq / orig))  # this grouping, as torchaudio's, for bit-exactness
    return kernels.to(torch.float32), width


@lru_cache(maxsize=32)
def _sparse_taps(orig: int, new: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per output phase, its non-zero taps in order, padded to a common count S.

    Returns index [S, new] (tap positions), weight [S, new] (float64) and flush [S, new]: True where a tap
    opens a new 192-tap block, so the running block sum is added to the total first. Padding steps have
    weight 0 and never flush, so they add an exact +0.
    """
    k = _kernel(orig, new)[0][:, 0]
    spans = []
    for c in range(new):
        nz = torch.nonzero(k[c]).flatten()
        spans.append((int(nz[0]), int(nz[-1]) + 1) if nz.numel() else (0, 0))
    steps = max(hi - lo for lo, hi in spans)
    index = torch.zeros(steps, new, dtype=torch.long)
    weight = torch.zeros(steps, new, dtype=torch.float64)
    flush = torch.zeros(steps, new, dtype=torch.bool)
    for c, (lo, hi) in enumerate(spans):
        j = torch.arange(lo, hi)
        index[: hi - lo, c] = j
        weight[: hi - lo, c] = k[c, lo:hi].double()
        flush[: hi - lo, c] = (j % _REFERENCE_K_BLOCK) == 0
    return index, weight, flush


def _conv_exact(padded: np.ndarray, orig: int, new: int, n_frames: int) -> np.ndarray:
    """[rows, n] padded float32 input -> [rows, n_frames * new], accumulated like the reference (see above).

    numpy rather than torch: these are small element-wise steps, and torch's OpenMP threads made them 30x
    slower on a loaded machine; numpy runs them on the calling thread without touching global settings.
    """
    index, weight, flush = (t.numpy() for t in _sparse_taps(orig, new))
    kernel_len = _kernel(orig, new)[0].shape[-1]
    out = np.empty((padded.shape[0], n_frames, new), dtype=np.float32)
    starts = np.arange(n_frames) * orig
    for r in range(padded.shape[0]):
        row = padded[r]
        for f0 in range(0, n_frames, _EXACT_ROWS):
            base = starts[f0:f0 + _EXACT_ROWS, None]  # [F, 1] first input sample of each output frame
            total = np.zeros((base.shape[0], new), dtype=np.float32)
            acc = np.zeros_like(total)
            for s in range(index.shape[0]):
                fl = flush[s]
                if fl.any():
                    total = np.where(fl, total + acc, total)
                    acc = np.where(fl, np.float32(0), acc)
                x = row[base + index[s]]  # [F, new]
                acc = (acc.astype(np.float64) + x.astype(np.float64) * weight[s]).astype(np.float32)  # one FMA
            out[r, f0:f0 + base.shape[0]] = total + acc
    assert kernel_len + (n_frames - 1) * orig <= padded.shape[1]
    return out.reshape(padded.shape[0], -1)


def output_length(n: int, orig_sr: int, new_sr: int) -> int:
    """ceil(n * new / orig) in exact integer arithmetic (torchaudio rounds through float32; equal for any
    realistic length, and this one stays exact for very long inputs)."""
    if orig_sr == new_sr:
        return n
    return -(-n * new_sr // orig_sr)


def resample(audio: torch.Tensor | np.ndarray, orig_sr: int, new_sr: int, *,
             exact: bool = False) -> torch.Tensor | np.ndarray:
    """Resample along the last axis; returns the same kind (tensor or array) as given, float32.

    Leading axes (channels, batch) are processed independently. Equal rates return the input unchanged
    (as float32), as torchaudio does. ``exact=True`` reproduces the reference torchaudio output bit for bit on
    any machine (computed on the CPU; use it for model inputs so prompt codes match the reference).
    """
    orig_sr, new_sr = int(orig_sr), int(new_sr)
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    as_numpy = not isinstance(audio, torch.Tensor)
    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)) if as_numpy else audio.float()
    if orig_sr != new_sr and x.shape[-1] == 0:
        x = x.clone()
    elif orig_sr != new_sr:
        g = math.gcd(orig_sr, new_sr)
        orig, new = orig_sr // g, new_sr // g
        kernel, width = _kernel(orig, new)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        n_out = output_length(shape[-1], orig, new)
        padded = F.pad(flat, (width, width + orig))
        if exact:
            y = torch.from_numpy(_conv_exact(padded.cpu().numpy(), orig, new, -(-n_out // new))).to(x.device)
        else:
            y = F.conv1d(padded[:, None], kernel.to(x.device), stride=orig).transpose(1, 2).reshape(flat.shape[0], -1)
        x = y[:, :n_out].reshape(*shape[:-1], n_out)
    return x.numpy() if as_numpy else x
