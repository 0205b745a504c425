"""Training losses: eq. 3 (attention) and eq. 4 (enhancement).

DSSIM = (1 - SSIM) / 2 with SSIM from pytorch-msssim (Gaussian window 11, sigma 1.5, K = (0.01, 0.03), the
Wang et al. definition, checked against scikit-image in the tests). Smaller images use a smaller odd window.
In eq. 4 the second term |I~ - 0.5| * |I - I~| is averaged over pixels and channels, I~ being the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_msssim import ssim

ENHANCEMENT_LAMBDA = 0.76


def attention_loss(predicted_map: torch.Tensor, target_map: torch.Tensor) -> torch.Tensor:
    """Eq. 3: MSE between the predicted and the ground-truth exposure map."""
    return F.mse_loss(predicted_map, target_map)


def _window(h: int, w: int) -> int:
    win = min(11, h, w)
    return win if win % 2 else win - 1


def dssim(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 for N x C x H x W tensors in [0, 1]."""
    win = _window(output.shape[-2], output.shape[-1])
    return (1.0 - ssim(output, reference, data_range=1.0, size_average=True, win_size=win)) / 2.0


def enhancement_loss(output: torch.Tensor, reference: torch.Tensor,
                     lam: float = ENHANCEMENT_LAMBDA) -> torch.Tensor:
    """Eq. 4: lam * DSSIM(I, I~) + (1 - lam) * mean(|I~ - 0.5| * |I - I~|)."""
    weighted_l1 = ((reference - 0.5).abs() * (output - reference).abs()).mean()
    return lam * dssim(output, reference) + (1.0 - lam) * weighted_l1
