"""How much of the correction a stream gets (beyond the paper): 1 = the network's correction, 0 = the input.

    out = apply_strength(frame, enhancer.enhance(frame), strength=0.5)   # half way from the input to the correction

Why: the correction is not always wanted whole. A detector trained on raw camera frames may do best with a
lighter touch, a teleoperator may want to compare with the raw view, and on frames that are only mildly off the
shipped models can change more than they should (models/MODEL_CARD.md). A blend with the input is the
simplest knob a user can reason about, and 0 switches the correction off at run time without restarting the
node or changing the topics (the node then does not run the network at all, unless the exposure map is wanted).

The blend is per pixel on the encoded values, as an editor's "opacity": out = in + strength * (corrected - in),
rounded. It applies before the level smoothing and the exposure compensation, so those act on what is published.
"""

from __future__ import annotations

import cv2
import numpy as np

from illexp_ros.runtime.in_place import opencv_in_place

DEFAULT_STRENGTH = 1.0


def check_strength(value: float) -> float:
    """`value` as a float, or ValueError unless it is a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"correction strength must be a number in [0, 1], got {value!r}")
    return float(value)


def apply_strength(frame_in: np.ndarray, frame_out: np.ndarray, strength: float) -> np.ndarray:
    """frame_out moved back towards frame_in so that `strength` of the correction is left; changed in place and
    returned. Both uint8 of one shape. At 1 frame_out is returned untouched; at 0 it becomes a copy of frame_in.
    One OpenCV pass (cv2.addWeighted, rounded and saturated)."""
    strength = check_strength(strength)
    if frame_in.shape != frame_out.shape or frame_in.dtype != np.uint8 or frame_out.dtype != np.uint8:
        raise ValueError(f"input and output must be uint8 frames of one shape, got {frame_in.shape} "
                         f"{frame_in.dtype} and {frame_out.shape} {frame_out.dtype}")
    if strength == 1.0:
        return frame_out
    return opencv_in_place(lambda dst: cv2.addWeighted(frame_out, strength, frame_in, 1.0 - strength, 0.0, dst=dst),
                           frame_out, "the corrected frame")
