"""Exposure maps (paper eq. 1 and eq. 2) and exposure classification of a frame.

Interpretation of the paper's notation (eq. 1/2), chosen and written down here:

* max() and min() "return an array with the maximum and minimum value of each pixel per channel": they act
  element-wise (per pixel, per channel) and do not reduce, so on a single image they are the image itself and
  the map keeps 3 channels, matching the 3-channel output of the attention network.
* inver(I~) = |m - I~| with m the highest representable value (1.0 for images in [0, 1]), not the image's
  own maximum, so the denominator only vanishes where the reference is itself clipped white.
* Hence  under: EM = |I~ - I| / I~        (the fraction of the reference intensity that was lost)
         over:  EM = |I~ - I| / (1 - I~)  (the fraction of the head-room to white that was eaten)
  with a small epsilon in the denominators and the result clipped to [0, 1]. Where the reference is black
  (under) or white (over) nothing can have been lost in that direction, and the map is 0 there.
* kind="mixed" (beyond the paper, for frames that are dark in one region and blown out in another): per
  element, the under formula where the degraded value is below the reference and the over formula elsewhere.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

ExposureKind = Literal["under", "over", "mixed"]
EPS = 1e-3


def _as_float(a):
    if isinstance(a, np.ndarray) and a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    return a


def exposure_map(degraded, reference, kind: ExposureKind = "under"):
    """Eq. 1 (kind="under") / eq. 2 (kind="over") exposure map, element-wise, values in [0, 1].

    Works on numpy arrays (uint8 or float in [0, 1]) and on torch tensors (float in [0, 1]); the result has the
    shape of the inputs and the array type of the inputs (numpy: float32 for uint8 inputs, else the inputs'
    float type).
    """
    degraded = _as_float(degraded)
    reference = _as_float(reference)
    if degraded.shape != reference.shape:
        raise ValueError(f"shape mismatch: degraded {tuple(degraded.shape)} vs reference {tuple(reference.shape)}")
    diff = abs(reference - degraded)
    under = diff / (reference + EPS)
    over = diff / ((1.0 - reference) + EPS)
    if kind == "under":
        em = under
    elif kind == "over":
        em = over
    elif kind == "mixed":
        mask = degraded < reference
        em = under * mask + over * (~mask if isinstance(mask, np.ndarray) else mask.logical_not())
    else:
        raise ValueError(f"kind must be 'under', 'over' or 'mixed', got {kind!r}")
    return em.clip(0.0, 1.0)


ExposureClass = Literal["under", "over", "well", "mixed"]

# Thresholds of classify_exposure, in luma [0, 1]. Set from eq. 5 draws on train/ photos (never eval/):
# with them ~95 % of the clean photos stay 'well', ~90 % of the wide-range under/over draws are recognised,
# and the paper's mildest draws (beta near 1, gamma near 1) are, rightly, often left alone as 'well'.
# Mixed frames are the hardest: a soft tunnel-exit edge is caught when both dark and blown-out areas
# exceed 12 % of the frame (about a third of our synthetic mixed draws; ~1 % of clean photos).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # Rec. 601 (RGB order); the tone head of core.networks uses the same
DARK_LEVEL = 0.15
BRIGHT_LEVEL = 0.85
MIXED_AREA = 0.12


def exposure_statistics(rgb: np.ndarray) -> dict[str, float]:
    """Luma statistics of an H x W x 3 RGB frame (uint8 or float): mean, dark and bright fractions."""
    img = _as_float(np.asarray(rgb))
    w = LUMA_WEIGHTS
    luma = img[..., 0] * w[0] + img[..., 1] * w[1] + img[..., 2] * w[2] if img.ndim == 3 else img
    return {
        "mean": float(luma.mean()),
        "dark": float((luma < DARK_LEVEL).mean()),
        "bright": float((luma > BRIGHT_LEVEL).mean()),
    }


def classify_exposure(rgb: np.ndarray) -> ExposureClass:
    """Classify a frame as 'under', 'over', 'well' or 'mixed' from its luma histogram.

    mixed: large dark and large blown-out areas at once (a tunnel exit); under: dark on average or mostly
    crushed; over: bright on average or largely clipped; otherwise well-exposed. Thresholds are module constants.
    """
    s = exposure_statistics(rgb)
    if s["dark"] > MIXED_AREA and s["bright"] > MIXED_AREA:
        return "mixed"
    if s["mean"] < 0.3 or s["dark"] > 0.5:
        return "under"
    if s["mean"] > 0.68 or s["bright"] > 0.4:
        return "over"
    return "well"
