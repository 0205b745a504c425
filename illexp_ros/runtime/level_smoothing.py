"""Steadies the overall brightness of a corrected stream (beyond the paper).

    smoother = LevelSmoother(weight=0.7)
    out = smoother.apply(frame, enhancer.enhance(frame), t=time.monotonic(), segment=(mode, fast, route))

Why: the networks correct each frame on its own, and the level they pick depends on what the view holds, so a
pan makes the corrected stream breathe (training/pan_flicker.py: ~10-13 millistops of level change per frame
on the shipped fast model, where the scene's own exposure did not change). Downstream, SLAM's photometric terms
and feature trackers read that as the scene changing.

What it does: it keeps an exponential average of the correction's overall gain, g = log2(mean output / mean input),
and scales each output frame (every value times one factor, rounded and clipped) so its gain is the average's
instead of its own. The level still follows the input at once (a darker view gives a darker output); only the
network's frame-to-frame choice of gain is smoothed. That choice does change, rightly, when the camera's exposure
changes (auto-exposure, a light switched on): the networks then pick a very different gain, and an average would
lag behind it. So the average's weight falls to 0 as the input's own level moves between two frames by up to
`cut_stops`: pans move the input's level by 0.003 stops per frame (median; 0.025 at the 99th percentile) on the
held-out photos, an auto-exposure step or ramp by far more. It restarts (no smoothing) on the first frame, a change
of frame size, a pause longer than `max_gap_s`, and a change of `segment` (mode, fast, auto's route: another
network, another gain).

A single image is never changed: the first frame passes as the network made it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from illexp_ros.runtime.in_place import opencv_in_place

# An input level change per frame (stops) at which the average's weight reaches 0; chosen with
# training/pan_flicker.py on the validation photos (README, "Steady brightness").
CUT_STOPS = 0.05
MAX_GAP_S = 1.0
MAX_WEIGHT = 0.99  # the node's parameter range too (ros/node/parameters.py)
# Output gains within this of 1 are not applied (less than half a grey level at white).
MIN_GAIN_CHANGE = 1.0 / 1024.0
_LEVEL_FLOOR = 1.0  # grey levels: keeps log2 of a black frame finite


# Rows read per frame for its level, at least: frames of fewer than 2 x this many rows are read whole, taller
# ones every k-th row, k = rows // LEVEL_ROWS (1080p: every 4th). On 1080p photos the level moves by 0.0005 stops
# (median; at most 0.003, below what the cut and MIN_GAIN_CHANGE resolve) and the two means per frame take 0.12
# instead of 0.38 ms here. In and out frames are read on the same rows: the gain between them is measured on the
# same pixels.
LEVEL_ROWS = 256


def frame_level(frame: np.ndarray) -> float:
    """log2 of a uint8 frame's mean value (all channels), in stops; black frames give log2(1) = 0. Frames of
    2 x LEVEL_ROWS rows or more are read every (rows // LEVEL_ROWS)-th row."""
    means = cv2.mean(frame[::max(1, frame.shape[0] // LEVEL_ROWS)])
    channels = frame.shape[2] if frame.ndim == 3 else 1
    return math.log2(sum(means[:channels]) / channels + _LEVEL_FLOOR)


@dataclass
class _State:
    shape: tuple
    segment: object
    t: float | None
    input_level: float
    gain: float  # the smoothed log2 gain


class LevelSmoother:
    """Exponential smoothing of the correction's overall gain across the frames of one stream."""

    def __init__(self, weight: float, cut_stops: float = CUT_STOPS, max_gap_s: float = MAX_GAP_S) -> None:
        self.weight = weight
        if not cut_stops > 0 or not max_gap_s > 0:
            raise ValueError(f"cut_stops and max_gap_s must be > 0, got {cut_stops!r} and {max_gap_s!r}")
        self.cut_stops = float(cut_stops)
        self.max_gap_s = float(max_gap_s)
        self._state: _State | None = None
        self.last_gain_change = 1.0  # the factor applied to the last output (diagnostics)

    @property
    def weight(self) -> float:
        return self._weight

    @weight.setter
    def weight(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= MAX_WEIGHT:
            raise ValueError(f"level smoothing weight must be a number in [0, {MAX_WEIGHT}], got {value!r}")
        self._weight = float(value)

    def apply(self, frame_in: np.ndarray, frame_out: np.ndarray, t: float | None = None,
              segment: object = None) -> np.ndarray:
        """frame_out with its overall gain over frame_in replaced by the smoothed one. Both are H x W x C uint8
        of the same shape; frame_out is changed in place and returned. t: the frame's time in seconds (any
        clock that does not jump; None = no pause check); segment: anything that changes when the correction
        itself does (mode, model), which restarts the average."""
        change = self.gain_change(frame_in, frame_out, t, segment)
        if change == 1.0:
            return frame_out
        # value * change, rounded and clipped to 0..255 (measured 1.0 ms at 1920x1080 here, a look-up table 1.6)
        return opencv_in_place(lambda dst: cv2.convertScaleAbs(frame_out, dst=dst, alpha=change), frame_out,
                               "the corrected frame")

    def gain_change(self, frame_in: np.ndarray, frame_out: np.ndarray, t: float | None = None,
                    segment: object = None) -> float:
        """What `apply` would multiply frame_out by (1.0: nothing), with the average updated as `apply` does;
        frame_out is not changed. For a caller that scales the frame once for this and a further factor (the
        node's exposure compensation): one pass and one rounding instead of two."""
        if frame_in.shape != frame_out.shape or frame_out.dtype != np.uint8 or frame_in.dtype != np.uint8:
            raise ValueError(f"input and output must be uint8 frames of one shape, got {frame_in.shape} "
                             f"{frame_in.dtype} and {frame_out.shape} {frame_out.dtype}")
        if self._weight == 0.0:  # off: no passes over the frames
            return self.smoothed_change(0.0, 0.0, frame_out.shape, t, segment)
        input_level = frame_level(frame_in)
        return self.smoothed_change(input_level, frame_level(frame_out) - input_level, frame_out.shape, t, segment)

    def smoothed_change(self, input_level: float, gain: float, shape: tuple, t: float | None = None,
                        segment: object = None) -> float:
        """`gain_change` from levels already measured (frame_level): the input's level and the correction's
        log2 gain, with `shape` standing for the frame size (a change restarts the average). For a caller
        that measures one level for several frames, e.g. the two views of a stereo pair."""
        self.last_gain_change = 1.0
        if self._weight == 0.0:
            self._state = None
            return 1.0
        prev, weight = self._state, 0.0
        if (prev is not None and prev.shape == shape and prev.segment == segment
                and (t is None or prev.t is None or 0.0 <= t - prev.t <= self.max_gap_s)):
            weight = self._weight * max(0.0, 1.0 - abs(input_level - prev.input_level) / self.cut_stops)
        smoothed = gain if prev is None else weight * prev.gain + (1.0 - weight) * gain
        self._state = _State(shape, segment, t, input_level, smoothed)
        change = 2.0 ** (smoothed - gain)
        if abs(change - 1.0) < MIN_GAIN_CHANGE:
            return 1.0
        self.last_gain_change = change
        return change
