"""Fast mode (beyond the paper): run the network at a low internal resolution, apply its correction at full
resolution with a fast guided filter (He et al., "Guided Image Filtering"; Wu et al., "Fast End-to-End
Trainable Guided Filter", CVPR 2018).

At low resolution we fit, per channel and per pixel, a local affine model out_low ~= A * in_low + b over a
(2r+1)^2 window; A and b are smooth, so they are upsampled bilinearly and applied to the full-resolution frame:
out = A_up * in_full + b_up. Fine detail of the input survives (scaled by A), while the tone and colour change
comes from the network. Where the input is clipped (flat), A -> 0 and b carries the network's reconstruction.
Differentiable, so the network can be fine-tuned through it with the same losses.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

# Window radius (in internal-resolution pixels) and regulariser of the guided fit. Chosen on mixed_fast's
# validation pairs (held-out training photos, never eval/) on 2026-11-27, with the shipped file unchanged: the
# first choice (2, 1e-4) scored 23.69 dB (mean SSIM 0.861); (3, 3e-5) 23.84 (0.869), no kind of draw lower by
# more than 0.05 dB, well-exposed frames +0.9 dB, the camera draws +0.14 to +0.17. A smaller eps keeps fine
# texture (local std below sqrt(eps) = 1.4/255 instead of 2.5/255 is where A shrinks towards 0); larger radii
# (4-8) scored up to 23.98 but cost region-mixed frames 0.1-0.4 dB. under_fast / over_fast moved the same way.
DEFAULT_RADIUS = 3
DEFAULT_EPS = 3e-5


class GuidedFit(NamedTuple):
    """Radius and eps of the guided fit a fast model runs through. A model file records the fit it was trained
    through in its meta (runtime/model_io.py), so a file keeps running as it was trained when the defaults above
    change; a file without that record runs with the defaults."""

    radius: int = DEFAULT_RADIUS
    eps: float = DEFAULT_EPS

    def checked(self) -> GuidedFit:
        """self (eps as a float), or ValueError for a radius that is not an integer >= 1 or an eps outside (0, 1)."""
        if isinstance(self.radius, bool) or not isinstance(self.radius, int) or self.radius < 1:
            raise ValueError(f"guided fit radius must be an integer >= 1, got {self.radius!r}")
        if isinstance(self.eps, bool) or not isinstance(self.eps, int | float) or not 0.0 < self.eps < 1.0:
            raise ValueError(f"guided fit eps must be a number in (0, 1), got {self.eps!r}")
        return GuidedFit(self.radius, float(self.eps))


DEFAULT_FIT = GuidedFit()


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    return F.avg_pool2d(x, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)


def guided_coefficients(low_in: torch.Tensor, low_out: torch.Tensor, radius: int = DEFAULT_RADIUS,
                        eps: float = DEFAULT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    mean_x = box_mean(low_in, radius)
    mean_y = box_mean(low_out, radius)
    cov_xy = box_mean(low_in * low_out, radius) - mean_x * mean_y
    var_x = box_mean(low_in * low_in, radius) - mean_x * mean_x
    a = cov_xy / (var_x + eps)
    b = mean_y - a * mean_x
    # Smoothing the coefficients themselves (the "mean of A, mean of b" step of the guided filter).
    return box_mean(a, radius), box_mean(b, radius)


def guided_upsample(low_in: torch.Tensor, low_out: torch.Tensor, full_in: torch.Tensor,
                    radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> torch.Tensor:
    """Transfer the low-res mapping low_in -> low_out onto full_in (all N x C x H x W, float in [0, 1])."""
    a, b = guided_coefficients(low_in, low_out, radius, eps)
    size = full_in.shape[-2:]
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    return (a * full_in + b).clamp(0.0, 1.0)


def internal_size(height: int, width: int, short_side: int, multiple: int = 8) -> tuple[int, int]:
    """(h, w) with the short side ~= short_side, aspect kept, each side rounded to `multiple` (at least one
    multiple). The scale is never above 1, but the rounding can take a side up to `multiple` / 2 above the
    input's (100 x 60 at 256 -> 96 x 64): callers that must not upscale check (the runtime runs such frames at
    full resolution)."""
    scale = min(1.0, short_side / min(height, width))
    h = max(multiple, int(round(height * scale / multiple)) * multiple)
    w = max(multiple, int(round(width * scale / multiple)) * multiple)
    return h, w


def _area_weights(n_in: int, n_out: int, device: torch.device) -> torch.Tensor:
    """n_out x n_in: how much of each input pixel each output pixel covers, over the output pixel's area."""
    scale = n_in / n_out
    edges = torch.arange(n_out + 1, device=device, dtype=torch.float32) * scale
    pixels = torch.arange(n_in, device=device, dtype=torch.float32)
    overlap = torch.minimum(edges[1:, None], pixels + 1) - torch.maximum(edges[:-1, None], pixels)
    return overlap.clamp_(min=0.0).div_(scale)


def area_downscale(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x (N x C x H x W) averaged over each output pixel's area, as OpenCV's INTER_AREA does when it shrinks:
    the CPU runtime's downscale (runtime/cpu_pipeline.py), so every backend and the training path feed the
    network the same image. torch's mode="area" is adaptive average pooling, which differs from it where H or
    W is not a whole multiple of the output (640x480 -> 88x64: by up to 15/255 on a frame of noise). Whole
    multiples, as in training's 256 -> 64 crops, take the pooling (the same values, faster)."""
    h_in, w_in = x.shape[-2:]
    h, w = size
    if h_in % h == 0 and w_in % w == 0:
        return F.avg_pool2d(x, (h_in // h, w_in // w))
    rows = _area_weights(h_in, h, x.device).to(x.dtype)
    cols = _area_weights(w_in, w, x.device).to(x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.t())


def run_network(model: torch.nn.Module, x: torch.Tensor, fast_short_side: int | None = None,
                fit: GuidedFit = DEFAULT_FIT) -> tuple[torch.Tensor, torch.Tensor]:
    """(corrected, exposure map): fast mode at `fast_short_side` (through `fit`) when given, else the network
    at full size."""
    if fast_short_side:
        return fast_forward(model, x, fast_short_side, *fit)
    return model(x)


def fast_forward(model: torch.nn.Module, x: torch.Tensor, short_side: int = 128,
                 radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` (an IllExpNet) at reduced resolution and apply its correction to x at full resolution.

    Returns (corrected at full resolution, exposure map upsampled to full resolution).
    """
    h, w = internal_size(x.shape[-2], x.shape[-1], short_side)
    low = area_downscale(x, (h, w))
    low_out, low_em = model(low)
    out = guided_upsample(low, low_out, x, radius, eps)
    em = F.interpolate(low_em, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return out, em
