"""The seven image-quality metrics of the paper's Table 1.

All functions take two H x W x 3 RGB images (uint8, or float in [0, 1]); `output` first, `reference` second.
Definitions (the paper names the metrics but not their parameters; these are our choices):

* mse, mae: mean squared / absolute error on [0, 1] values, over pixels and channels.
* psnr: 10 * log10(1 / mse) in dB, data range 1. mse is floored at 1e-10, so identical images give 100 dB
  (a finite number keeps JSON reports valid) instead of infinity.
* ssim: scikit-image structural_similarity over RGB (channel_axis=-1), data_range 1, Gaussian window
  sigma 1.5 without sample-covariance correction (the Wang et al. 2004 definition).
* sobel_iou: grey = ITU-R 601 luma; edges = Sobel gradient magnitude (scikit-image `filters.sobel`, which
  normalises so a 0 -> 1 step gives ~0.5 on the edge) >= 0.1; IoU of the two binary edge maps.
* canny_iou: OpenCV Canny on 8-bit luma with hysteresis thresholds 100 / 200 (OpenCV's tutorial values,
  L1 gradient); IoU of the two edge maps.
  For both IoUs, two empty edge maps count as a perfect match (1.0).
* hist_diff: log10(1 + sum over the three channels and 256 bins of |h_out - h_ref|), h being raw per-channel
  pixel counts of the 8-bit image. 0 for identical histograms; ~6 for completely disjoint 512x512 images,
  the scale of the paper's reported values (4 to 8).
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.filters import sobel
from skimage.metrics import structural_similarity

SOBEL_THRESHOLD = 0.1
CANNY_LOW, CANNY_HIGH = 100, 200
METRIC_NAMES = ("psnr", "mse", "mae", "ssim", "sobel_iou", "canny_iou", "hist_diff")


def to_float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    return img.astype(np.float32)


def to_uint8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check(output: np.ndarray, reference: np.ndarray) -> None:
    if np.shape(output) != np.shape(reference):
        raise ValueError(f"shape mismatch: output {np.shape(output)} vs reference {np.shape(reference)}")


def mse(output: np.ndarray, reference: np.ndarray) -> float:
    _check(output, reference)
    return float(np.mean((to_float(output) - to_float(reference)) ** 2, dtype=np.float64))


def mae(output: np.ndarray, reference: np.ndarray) -> float:
    _check(output, reference)
    return float(np.mean(np.abs(to_float(output) - to_float(reference)), dtype=np.float64))


def psnr(output: np.ndarray, reference: np.ndarray) -> float:
    return float(10.0 * np.log10(1.0 / max(mse(output, reference), 1e-10)))


def ssim(output: np.ndarray, reference: np.ndarray) -> float:
    _check(output, reference)
    a, b = to_float(output), to_float(reference)
    kwargs = {"channel_axis": -1} if a.ndim == 3 else {}
    return float(structural_similarity(a, b, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, **kwargs))


def luma(img: np.ndarray) -> np.ndarray:
    f = to_float(img)
    if f.ndim == 2:
        return f
    return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def sobel_edges(img: np.ndarray) -> np.ndarray:
    return sobel(luma(img)) >= SOBEL_THRESHOLD


def canny_edges(img: np.ndarray) -> np.ndarray:
    return cv2.Canny(to_uint8(luma(img)), CANNY_LOW, CANNY_HIGH) > 0


def sobel_iou(output: np.ndarray, reference: np.ndarray) -> float:
    _check(output, reference)
    return _iou(sobel_edges(output), sobel_edges(reference))


def canny_iou(output: np.ndarray, reference: np.ndarray) -> float:
    _check(output, reference)
    return _iou(canny_edges(output), canny_edges(reference))


def hist_diff(output: np.ndarray, reference: np.ndarray) -> float:
    _check(output, reference)
    a, b = to_uint8(output), to_uint8(reference)
    a = a[..., None] if a.ndim == 2 else a
    b = b[..., None] if b.ndim == 2 else b
    total = 0
    for c in range(a.shape[-1]):
        ha = np.bincount(a[..., c].ravel(), minlength=256)
        hb = np.bincount(b[..., c].ravel(), minlength=256)
        total += int(np.abs(ha - hb).sum())
    return float(np.log10(1.0 + total))


def all_metrics(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """All seven metrics as a dict keyed by METRIC_NAMES."""
    return {
        "psnr": psnr(output, reference),
        "mse": mse(output, reference),
        "mae": mae(output, reference),
        "ssim": ssim(output, reference),
        "sobel_iou": sobel_iou(output, reference),
        "canny_iou": canny_iou(output, reference),
        "hist_diff": hist_diff(output, reference),
    }
