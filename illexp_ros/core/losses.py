"""Training losses: eq. 3 (attention) and eq. 4 (enhancement).

DSSIM = (1 - SSIM) / 2, SSIM as Wang et al. define it (Gaussian window 11, sigma 1.5, K = (0.01, 0.03), valid
region only: the same numbers as pytorch-msssim's `ssim`, which the tests compare against, as well as
scikit-image). Smaller images use a smaller odd window. In eq. 4 the second term |I~ - 0.5| * |I - I~| is
averaged over pixels and channels, I~ being the reference.

Why not pytorch-msssim itself (it was used until 2026-11-26): measured with training/profile_step.py on the
2-core CPU, eq. 4 with its five per-quantity grouped convolutions took ~40 % of a fast-net training step
(212 of ~490 ms, forward and backward). Here all the blurred quantities go through one depthwise convolution
over the whole batch (batch folded into channels, which oneDNN runs far faster than small batches of 3-channel
groups), and the reference's two quantities are blurred without autograd: eq. 4 at 8 x 3 x 256 x 256 takes
81 ms instead of 212 (forward and backward, 2 threads), for the same value (to float rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ENHANCEMENT_LAMBDA = 0.76


def attention_loss(predicted_map: torch.Tensor, target_map: torch.Tensor) -> torch.Tensor:
    """Eq. 3: MSE between the predicted and the ground-truth exposure map."""
    return F.mse_loss(predicted_map, target_map)


def _window(h: int, w: int) -> int:
    win = min(11, h, w)
    return win if win % 2 else win - 1


def _gaussian(size: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=like.device) - size // 2
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(like.dtype)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur, valid region only, of every channel of every image of N x C x H x W."""
    n, c, h, w = x.shape
    k = g.numel()
    flat = x.reshape(1, n * c, h, w)  # one depthwise conv over all images and channels
    flat = F.conv2d(flat, g.view(1, 1, 1, k).expand(n * c, 1, 1, k), groups=n * c)
    flat = F.conv2d(flat, g.view(1, 1, k, 1).expand(n * c, 1, k, 1), groups=n * c)
    return flat.reshape(n, c, h - k + 1, w - k + 1)


def ssim(output: torch.Tensor, reference: torch.Tensor, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5, k: tuple[float, float] = (0.01, 0.03)) -> torch.Tensor:
    """Mean SSIM of N x C x H x W tensors (the mean over images, channels and valid pixels). Gradients flow to
    `output` only: the reference's statistics are computed without autograd."""
    c1, c2 = (k[0] * data_range) ** 2, (k[1] * data_range) ** 2
    g = _gaussian(win_size, sigma, output)
    n, c = output.shape[:2]
    with torch.no_grad():
        mu_y, yy = _blur(torch.cat([reference, reference * reference], 1), g).split(c, dim=1)
    mu_x, xx, xy = _blur(torch.cat([output, output * output, output * reference], 1), g).split(c, dim=1)
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)) * ((2 * cov + c2) / (var_x + var_y + c2))
    return ssim_map.mean()


def dssim(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(1 - SSIM) / 2 for N x C x H x W tensors in [0, 1]."""
    win = _window(output.shape[-2], output.shape[-1])
    return (1.0 - ssim(output, reference, data_range=1.0, win_size=win)) / 2.0


def enhancement_loss(output: torch.Tensor, reference: torch.Tensor,
                     lam: float = ENHANCEMENT_LAMBDA, l1_weight: float = 0.0,
                     mse_weight: float = 0.0) -> torch.Tensor:
    """Eq. 4: lam * DSSIM(I, I~) + (1 - lam) * mean(|I~ - 0.5| * |I - I~|), plus l1_weight * mean(|I - I~|)
    and mse_weight * mean((I - I~)^2).

    The plain L1 term is beyond the paper (0 = eq. 4 alone; train.l1_weight). Why it exists: eq. 4 hardly sees
    a small brightness change of mid-tones, the weight |I~ - 0.5| is zero there and SSIM's luminance term
    moves by 0.5 % for a 10 % change at mid-grey, so a network trained on eq. 4 alone is free to brighten or
    darken a well-exposed frame slightly, which PSNR (and a robot's detector) does see.

    The squared term is beyond the paper too (0 = off; train.mse_weight). Why: where a frame does not reveal
    its scene's brightness (a strong under-exposure), the best guess of the level under L1 and eq. 4 is a
    median, under a squared error the mean, and PSNR, what validation and the evaluation report, is a squared
    error. It also weighs large (level) errors more than small (detail) ones, unlike L1.
    """
    err = (output - reference).abs()
    loss = lam * dssim(output, reference) + (1.0 - lam) * ((reference - 0.5).abs() * err).mean()
    if l1_weight:
        loss = loss + l1_weight * err.mean()
    if mse_weight:
        loss = loss + mse_weight * (err * err).mean()
    return loss


VIEW_BLOCKS = 4  # the overlap is compared as VIEW_BLOCKS x VIEW_BLOCKS block means: the correction's level, not detail
VIEW_FLOOR = 1e-3  # added to a block mean before its log (a black block)


def view_consistency_loss(first: torch.Tensor, second: torch.Tensor, offset: tuple[int, int],
                          blocks: int = VIEW_BLOCKS) -> torch.Tensor:
    """Mean |log ratio| of the two outputs' block means over the region both views show (beyond the paper;
    train.view_consistency).

    `second` is the same frame seen `offset` = (dy, dx) pixels further down and right (dy, dx >= 0): pixel
    (y, x) of `second` is pixel (y + dy, x + dx) of `first`. The overlap is split into blocks x blocks regions
    per channel and their means compared in log space. Why: a camera that pans shows the net a little more of
    the scene on one side each frame, and the shipped fast net let that move its correction of the rest
    (measured 2026-11-27 along a 4-pixel-per-frame pan: the output's level error changed by ~10 millistops per
    frame, up to 59; training/pan_flicker.py). SLAM and detectors see that as flicker. Why block means in log
    space: the first version compared pixels (mean |difference|), which grows with the output's brightness, so
    it paid the net to correct less; two fine-tunes with it (weights 1 and 3, 2026-11-27) lost 4-7 dB on
    validation within 2200 steps, strong under-exposure falling from 26 to 16-19 dB. A ratio does not grow with
    the correction, and block means leave out detail (which the guided upsampling legitimately renders a little
    differently when the sampling grid moves).
    """
    dy, dx = offset
    h, w = first.shape[-2:]
    if not (0 <= dy < h and 0 <= dx < w) or first.shape != second.shape:
        raise ValueError(f"views of shape {tuple(first.shape)} / {tuple(second.shape)} do not overlap at "
                         f"offset {offset}")
    a = F.adaptive_avg_pool2d(first[..., dy:, dx:], blocks)
    b = F.adaptive_avg_pool2d(second[..., :h - dy, :w - dx], blocks)
    return (torch.log(a + VIEW_FLOOR) - torch.log(b + VIEW_FLOOR)).abs().mean()
