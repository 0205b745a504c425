"""Classical enhancement baselines for comparison: HE, CLAHE, gamma correction, multiscale retinex.

All take and return H x W x 3 uint8 RGB.
* he: global histogram equalisation of the luma (Y of YCrCb), chroma kept.
* clahe: OpenCV CLAHE on L of CIE Lab, clip limit 2.0, 8 x 8 tiles.
* gamma: a global gamma chosen so the mean luma maps to 0.5 (gamma = log 0.5 / log mean).
* msr: multiscale retinex (Gaussian scales 15, 80, 250, equal weights) per channel, then the "simplest colour
  balance" stretch clipping 1 % at each end (Petro, Sbert and Morel, IPOL 2014); a channel with nothing to
  stretch (a flat frame) comes out mid-grey.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np


def histogram_equalization(rgb: np.ndarray) -> np.ndarray:
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    ycc[..., 0] = cv2.equalizeHist(np.ascontiguousarray(ycc[..., 0]))
    return cv2.cvtColor(ycc, cv2.COLOR_YCrCb2RGB)


def clahe(rgb: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    lab[..., 0] = op.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def gamma_correction(rgb: np.ndarray) -> np.ndarray:
    f = rgb.astype(np.float32) / 255.0
    mean = float((f @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
    mean = min(max(mean, 1e-3), 1 - 1e-3)
    g = np.log(0.5) / np.log(mean)
    lut = (np.power(np.arange(256, dtype=np.float32) / 255.0, g) * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    return cv2.LUT(rgb, lut)


def multiscale_retinex(rgb: np.ndarray, sigmas: tuple[float, ...] = (15.0, 80.0, 250.0),
                       clip: float = 0.01) -> np.ndarray:
    f = rgb.astype(np.float32) + 1.0
    log_f = np.log(f)
    r = np.zeros_like(f)
    for s in sigmas:
        r += log_f - np.log(cv2.GaussianBlur(f, (0, 0), s))
    r /= len(sigmas)
    out = np.empty_like(r)
    for c in range(3):
        lo, hi = np.quantile(r[..., c], [clip, 1 - clip])
        # no spread to stretch (a flat channel): mid-grey, not the black that dividing by ~0 at r == lo gave
        out[..., c] = (r[..., c] - lo) / (hi - lo) if hi - lo > 1e-6 else 0.5
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "he": histogram_equalization,
    "clahe": clahe,
    "gamma": gamma_correction,
    "msr": multiscale_retinex,
}
