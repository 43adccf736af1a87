"""Qwen2.5-VL video preprocessing in plain torch (no transformers processor, no torchvision).

Frames (uint8 RGB [T, H, W, 3]) -> smart_resize (factor 28) -> bicubic antialiased resize (float, not
rounded or clamped) -> rescale 1/255 -> CLIP mean/std normalise -> pad the frame count to a multiple
of the temporal patch (2) by repeating the last frame -> patchify into [N_patches, 3*2*14*14] rows in
(channel, time, row, col) order, patches grouped 2x2 by merge block, t-major.

``grid_thw = [T/2, H/14, W/14]``, ``second_per_grid_ts = temporal_patch / fps``. The number of video
tokens the language model sees is ``t*h*w / merge**2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PATCH = 14
TEMPORAL_PATCH = 2
MERGE = 2
FACTOR = PATCH * MERGE  # 28
MAX_RATIO = 200

# Budget used by "vision" mode (qwen-vl-utils style: total pixels shared by the frames).
VIDEO_MIN_PIXELS = 4 * 28 * 28
VIDEO_MAX_PIXELS = 64 * 28 * 28
VIDEO_TOTAL_PIXELS = 512 * 28 * 28


def _round_by(x: float, f: int) -> int:
    return round(x / f) * f


def _floor_by(x: float, f: int) -> int:
    return math.floor(x / f) * f


def _ceil_by(x: float, f: int) -> int:
    return math.ceil(x / f) * f


def smart_resize(height: int, width: int, factor: int = FACTOR, min_pixels: int = 56 * 56,
                 max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Target (height, width): multiples of ``factor``, aspect kept, pixel count in [min, max]."""
    if height <= 0 or width <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise ValueError(f"aspect ratio above {MAX_RATIO}: {width}x{height}")
    h = max(factor, _round_by(height, factor))
    w = max(factor, _round_by(width, factor))
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, _floor_by(height / beta, factor))
        w = max(factor, _floor_by(width / beta, factor))
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = _ceil_by(height * beta, factor)
        w = _ceil_by(width * beta, factor)
    return h, w


def frame_pixel_budget(n_frames: int, min_pixels: int = VIDEO_MIN_PIXELS, max_pixels: int = VIDEO_MAX_PIXELS,
                       total_pixels: int = VIDEO_TOTAL_PIXELS) -> tuple[int, int]:
    """(min_pixels, max_pixels) per frame when ``n_frames`` frames share ``total_pixels``."""
    per = max(min(max_pixels, total_pixels / max(1, n_frames) * TEMPORAL_PATCH), int(min_pixels * 1.05))
    return min_pixels, int(per)


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """float [T, 3, H, W] (0..255) -> float [T, 3, height, width], bicubic with antialias, unclamped."""
    if frames.shape[-2:] == (height, width):
        return frames
    return torch.nn.functional.interpolate(frames, size=(height, width), mode="bicubic", antialias=True,
                                           align_corners=False)


@dataclass
class VideoInput:
    pixel_values: torch.Tensor  # float32 [N_patches, 1176]
    grid_thw: torch.Tensor  # int64 [1, 3]
    second_per_grid_t: float
    n_tokens: int  # merged tokens = t*h*w / MERGE**2
    features: torch.Tensor | None = None  # vision-tower output, cached by generation (rows share it)

    @property
    def grid(self) -> tuple[int, int, int]:
        t, h, w = (int(v) for v in self.grid_thw[0])
        return t, h, w


def to_float_frames(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8/float [T, H, W, 3] (channels last) -> float32 [T, 3, H, W] in 0..255."""
    x = torch.as_tensor(np.array(frames) if not isinstance(frames, torch.Tensor) else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3], got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).to(torch.float32).contiguous()


def patchify(frames: torch.Tensor, fps: float) -> VideoInput:
    """Normalised-free float frames [T, 3, H, W] (0..255, H and W multiples of 28) -> VideoInput."""
    t, c, h, w = frames.shape
    if h % FACTOR or w % FACTOR:
        raise ValueError(f"frame size {w}x{h} is not a multiple of {FACTOR}")
    x = frames.to(torch.float32) * (1.0 / 255.0)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x - mean) / std
    if t % TEMPORAL_PATCH:
        x = torch.cat([x, x[-1:].expand(TEMPORAL_PATCH - t % TEMPORAL_PATCH, -1, -1, -1)], dim=0)
    gt, gh, gw = x.shape[0] // TEMPORAL_PATCH, h // PATCH, w // PATCH
    x = x.reshape(gt, TEMPORAL_PATCH, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    # -> (gt, gh/2, gw/2, merge_h, merge_w, c, temporal, ph, pw)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pixel_values = x.reshape(gt * gh * gw, c * TEMPORAL_PATCH * PATCH * PATCH).contiguous()
    grid = torch.tensor([[gt, gh, gw]], dtype=torch.int64)
    return VideoInput(pixel_values=pixel_values, grid_thw=grid, second_per_grid_t=TEMPORAL_PATCH / float(fps),
                      n_tokens=gt * gh * gw // (MERGE * MERGE))


def preprocess_video(frames: np.ndarray | torch.Tensor, fps: float = 1.0, *, min_pixels: int | None = None,
                     max_pixels: int | None = None, total_pixels: int = VIDEO_TOTAL_PIXELS) -> VideoInput:
    """uint8 RGB frames [T, H, W, 3] sampled at ``fps`` -> model inputs for the vision tower.

    Without explicit ``min_pixels``/``max_pixels`` the per-frame budget comes from ``total_pixels``
    shared by the frames (:func:`frame_pixel_budget`).
    """
    x = to_float_frames(frames)
    if x.shape[0] == 0:
        raise ValueError("no frames")
    if fps <= 0:
        raise ValueError("fps must be > 0")
    lo, hi = frame_pixel_budget(x.shape[0], total_pixels=total_pixels)
    lo = lo if min_pixels is None else min_pixels
    hi = hi if max_pixels is None else max_pixels
    h, w = smart_resize(x.shape[2], x.shape[3], FACTOR, lo, hi)
    x = resize_frames(x, h, w)
    return patchify(x, fps)
