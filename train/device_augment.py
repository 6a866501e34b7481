"""Augmentation on the training device: `augment_square`'s pixels made by torch, a batch at a time.

The DataLoader workers still draw every transform (train/augment.py `draw_square`, seeded by
seed, epoch and index) and compute the boxes and targets, exactly as with `--augment-on workers`;
they send a `WARP_FIELDS` row per frame instead of pixels. Here the batch's square copies
(train/cache.py `large`, kept on the GPU when it fits) go through one `grid_sample` (the same
affine as augment_square's warpAffine: bilinear, black outside), the HSV saturation/value gains
and the flip, and come out as (N, INPUT_SIZE, INPUT_SIZE, 3) uint8 RGB for `to_network_input`.

The pixels agree with augment_square's up to rounding: OpenCV interpolates with 5-bit fixed-point
weights and quantises hue to 180 levels in its HSV round trip; here both run in float32
(tests/test_device_augment.py bounds the difference on real frames). The gains use HSV's own
definition without the round trip: with V = max(R, G, B) and m = min(R, G, B), scaling the
saturation by s moves every channel c to V - k (V - c) with k = min(s, V / (V - m)) (saturation
stops at 1), and scaling the value by v multiplies all three by min(v V, 255) / V.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from fastyolo.train.augment import SquareDraw

from fastyolo.layout import INPUT_SIZE

# What a worker sends per augmented frame instead of its pixels; float32: what the warp computes in (and exact for
# cache rows below 2**24).
WARP_FIELDS = ("row", "scale_x", "shift_x", "scale_y", "shift_y", "saturation", "value", "flip")
NO_WARP = -1.0  # `row` of an item whose pixels travel as pixels (not augmented, or augmented by the worker)
GPU_SHARE = 0.25  # keep the square copies on the GPU when they take at most this share of its free memory


def warp_row(row: int, draw: SquareDraw) -> np.ndarray:
    """The WARP_FIELDS of one frame: its cache row and its draw."""
    m = draw.to_input
    return np.array([row, m[0, 0], m[0, 2], m[1, 1], m[1, 2], draw.saturation, draw.value, float(draw.flip)],
                    np.float32)


def no_warp() -> np.ndarray:
    return np.array([NO_WARP] + [0.0] * (len(WARP_FIELDS) - 1), np.float32)


def jitter_saturation_value(rgb: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float pixels in [0, 255], HSV saturation and value scaled by per-image gains (N,), hue kept."""
    high = rgb.amax(1, keepdim=True)
    low = rgb.amin(1, keepdim=True)
    sat = saturation.view(-1, 1, 1, 1).to(rgb.dtype)
    val = value.view(-1, 1, 1, 1).to(rgb.dtype)
    # k = min(s, V / (V - m)); grey pixels (V == m) have no saturation to scale: any k leaves them grey.
    k = torch.minimum(sat, high / (high - low).clamp_min(1e-6))
    out = high - k * (high - rgb)
    return out * (torch.minimum(high * val, torch.full_like(high, 255.0)) / high.clamp_min(1e-6))


class DeviceAugmenter:
    """Makes a batch's augmented network inputs on `device` from the frames' square copies and their WARP_FIELDS."""

    def __init__(self, large: np.ndarray, device: torch.device, *, resident: bool | None = None,
                 out_size: int = INPUT_SIZE):
        """large: (N, L, L, 3) uint8 BGR (a FrameCache's `large`, in memory or memory-mapped). resident: copy them
        all to the device once (None: on a GPU when they take at most GPU_SHARE of its free memory); otherwise
        each batch's frames are gathered on the host and copied."""
        if len(large) >= 2**24:
            raise ValueError(f"{len(large):,} frames: WARP_FIELDS' float32 rows are exact below 2**24")
        self.host, self.device, self.out_size = large, device, out_size
        self.side = large.shape[1]
        if resident is None:
            resident = device.type == "cuda" and large.nbytes <= GPU_SHARE * torch.cuda.mem_get_info(device)[0]
        self.frames = None
        if resident:
            self.frames = torch.empty(large.shape, dtype=torch.uint8, device=device)
            for start in range(0, len(large), 256):  # a chunk at a time: no second full copy on the host
                chunk = torch.from_numpy(np.ascontiguousarray(large[start:start + 256]))
                self.frames[start:start + len(chunk)].copy_(chunk)
        self._centres = (torch.arange(out_size, dtype=torch.float32, device=device) + 0.5).view(1, -1)

    @property
    def where(self) -> str:
        """Where the square copies live, for the log."""
        if self.frames is not None:
            return f"{self.frames.nbytes / 2**20:,.0f} MiB of frames on the {self.device.type}"
        return "frames copied from the host per batch"

    def _host_frames(self, rows: torch.Tensor) -> torch.Tensor:
        """The rows' square copies gathered on the host and sent to the device (pinned: the copy does not wait
        for the work already queued there)."""
        picked = torch.from_numpy(np.ascontiguousarray(self.host[rows.long().numpy()]))
        if self.device.type == "cuda":
            picked = picked.pin_memory()
        return picked.to(self.device, non_blocking=True)

    def __call__(self, warp: torch.Tensor) -> torch.Tensor:
        """(N, len(WARP_FIELDS)) float32 rows on the host (pinned by the DataLoader on CUDA) -> (N, out_size,
        out_size, 3) uint8 RGB on the device. Nothing here waits for the device: every copy to it is from pinned
        memory and nothing comes back, so the host goes on queueing the step."""
        if warp.ndim != 2 or warp.shape[1] != len(WARP_FIELDS) or bool((warp[:, 0] < 0).any()):
            raise ValueError(f"DeviceAugmenter needs (N, {len(WARP_FIELDS)}) warp rows of cached frames")
        on_device = warp.to(self.device, non_blocking=True)
        resident = self.frames is not None
        square = self.frames[on_device[:, 0].long()] if resident else self._host_frames(warp[:, 0])
        square = square.permute(0, 3, 1, 2).float()  # (N, 3, L, L) BGR
        scale_x, shift_x, scale_y, shift_y, saturation, value, flip = on_device[:, 1:].float().unbind(1)
        # Output pixel centre u + 0.5 -> square-copy coordinate (u + 0.5 - shift) / scale -> grid_sample's
        # [-1, 1] (align_corners=False: -1 and 1 are the outer edges of the first and last pixels).
        gx = ((self._centres - shift_x[:, None]) / scale_x[:, None]) * (2.0 / self.side) - 1.0  # (N, S)
        gy = ((self._centres - shift_y[:, None]) / scale_y[:, None]) * (2.0 / self.side) - 1.0
        n, size = len(warp), self.out_size
        grid = torch.stack((gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)), dim=-1)
        image = F.grid_sample(square, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        image = jitter_saturation_value(image.round(), saturation, value)  # rounded first, as augment_square's uint8
        image = torch.where(flip.view(-1, 1, 1, 1) > 0.5, image.flip(-1), image)
        # BGR -> RGB by flipping the channel axis (a list index would be copied to the GPU, and wait for it)
        image = image.flip(1).round_().clamp_(0, 255).to(torch.uint8)
        return image.permute(0, 2, 3, 1)


__all__ = ["GPU_SHARE", "NO_WARP", "WARP_FIELDS", "DeviceAugmenter", "jitter_saturation_value", "no_warp", "warp_row"]
