"""One brightness level for the two views of a stereo pair (beyond the paper).

    shared = stereo_gain_changes(smoother, [left_in, right_in], [left_out, right_out], t=t, segment=segment)
    # multiply each output by its factor in shared.changes (the node does it in the same pass as exposure
    # compensation); shared.gains are the views' own gains, before sharing

Why: the networks pick each frame's level from what it holds, and two views of one scene hold different
things at their edges, so two nodes correcting a stereo camera's left and right streams return the views at
levels that differ as two frames of a pan do (README, "Stereo pairs get different levels": 12 / 23 / 48
millistops on average, up to 265, for views 8 / 32 / 64 px apart on the confirmation photos). A direct
(photometric) stereo or visual-odometry front end reads that as the scene being brighter in one eye.

What it does: each view's correction gain g = log2(mean output / mean input) is measured as level smoothing
measures it (runtime/level_smoothing.py), and every view is scaled to the views' mean gain; then the pair's
gain is smoothed across pairs with the stream's LevelSmoother, exactly as a single camera's (the input level
it follows is the views' mean). The views' own contents still decide the pair's level: only the difference
between the views goes. Choice: the mean of the gains, not the left view's, so neither view is the reference
(a probe with the mean took the level difference from 19 to 4 millistops at 32 px; README).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from illexp_ros.runtime.level_smoothing import MIN_GAIN_CHANGE, LevelSmoother, frame_level


@dataclass(frozen=True)
class SharedLevel:
    changes: list[float]  # the factor to multiply each corrected view by (1.0: leave it)
    gains: list[float]  # each view's own correction gain, log2(mean out / mean in), before sharing

    @property
    def spread(self) -> float:
        """Stops between the views' own gains: the difference sharing removes."""
        return max(self.gains) - min(self.gains)


def stereo_gain_changes(smoother: LevelSmoother, frames_in: list[np.ndarray], frames_out: list[np.ndarray],
                        t: float | None = None, segment: object = None) -> SharedLevel:
    """The factors that give all views one gain over their inputs, that gain smoothed across pairs by
    `smoother` (its weight 0: not smoothed, still shared). Views are uint8 frames; in and out of one view have
    one shape. The smoother's state is updated."""
    if not frames_in or len(frames_in) != len(frames_out):
        raise ValueError(f"need as many corrected views as input views (got {len(frames_in)} and "
                         f"{len(frames_out)})")
    for frame_in, frame_out in zip(frames_in, frames_out):
        if frame_in.shape != frame_out.shape or frame_in.dtype != np.uint8 or frame_out.dtype != np.uint8:
            raise ValueError(f"each view's input and output must be uint8 frames of one shape, got "
                             f"{frame_in.shape} {frame_in.dtype} and {frame_out.shape} {frame_out.dtype}")
    levels_in = [frame_level(frame) for frame in frames_in]
    gains = [frame_level(out) - level for out, level in zip(frames_out, levels_in)]
    shared = sum(gains) / len(gains)
    smoothing = smoother.smoothed_change(sum(levels_in) / len(levels_in), shared,
                                         tuple(frame.shape for frame in frames_out), t, segment)
    changes = []
    for gain in gains:
        change = 2.0 ** (shared - gain) * smoothing
        changes.append(1.0 if abs(change - 1.0) < MIN_GAIN_CHANGE else change)
    return SharedLevel(changes, gains)

