"""Dense decoder pieces: RMSNorm, multimodal rotary embedding (M-RoPE) and GQA attention (spec 3.2-3.4).

Numerics follow the reference: RMSNorm maths in fp32 with a down-cast before the weight multiply;
rotary frequencies and angles in fp32, cos/sin cast to the activation dtype; rotation applied in the
activation dtype; post-RoPE keys are what the KV cache stores.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from . import invariant
from .config import TextConfig

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel as _sdpa_kernel

    _NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
except ImportError:  # older torch: no cuDNN attention backend to avoid
    _sdpa_kernel = None

# When to keep SDPA off its cuDNN backend on CUDA. cuDNN attention builds an execution graph per
# shape (tens to hundreds of ms, seen on an H100 with torch 2.11), and a decode step's key length
# changes every step, so eager decode steps paid that build every step. "decode": avoid it for
# one-token steps; "always": never use it; "never": let torch choose.
AVOID_CUDNN_SDPA = "decode"
# q/k/v projections as one matmul (see Attention._qkv_weights); False: three, as before (benchmarks)
FUSE_QKV = True


def sdpa_context(device: torch.device, q_len: int):
    """The SDPA backend choice for a forward of ``q_len`` new tokens (see ``AVOID_CUDNN_SDPA``)."""
    if _sdpa_kernel is None or device.type != "cuda":
        return contextlib.nullcontext()
    if AVOID_CUDNN_SDPA == "always" or (AVOID_CUDNN_SDPA == "decode" and q_len == 1):
        return _sdpa_kernel(_NO_CUDNN)
    return contextlib.nullcontext()


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        # the reference multiplies in the activation dtype, after the down-cast
        return self.weight * x32.to(dtype)


class MRotary:
    """cos/sin tables for 3-axis (t, h, w) positions, merged by ``mrope_section``.

    Not a module and holds no buffers: ``inv_freq`` is recomputed in fp32 per device, so a model
    built on the meta device needs no buffer fix-up after loading.
    """

    def __init__(self, head_dim: int, theta: float, mrope_section: tuple[int, ...]):
        self.head_dim = head_dim
        self.theta = theta
        self.section = tuple(mrope_section)
        self._inv: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        inv = self._inv.get(device)
        if inv is None:
            # 1 / theta^(2i/d) computed in fp32 exactly like the reference; never via bf16
            inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64, device=device).float()
                                        / self.head_dim))
            self._inv[device] = inv
        return inv

    def __call__(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """position_ids [rows, L] (same on all axes) or [3, rows, L] -> cos, sin [rows, L, head_dim]."""
        inv = self.inv_freq(position_ids.device)
        if position_ids.dim() == 2:
            # equal axes: the M-RoPE merge is a no-op, so this is plain 1-D RoPE
            freqs = position_ids.float()[..., None] * inv
            emb = torch.cat((freqs, freqs), dim=-1)
            return emb.cos().to(dtype), emb.sin().to(dtype)
        freqs = position_ids.float()[..., None] * inv  # [3, rows, L, d/2]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        sizes = list(self.section) * 2
        cos = torch.cat([c[i % 3] for i, c in enumerate(cos.split(sizes, dim=-1))], dim=-1)
        sin = torch.cat([s[i % 3] for i, s in enumerate(sin.split(sizes, dim=-1))], dim=-1)
        return cos.to(dtype), sin.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [rows, heads, L, d]; cos/sin [rows, L, d]."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


class AttnMask:
    """How one forward attends: ``mask`` None plus ``is_causal``, or a boolean [rows, 1, L, S] mask.

    Built once per forward and shared by every layer (spec 3.4).
    """

    def __init__(self, mask: torch.Tensor | None, is_causal: bool, anchor: str = "right"):
        self.mask = mask
        self.is_causal = is_causal
        # where each row's keys are aligned: "right" (a packed cache: they end at the last slot) or
        # "left" (static rows: they start at slot 0); batch-invariant decode chunks keys from there
        self.anchor = anchor

    @staticmethod
    def build(key_valid: torch.Tensor | None, q_len: int, past: int, device: torch.device) -> "AttnMask":
        """``key_valid`` [rows, past + q_len] bool or None when no key anywhere is padding."""
        kv_len = past + q_len
        if key_valid is None:
            if q_len == 1:
                return AttnMask(None, False)
            if past == 0:
                return AttnMask(None, True)
        q_pos = torch.arange(past, kv_len, device=device)[:, None]
        k_pos = torch.arange(kv_len, device=device)[None, :]
        causal = k_pos <= q_pos  # [L, S]
        if key_valid is None:
            return AttnMask(causal[None, None], False)
        # a padded query sees no valid key; letting it see itself keeps its row finite (a NaN there
        # would leak into real rows through 0 * NaN in later layers)
        self_key = k_pos == q_pos
        mask = causal[None] & (key_valid[:, None, :] | self_key[None])
        return AttnMask(mask[:, None], False)


class Attention(nn.Module):
    def __init__(self, cfg: TextConfig):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = d
        self.q_proj = nn.Linear(h, self.num_heads * d, bias=True)
        self.k_proj = nn.Linear(h, self.num_kv_heads * d, bias=True)
        self.v_proj = nn.Linear(h, self.num_kv_heads * d, bias=True)
        self.o_proj = nn.Linear(self.num_heads * d, h, bias=False)
        self._fused_qkv: tuple | None = None

    def _apply(self, fn, recurse=True):
        self._fused_qkv = None  # parameters get their own storage again: fuse anew on next use
        return super()._apply(fn, recurse)

    def _qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One [q+k+v, H] weight and bias whose slices *are* q/k/v_proj's parameters (fewer, larger
        matmuls per step; no extra memory, state_dict unchanged); None when they are quantized."""
        mods = (self.q_proj, self.k_proj, self.v_proj)
        if not all(type(m) is nn.Linear and m.bias is not None for m in mods):
            return None
        f = self._fused_qkv
        params = [t for m in mods for t in (m.weight, m.bias)]
        if f is not None and all(p.data_ptr() == q for p, q in zip(params, f[2])):
            return f[0], f[1]
        w0 = self.q_proj.weight
        rows = [m.weight.shape[0] for m in mods]
        with torch.inference_mode(False), torch.no_grad():
            w = torch.cat([m.weight.detach() for m in mods])
            b = torch.cat([m.bias.detach() for m in mods])
            start = 0
            for m, n in zip(mods, rows):
                m.weight.data = w[start:start + n]
                m.bias.data = b[start:start + n]
                start += n
        del w0
        self._fused_qkv = (w, b, tuple(t.data_ptr() for m in mods for t in (m.weight, m.bias)))
        return w, b

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: AttnMask,
                cache=None, layer: int = 0) -> torch.Tensor:
        rows, L, _ = x.shape
        d = self.head_dim
        fused = self._qkv_weights() if FUSE_QKV else None
        if fused is not None:
            nq, nk = self.num_heads * d, self.num_kv_heads * d
            q, k, v = invariant.linear(x, fused[0], fused[1]).split((nq, nk, nk), dim=-1)
        else:
            q, k, v = invariant.module(self.q_proj, x), invariant.module(self.k_proj, x), invariant.module(self.v_proj, x)
        q = q.reshape(rows, L, self.num_heads, d).transpose(1, 2)
        k = k.reshape(rows, L, self.num_kv_heads, d).transpose(1, 2)
        v = v.reshape(rows, L, self.num_kv_heads, d).transpose(1, 2)
        q = apply_rotary(q, cos, sin)
        k = apply_rotary(k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, k, v)
        groups = self.num_heads // self.num_kv_heads
        scale = d ** -0.5
        if L == 1 and invariant.enabled():
            # batch-invariant decode (model/invariant.py): chunked keys, fixed merge tree
            qg = q.reshape(rows, self.num_kv_heads, groups, d)
            kv = None if mask.mask is None else mask.mask.reshape(rows, -1)
            out = invariant.decode_attention(qg, k, v, kv, scale, mask.anchor).reshape(rows, self.num_heads, 1, d)
        elif L == 1 and groups > 1:
            # decode: fold the query heads of one kv head into the query axis, so K/V are never copied
            qg = q.reshape(rows, self.num_kv_heads, groups, d)
            out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask.mask, is_causal=False, scale=scale)
            out = out.reshape(rows, self.num_heads, 1, d)
        else:
            if groups > 1:
                k = k.repeat_interleave(groups, dim=1)
                v = v.repeat_interleave(groups, dim=1)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.mask, is_causal=mask.is_causal, scale=scale)
        out = out.transpose(1, 2).reshape(rows, L, self.num_heads * d)
        return invariant.module(self.o_proj, out)
