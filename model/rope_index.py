"""Rotary position ids: 1-D from the attention mask, and 3-D M-RoPE for text + vision (spec 3.5, 5.4).

The 3-D algorithm is Qwen2.5-VL's (as in transformers 4.53): text runs count up on all three axes;
a vision block of grid (t, H, W) gives its merged tokens (t, H/m, W/m) positions
``(floor(t_i * spg * tokens_per_second), h_i, w_i)`` offset by the position after the preceding text.
Quirk kept on purpose: ``second_per_grid_ts`` is cast to the integer dtype *before* multiplying,
so 2.0 -> 2 and 0.5 -> 0.
"""
from __future__ import annotations

import torch

from .config import ModelConfig


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """[rows, L] 1/0 mask -> [rows, L] positions ``cumsum - 1`` with pads set to 1 (reference rule)."""
    m = attention_mask.long()
    pos = m.cumsum(-1) - 1
    return pos.masked_fill(m == 0, 1)


def rope_index(config: ModelConfig, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
               video_grid_thw: torch.Tensor | None = None, second_per_grid_ts: torch.Tensor | None = None,
               image_grid_thw: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """3-D positions [3, rows, L] and rope deltas [rows, 1] (``max + 1 - L`` per row)."""
    rows, L = input_ids.shape
    device = input_ids.device
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if video_grid_thw is None and image_grid_thw is None:
        pos = positions_from_mask(attention_mask)
        deltas = pos.max(-1, keepdim=True).values + 1 - L
        return pos.unsqueeze(0).expand(3, rows, L).clone(), deltas

    merge = config.vision.spatial_merge_size
    tps = config.vision.tokens_per_second
    position_ids = torch.ones((3, rows, L), dtype=torch.long, device=device)
    deltas = []
    img_i = vid_i = 0
    for b in range(rows):
        keep = attention_mask[b] == 1
        tokens = input_ids[b][keep].tolist()
        starts = [i for i, t in enumerate(tokens) if t == config.vision_start_token_id]
        kinds = [tokens[i + 1] for i in starts if i + 1 < len(tokens)]
        n_img = sum(1 for k in kinds if k == config.image_token_id)
        n_vid = sum(1 for k in kinds if k == config.video_token_id)
        parts: list[torch.Tensor] = []
        st = 0

        def next_start() -> int:
            return int(parts[-1].max()) + 1 if parts else 0

        for _ in range(n_img + n_vid):
            ed_img = _find(tokens, config.image_token_id, st) if n_img > 0 else len(tokens) + 1
            ed_vid = _find(tokens, config.video_token_id, st) if n_vid > 0 else len(tokens) + 1
            if ed_img < ed_vid:
                t, h, w = (int(x) for x in image_grid_thw[img_i])
                spg = 0.0
                img_i += 1
                n_img -= 1
                ed = ed_img
            else:
                t, h, w = (int(x) for x in video_grid_thw[vid_i])
                spg = float(second_per_grid_ts[vid_i]) if second_per_grid_ts is not None else 1.0
                vid_i += 1
                n_vid -= 1
                ed = ed_vid
            gh, gw = h // merge, w // merge
            text_len = ed - st
            s0 = next_start()
            parts.append(torch.arange(text_len, device=device).view(1, -1).expand(3, -1) + s0)
            # the integer cast of spg happens before the multiply (reference quirk)
            spg_int = torch.as_tensor(spg).to(torch.long).item()
            t_index = (torch.arange(t, device=device).view(-1, 1).expand(-1, gh * gw) * spg_int * tps).long().flatten()
            h_index = torch.arange(gh, device=device).view(1, -1, 1).expand(t, -1, gw).flatten()
            w_index = torch.arange(gw, device=device).view(1, 1, -1).expand(t, gh, -1).flatten()
            parts.append(torch.stack([t_index, h_index, w_index]) + text_len + s0)
            st = ed + t * gh * gw
        if st < len(tokens):
            s0 = next_start()
            parts.append(torch.arange(len(tokens) - st, device=device).view(1, -1).expand(3, -1) + s0)
        pos = torch.cat(parts, dim=1) if parts else torch.zeros((3, 0), dtype=torch.long, device=device)
        position_ids[:, b, keep] = pos
        deltas.append((int(pos.max()) + 1 if pos.numel() else 0) - L)
    return position_ids, torch.tensor(deltas, dtype=torch.long, device=device).unsqueeze(1)


def _find(tokens: list[int], value: int, start: int) -> int:
    try:
        return tokens.index(value, start)
    except ValueError:
        return len(tokens) + 1
