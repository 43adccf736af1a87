"""Qwen2.5-VL vision tower in plain PyTorch (spec 2.1, 5.3).

Input: ``pixel_values`` [N, C*kT*P*P] patch rows ordered (channel, time, row, col) as the Qwen2-VL
processor produces them, grouped 2x2 by merge block, and ``grid_thw`` [videos, 3] in patches.
Output: [N / merge^2, out_hidden] merged tokens in the input order.

``attention``:
* ``"windowed"`` (Qwen2.5-VL's intent): blocks in ``fullatt_block_indexes`` attend within each
  temporal slice of each video, the others within windows of ``window_size`` pixels;
* ``"full"``: every block attends over all patches of all videos in the call. This is what the
  reference tower does under SDPA/eager (defect D2), and what the golden fixture was made with.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .config import VisionConfig
from .layers import RMSNorm

AttentionMode = Literal["windowed", "full"]


class PatchEmbed(nn.Module):
    """The reference keeps the temporal taps folded into input channels: weight [out, C*kT, P, P]."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.proj = nn.Module()
        self.proj.weight = nn.Parameter(torch.empty(cfg.hidden_size, cfg.in_channels * cfg.temporal_patch_size,
                                                    cfg.patch_size, cfg.patch_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.proj.weight
        # a Conv3d whose kernel equals the patch is a matmul over the flattened patch (c, t, row, col)
        return F.linear(x.reshape(x.shape[0], -1).to(w.dtype), w.reshape(w.shape[0], -1))


class VisionAttention(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size, bias=True)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=True)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = self.qkv(x).reshape(n, 3, self.num_heads, self.head_dim).permute(1, 0, 2, 3).unbind(0)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))  # [1, heads, n, d]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.head_dim ** -0.5)
        return self.proj(out.squeeze(0).transpose(0, 1).reshape(n, -1))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Vision rotary in fp32 (as the reference), x [n, heads, d], cos/sin [n, d]."""
    dtype = x.dtype
    xf = x.float()
    c, s = cos.unsqueeze(1).float(), sin.unsqueeze(1).float()
    h = xf.shape[-1] // 2
    rot = torch.cat((-xf[..., h:], xf[..., :h]), dim=-1)
    return (xf * c + rot * s).to(dtype)


class VisionMLP(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=True)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=True)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        self.norm1 = RMSNorm(cfg.hidden_size, 1e-6)
        self.norm2 = RMSNorm(cfg.hidden_size, 1e-6)
        self.attn = VisionAttention(cfg)
        self.mlp = VisionMLP(cfg)

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.norm1(x), cos, sin, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerger(nn.Module):
    def __init__(self, cfg: VisionConfig):
        super().__init__()
        ctx = cfg.hidden_size * cfg.spatial_merge_size ** 2
        self.ln_q = RMSNorm(cfg.hidden_size, 1e-6)
        self.mlp = nn.Sequential(nn.Linear(ctx, ctx), nn.GELU(), nn.Linear(ctx, cfg.out_hidden_size))
        self.ctx = ctx

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.ctx))


class VisionTower(nn.Module):
    def __init__(self, cfg: VisionConfig, attention: AttentionMode = "windowed"):
        super().__init__()
        self.cfg = cfg
        self.attention: AttentionMode = attention
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.depth))
        self.merger = PatchMerger(cfg)
        self.merge_unit = cfg.spatial_merge_size ** 2
        rot_dim = cfg.head_dim // 2
        self._rot_dim = rot_dim

    # -- indices --------------------------------------------------------------------------------------
    def _rot_freqs(self, grid_thw: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Per patch (row, col) rotary angles [N, head_dim/2], patches in merge-block order."""
        m = self.cfg.spatial_merge_size
        dim = self._rot_dim
        inv = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float, device=device) / dim))
        ids = []
        for t, h, w in grid_thw.tolist():
            hp = torch.arange(h, device=device).unsqueeze(1).expand(-1, w)
            wp = torch.arange(w, device=device).unsqueeze(0).expand(h, -1)
            hp = hp.reshape(h // m, m, w // m, m).permute(0, 2, 1, 3).flatten()
            wp = wp.reshape(h // m, m, w // m, m).permute(0, 2, 1, 3).flatten()
            ids.append(torch.stack([hp, wp], dim=-1).repeat(t, 1))
        pos = torch.cat(ids)
        max_grid = int(grid_thw[:, 1:].max())
        table = torch.outer(torch.arange(max_grid, device=device, dtype=torch.float), inv)
        return table[pos].flatten(1)

    def _window_index(self, grid_thw: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, list[int]]:
        """Order of merged tokens grouped into windows, and window boundaries in patches."""
        m = self.cfg.spatial_merge_size
        ws = self.cfg.window_size // m // self.cfg.patch_size
        index, cu, base = [], [0], 0
        for t, h, w in grid_thw.tolist():
            gh, gw = h // m, w // m
            idx = torch.arange(t * gh * gw, device=device).reshape(t, gh, gw)
            ph, pw = (-gh) % ws, (-gw) % ws
            nh, nw = (gh + ph) // ws, (gw + pw) // ws
            padded = F.pad(idx, (0, pw, 0, ph), value=-1)
            padded = padded.reshape(t, nh, ws, nw, ws).permute(0, 1, 3, 2, 4).reshape(t, nh * nw, ws, ws)
            sizes = (padded != -1).sum([2, 3]).reshape(-1)
            flat = padded.reshape(-1)
            index.append(flat[flat != -1] + base)
            for s in (sizes.cumsum(0) * self.merge_unit + cu[-1]).tolist():
                if s != cu[-1]:
                    cu.append(s)
            base += t * gh * gw
        return torch.cat(index), cu

    @staticmethod
    def _block_mask(bounds: list[int], n: int, device: torch.device) -> torch.Tensor:
        seg = torch.zeros(n, dtype=torch.long, device=device)
        if len(bounds) > 2:
            seg[torch.tensor(bounds[1:-1], device=device)] = 1
        seg = seg.cumsum(0)
        return (seg[:, None] == seg[None, :]).unsqueeze(0).unsqueeze(0)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                attention: AttentionMode | None = None) -> torch.Tensor:
        mode = attention or self.attention
        w = self.patch_embed.proj.weight
        device = w.device
        grid_thw = torch.as_tensor(grid_thw, dtype=torch.long).cpu()
        x = self.patch_embed(pixel_values.to(device))
        n = x.shape[0]
        if n != int((grid_thw[:, 0] * grid_thw[:, 1] * grid_thw[:, 2]).sum()):
            raise ValueError(f"pixel_values has {n} patches but grid_thw describes a different count")
        freqs = self._rot_freqs(grid_thw, device)
        win_index, cu_win = self._window_index(grid_thw, device)
        u = self.merge_unit
        # reorder merged groups into window order (patches of one merged token stay together)
        x = x.reshape(n // u, u, -1)[win_index].reshape(n, -1)
        freqs = freqs.reshape(n // u, u, -1)[win_index].reshape(n, -1)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if mode == "full":
            full_mask = win_mask = None
        elif mode == "windowed":
            frames = (grid_thw[:, 1] * grid_thw[:, 2]).repeat_interleave(grid_thw[:, 0])
            cu_full = [0] + frames.cumsum(0).tolist()
            full_mask = self._block_mask(cu_full, n, device)
            win_mask = self._block_mask(cu_win, n, device)
        else:
            raise ValueError(f"unknown attention mode {mode!r}")
        # Window order keeps each temporal slice contiguous, so per-slice bounds still apply after it.
        full_set = set(self.cfg.fullatt_block_indexes)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, full_mask if i in full_set else win_mask)
        x = self.merger(x)
        return x[torch.argsort(win_index)]
