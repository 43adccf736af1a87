"""DAC 16 kHz codec (12 codebooks x 1024, hop 320, 50 frames/s) on transformers' ``DacModel``.

descript-audio-codec cannot be imported beside current torch, but ``DacModel`` computes the same
network. This module adds what it lacks for UniMoE-Audio:

* loading the original ``weights_16khz.pth`` format (weight-norm g/v pairs, ``encoder.block.N``
  names; the mapping is documented in tests/fixtures/dac/README.md) as well as Hugging Face folders;
* encoding with the original package's codebook search (DacModel adds the codebook norm instead of
  subtracting it, which can flip near-ties);
* padding to a multiple of the hop like ``DAC.preprocess``;
* chunked decoding with context frames, so long audio can be streamed with bounded memory.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CheckpointError, InvalidInput

SAMPLE_RATE = 16000
HOP = 320
N_CODEBOOKS = 12
CODEBOOK_SIZE = 1024
ORIGINAL_WEIGHTS = "weights_16khz.pth"
#: Decoded length is HOP * frames - DECODE_TRIM (the decoder's convolutions lose 8 samples).
DECODE_TRIM = 8

# Real 16 kHz model (kwargs stored in weights_16khz.pth); the tiny one keeps the rates, narrows the widths.
FULL_KWARGS = dict(encoder_dim=64, encoder_rates=[2, 4, 5, 8], latent_dim=None, decoder_dim=1536,
                   decoder_rates=[8, 5, 4, 2], n_codebooks=12, codebook_size=1024, codebook_dim=8,
                   quantizer_dropout=False, sample_rate=16000)
TINY_KWARGS = dict(FULL_KWARGS, encoder_dim=8, latent_dim=128, decoder_dim=64)


def _dac_config(kwargs: dict):
    from transformers import DacConfig

    rates = list(kwargs.get("encoder_rates", [2, 4, 5, 8]))
    enc = int(kwargs.get("encoder_dim", 64))
    latent = kwargs.get("latent_dim") or enc * 2 ** len(rates)
    if latent != enc * 2 ** len(rates):
        raise CheckpointError(f"latent_dim {latent} is not encoder_dim * 2**len(rates); DacModel cannot hold it",
                              field="dac")
    dec_rates = list(kwargs.get("decoder_rates", rates[::-1]))
    if dec_rates != rates[::-1]:
        raise CheckpointError(f"decoder_rates {dec_rates} must be the reversed encoder rates {rates}", field="dac")
    return DacConfig(encoder_hidden_size=enc, downsampling_ratios=rates,
                     decoder_hidden_size=int(kwargs.get("decoder_dim", 1536)),
                     n_codebooks=int(kwargs.get("n_codebooks", 12)),
                     codebook_size=int(kwargs.get("codebook_size", 1024)),
                     codebook_dim=int(kwargs.get("codebook_dim", 8)), quantizer_dropout=0.0,
                     sampling_rate=int(kwargs.get("sample_rate", 16000)))


# --- original <-> DacModel key names ----------------------------------------------------------------

_UNIT = ["snake1", "conv1", "snake2", "conv2"]


def _rename_original(key: str, n_rates: int) -> str:
    """Map one original module path (without the tensor name) to DacModel's."""
    m = re.fullmatch(r"encoder\.block\.(\d+)(.*)", key)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        if i == 0:
            return "encoder.conv1" + rest
        if i == n_rates + 1:
            return "encoder.snake1" + rest
        if i == n_rates + 2:
            return "encoder.conv2" + rest
        u = re.fullmatch(r"\.block\.(\d+)(.*)", rest)
        j, tail = int(u.group(1)), u.group(2)
        if j < 3:
            r = re.fullmatch(r"\.block\.(\d+)(.*)", tail)
            return f"encoder.block.{i - 1}.res_unit{j + 1}.{_UNIT[int(r.group(1))]}{r.group(2)}"
        return f"encoder.block.{i - 1}.{'snake1' if j == 3 else 'conv1'}{tail}"
    m = re.fullmatch(r"decoder\.model\.(\d+)(.*)", key)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        if i == 0:
            return "decoder.conv1" + rest
        if i == n_rates + 1:
            return "decoder.snake1" + rest
        if i == n_rates + 2:
            return "decoder.conv2" + rest
        u = re.fullmatch(r"\.block\.(\d+)(.*)", rest)
        j, tail = int(u.group(1)), u.group(2)
        if j == 0:
            return f"decoder.block.{i - 1}.snake1{tail}"
        if j == 1:
            return f"decoder.block.{i - 1}.conv_t1{tail}"
        r = re.fullmatch(r"\.block\.(\d+)(.*)", tail)
        return f"decoder.block.{i - 1}.res_unit{j - 1}.{_UNIT[int(r.group(1))]}{r.group(2)}"
    return key  # quantizer.* keeps its names


def convert_original_state_dict(sd: dict[str, torch.Tensor], n_rates: int) -> dict[str, torch.Tensor]:
    """Original (weight-normed) state dict -> DacModel plain-weight state dict.

    ``torch._weight_norm`` is the op the legacy weight-norm hook calls, so the folded weights are
    bit-identical to what the original computes at run time (a hand-written g*v/||v|| is not).
    """
    out: dict[str, torch.Tensor] = {}
    for name, tensor in sd.items():
        module, _, leaf = name.rpartition(".")
        if leaf == "weight_v":
            continue
        if leaf == "weight_g":
            v = sd.get(f"{module}.weight_v")
            if v is None:
                raise CheckpointError(f"{module}.weight_g has no matching weight_v", field="dac")
            out[_rename_original(module, n_rates) + ".weight"] = torch._weight_norm(v.float(), tensor.float(), 0)
            continue
        out[_rename_original(module, n_rates) + "." + leaf] = tensor.float()
    return out


def to_original_state_dict(model, n_rates: int) -> dict[str, torch.Tensor]:
    """DacModel -> original layout (weight_g/weight_v), the inverse of :func:`convert_original_state_dict`."""
    ours = model.state_dict()
    inverse: dict[str, str] = {}
    for orig in _original_module_names(n_rates, model):
        inverse[_rename_original(orig, n_rates)] = orig
    out: dict[str, torch.Tensor] = {}
    for name, tensor in ours.items():
        module, _, leaf = name.rpartition(".")
        orig = inverse.get(module, module)
        is_conv = leaf == "weight" and tensor.dim() == 3 and not module.endswith("codebook")
        if is_conv:
            g = torch.linalg.vector_norm(tensor, dim=(1, 2), keepdim=True)
            out[f"{orig}.weight_g"] = g.clone()
            out[f"{orig}.weight_v"] = tensor.clone()
        else:
            out[f"{orig}.{leaf}"] = tensor.clone()
    return out


def _original_module_names(n_rates: int, model) -> list[str]:
    names = ["encoder.block.0", f"encoder.block.{n_rates + 1}", f"encoder.block.{n_rates + 2}",
             "decoder.model.0", f"decoder.model.{n_rates + 1}", f"decoder.model.{n_rates + 2}"]
    for i in range(1, n_rates + 1):
        for j in range(3):
            names += [f"encoder.block.{i}.block.{j}.block.{k}" for k in range(4)]
            names += [f"decoder.model.{i}.block.{j + 2}.block.{k}" for k in range(4)]
        names += [f"encoder.block.{i}.block.3", f"encoder.block.{i}.block.4",
                  f"decoder.model.{i}.block.0", f"decoder.model.{i}.block.1"]
    return names


# --- loading ----------------------------------------------------------------------------------------

def _find_weights(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        for cand in (path / ORIGINAL_WEIGHTS, path / "config.json"):
            if cand.exists():
                return cand
        pths = sorted(path.glob("*.pth"))
        if pths:
            return pths[0]
    raise CheckpointError(f"no DAC weights at {path} (wanted {ORIGINAL_WEIGHTS} or a Hugging Face DAC folder)",
                          field="dac")


def _load_original(file: Path):
    from transformers import DacModel

    try:
        blob = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem means a bad file
        raise CheckpointError(f"{file}: not a readable DAC weights file ({exc})", field="dac") from exc
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise CheckpointError(f"{file}: no 'state_dict' in the DAC weights file", field="dac")
    kwargs = dict((blob.get("metadata") or {}).get("kwargs") or FULL_KWARGS)
    config = _dac_config(kwargs)
    model = DacModel(config)
    sd = convert_original_state_dict(blob["state_dict"], len(config.downsampling_ratios))
    _load_strict(model, sd, file)
    return model


def _load_hf_folder(folder: Path):
    from transformers import DacConfig, DacModel

    config = DacConfig.from_pretrained(folder)
    model = DacModel(config)
    st = folder / "model.safetensors"
    if st.is_file():
        from safetensors.torch import load_file

        sd = load_file(str(st))
    elif (folder / "pytorch_model.bin").is_file():
        sd = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{folder}: config.json but no model.safetensors or pytorch_model.bin", field="dac")
    sd = _fold_weight_norm_keys({k: v.float() for k, v in sd.items()})
    _load_strict(model, sd, folder)
    return model


def _fold_weight_norm_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Plain ``.weight`` keys from either weight-norm spelling a Hugging Face folder may hold.

    Folders saved from a model with weight norm applied store ``<m>.parametrizations.weight.original0/1``
    (new API) or ``<m>.weight_g/.weight_v`` (legacy); ``DacModel`` as built here has plain weights.
    """
    pairs = ((".parametrizations.weight.original0", ".parametrizations.weight.original1"), (".weight_g", ".weight_v"))
    out: dict[str, torch.Tensor] = {}
    for name, tensor in sd.items():
        for g_suffix, v_suffix in pairs:
            if name.endswith(v_suffix):
                break
            if name.endswith(g_suffix):
                module = name[: -len(g_suffix)]
                v = sd.get(module + v_suffix)
                if v is None:
                    raise CheckpointError(f"{name} has no matching {v_suffix.lstrip('.')}", field="dac")
                out[module + ".weight"] = torch._weight_norm(v, tensor, 0)
                break
        else:
            out[name] = tensor
    return out


def _load_strict(model, sd: dict[str, torch.Tensor], where: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong:
            parts.append("wrong shape " + ", ".join(f"{k} {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in wrong[:5]))
        raise CheckpointError(f"{where}: DAC weights do not fit: " + "; ".join(parts), field="dac")
    model.load_state_dict(sd, strict=True)


@contextlib.contextmanager
def _full_fp32(device: torch.device):
    """Plain IEEE float32 for cuDNN convolutions and matmuls while the codec runs on CUDA.

    cuDNN convolutions default to TF32 on Ampere and newer; measured on an H100 with the fixture, that flips
    0.9 % of the codes of a 16 kHz input and 6.7 % of the 44.1 kHz prompt's, and moves decoded audio by 1.3e-4.
    With TF32 off the codes are exact and audio is within 3e-7. The flags are process-wide: a convolution
    running at the same moment on another thread also runs in full float32 (slower, never less accurate).
    """
    if device.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


# --- the codec --------------------------------------------------------------------------------------

@dataclass
class DacCodec:
    """Encode 16 kHz mono audio to codes [T, 12] and decode codes back to audio."""

    model: object  # transformers.DacModel, eval mode
    device: torch.device

    sample_rate: int = SAMPLE_RATE
    hop: int = HOP

    @property
    def n_codebooks(self) -> int:
        return int(self.model.config.n_codebooks)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32) -> "DacCodec":
        """``weights_16khz.pth`` (original format), a folder holding it, or a Hugging Face DAC folder.

        ``dtype`` other than float32 (bf16/fp16 on a GPU) halves memory but changes codes near ties and the
        audio in the 3rd-4th digit; the reference runs the DAC in float32.
        """
        file = _find_weights(Path(path).expanduser())
        model = _load_hf_folder(file.parent) if file.name == "config.json" else _load_original(file)
        dev = torch.device(device)
        model = model.to(device=dev, dtype=dtype).eval()
        return cls(model=model, device=dev)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def save_hf(self, folder: str | Path) -> Path:
        """Write a Hugging Face folder (config.json + model.safetensors)."""
        self.model.save_pretrained(str(folder), safe_serialization=True)
        return Path(folder)

    # Encoding -----------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, audio: np.ndarray | torch.Tensor) -> torch.Tensor:
        """float32 mono 16 kHz [n] (or [B, n]) -> int64 codes [T, 12] (or [B, T, 12])."""
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if isinstance(audio, np.ndarray) else audio)
        squeeze = x.dim() == 1
        x = x.reshape(1, -1) if squeeze else x.reshape(x.shape[0], -1)
        if x.shape[-1] == 0:
            raise InvalidInput("no samples to encode", field="audio")
        pad = (-x.shape[-1]) % self.hop
        if not bool(torch.isfinite(x).all()):
            raise InvalidInput("audio contains NaN or infinite samples", field="audio")
        x = F.pad(x.float(), (0, pad)).to(device=self.device, dtype=self.dtype)[:, None]
        with _full_fp32(self.device):
            z = self.model.encoder(x)
            codes = self._quantize(z)  # [B, 12, T]
        codes = codes.transpose(1, 2).cpu()
        return codes[0] if squeeze else codes

    def _quantize(self, z: torch.Tensor) -> torch.Tensor:
        # The original's residual loop, with its codebook distance (||e||^2 - 2 e.c + ||c||^2).
        residual = z
        codes = []
        for q in self.model.quantizer.quantizers:
            z_e = q.in_proj(residual)
            b, d, t = z_e.shape
            enc = F.normalize(z_e.permute(0, 2, 1).reshape(b * t, d))
            book = F.normalize(q.codebook.weight)
            dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ book.t() + book.pow(2).sum(1, keepdim=True).t()
            idx = (-dist).max(1)[1].reshape(b, t)
            z_q = q.codebook(idx).transpose(1, 2)
            z_q = z_e + (z_q - z_e)  # the straight-through form's rounding feeds the residual
            residual = residual - q.out_proj(z_q)
            codes.append(idx)
        return torch.stack(codes, dim=1)

    # Decoding -----------------------------------------------------------------------------------
    def _check_codes(self, codes: torch.Tensor) -> None:
        if codes.shape[-1] != self.n_codebooks:
            raise InvalidInput(f"codes have {codes.shape[-1]} codebooks, wanted {self.n_codebooks}", field="codes")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.model.config.codebook_size):
            raise InvalidInput("codes outside 0..1023", field="codes")

    @torch.inference_mode()
    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """codes [T, 12] -> float32 [320*T - 8]; [B, T, 12] -> [B, 320*T - 8]."""
        c = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes).long()
        squeeze = c.dim() == 2
        c = c[None] if squeeze else c
        self._check_codes(c)
        if c.shape[1] == 0:
            out = np.zeros((c.shape[0], 0), dtype=np.float32)
        else:
            with _full_fp32(self.device):
                audio = self.model.decode(audio_codes=c.transpose(1, 2).to(self.device)).audio_values
            out = audio.reshape(c.shape[0], -1).float().cpu().numpy()
        return out[0] if squeeze else out

    def iter_decode(self, codes: np.ndarray | torch.Tensor, chunk_frames: int = 50,
                    context_frames: int = 12) -> Iterator[np.ndarray]:
        """Decode [T, 12] in chunks for streaming; the blocks concatenate to ~``decode(codes)``.

        Each chunk is decoded with ``context_frames`` of codes on both sides and cut to its own
        samples, so seams match the full decode up to the decoder's (small) receptive-field tail.
        """
        c = torch.as_tensor(np.asarray(codes) if isinstance(codes, np.ndarray) else codes).long()
        if c.dim() != 2:
            raise InvalidInput("iter_decode takes one item's codes [T, 12]", field="codes")
        self._check_codes(c)
        total = c.shape[0]
        if chunk_frames < 1 or context_frames < 0:
            raise InvalidInput("chunk_frames must be >= 1 and context_frames >= 0", field="chunk_frames")
        for start in range(0, total, chunk_frames):
            stop = min(total, start + chunk_frames)
            lo, hi = max(0, start - context_frames), min(total, stop + context_frames)
            audio = self.decode(c[lo:hi])
            a = (start - lo) * self.hop
            b = a + (stop - start) * self.hop
            if stop == total:
                b -= DECODE_TRIM
            yield audio[a:b]

    def seconds_to_frames(self, seconds: float) -> int:
        return int(math.ceil(seconds * self.sample_rate / self.hop))


# --- tiny random DAC ----------------------------------------------------------------------------------

def make_tiny_dac(path: str | Path, seed: int = 0, kwargs: dict | None = None) -> Path:
    """Write a narrow random DAC of the 16 kHz architecture in the ORIGINAL .pth format (``kwargs``:
    its widths, default ``TINY_KWARGS``; ``FULL_KWARGS`` gives the published size, 74 M parameters).

    ``path`` is a folder (the file is ``weights_16khz.pth`` inside) or a ``.pth`` file. Biases and Snake
    alphas are perturbed away from their init values so that a mis-mapped key changes the output and
    the codes vary; the output tanh stays unsaturated.
    """
    from transformers import DacModel

    target = Path(path)
    file = target if target.suffix == ".pth" else target / ORIGINAL_WEIGHTS
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    kwargs = dict(TINY_KWARGS if kwargs is None else kwargs)
    config = _dac_config(kwargs)
    model = DacModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("alpha"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * (0.05 if name.startswith("decoder") else 0.01))
            elif name.endswith("codebook.weight"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif p.dim() == 3:
                fan_in = p.shape[1] * p.shape[2]
                gain = 1.2 if name.startswith("encoder") else 0.6
                p.copy_(torch.randn(p.shape, generator=gen) * gain / math.sqrt(fan_in))
    sd = to_original_state_dict(model, len(config.downsampling_ratios))
    tmp = file.with_suffix(".tmp")
    torch.save({"state_dict": sd, "metadata": {"kwargs": kwargs}}, tmp)
    tmp.replace(file)
    (file.parent / "dac_tiny.json").write_text(json.dumps({"tiny": True, "seed": seed, "kwargs": kwargs}))
    return file
