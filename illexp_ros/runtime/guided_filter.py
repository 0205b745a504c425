"""OpenCV/numpy twin of core/fast.py's guided upsampling, for the CPU backends (no torch in the frame loop).

Same maths as illexp_ros.core.fast.guided_upsample: per channel, a local affine fit low_out ~= A * low_in + b
over (2r+1)^2 windows (box means that ignore the outside of the image, like avg_pool2d with
count_include_pad=False), A and b box-smoothed, upsampled bilinearly (cv2.INTER_LINEAR uses the same half-pixel
centres as torch's align_corners=False) and applied to the full-resolution frame. Images are H x W x C float32
(OpenCV layout). A test checks it against the torch version.

GuidedUpsampler keeps every intermediate in buffers sized for one (low, full) resolution pair, so a warm call
allocates nothing.
"""

from __future__ import annotations

import cv2
import numpy as np

from illexp_ros.core.fast import DEFAULT_EPS, DEFAULT_RADIUS


class GuidedUpsampler:
    """Buffers and steps of the guided upsampling for one low resolution (hl, wl) and full one (h, w)."""

    def __init__(self, low_hw: tuple[int, int], full_hw: tuple[int, int], channels: int = 3,
                 radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> None:
        hl, wl = low_hw
        h, w = full_hw
        self.radius = radius
        self.eps = np.float32(eps)
        self.ksize = (2 * radius + 1, 2 * radius + 1)
        self.full_wh = (w, h)
        low = (hl, wl, channels)
        # Number of in-image pixels under each window: the divisor of a box mean that ignores the outside.
        ones = np.ones((hl, wl), np.float32)
        count = cv2.boxFilter(ones, -1, self.ksize, normalize=False, borderType=cv2.BORDER_CONSTANT)
        self.inv_count = np.ascontiguousarray(np.repeat((1.0 / count)[..., None], channels, axis=2))
        self.mean_x, self.mean_y, self.cov, self.var, self.tmp, self.a, self.b = (
            np.empty(low, np.float32) for _ in range(7))
        self.a_up = np.empty((h, w, channels), np.float32)
        self.b_up = np.empty((h, w, channels), np.float32)

    def _box_mean(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        cv2.boxFilter(src, -1, self.ksize, dst=dst, normalize=False, borderType=cv2.BORDER_CONSTANT)
        np.multiply(dst, self.inv_count, out=dst)
        return dst

    def coefficients(self, low_in: np.ndarray, low_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed A and b (hl x wl x C) of the fit low_out ~= A * low_in + b."""
        self._box_mean(low_in, self.mean_x)
        self._box_mean(low_out, self.mean_y)
        np.multiply(low_in, low_out, out=self.tmp)
        self._box_mean(self.tmp, self.cov)
        self.cov -= self.mean_x * self.mean_y  # cov_xy (small temporary at low resolution only)
        np.multiply(low_in, low_in, out=self.tmp)
        self._box_mean(self.tmp, self.var)
        np.multiply(self.mean_x, self.mean_x, out=self.tmp)
        self.var -= self.tmp
        self.var += self.eps
        np.divide(self.cov, self.var, out=self.tmp)  # A
        np.multiply(self.tmp, self.mean_x, out=self.cov)
        np.subtract(self.mean_y, self.cov, out=self.cov)  # b = mean_y - A * mean_x
        self._box_mean(self.tmp, self.a)
        self._box_mean(self.cov, self.b)
        return self.a, self.b

    def apply(self, low_in: np.ndarray, low_out: np.ndarray, full_in: np.ndarray) -> np.ndarray:
        """A_up * full_in + b_up clamped to [0, 1], written into (and returning) an internal H x W x C buffer."""
        a, b = self.coefficients(low_in, low_out)
        cv2.resize(a, self.full_wh, dst=self.a_up, interpolation=cv2.INTER_LINEAR)
        cv2.resize(b, self.full_wh, dst=self.b_up, interpolation=cv2.INTER_LINEAR)
        np.multiply(self.a_up, full_in, out=self.a_up)
        self.a_up += self.b_up
        np.clip(self.a_up, 0.0, 1.0, out=self.a_up)
        return self.a_up


def guided_upsample_np(low_in: np.ndarray, low_out: np.ndarray, full_in: np.ndarray,
                       radius: int = DEFAULT_RADIUS, eps: float = DEFAULT_EPS) -> np.ndarray:
    """One-shot form (H x W x C float32 arrays); returns a new array."""
    up = GuidedUpsampler(low_in.shape[:2], full_in.shape[:2], low_in.shape[2], radius, eps)
    return up.apply(np.ascontiguousarray(low_in, np.float32), np.ascontiguousarray(low_out, np.float32),
                    np.ascontiguousarray(full_in, np.float32)).copy()
