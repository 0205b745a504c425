"""runtime.level_smoothing: the corrected stream's overall gain is averaged over frames, and only that."""

import math

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from illexp_ros.runtime.level_smoothing import CUT_STOPS, LEVEL_ROWS, LevelSmoother, frame_level


def scene(seed: int = 0, level: float = 90.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(level, 25.0, (48, 64, 3)), 0, 255).astype(np.uint8)


def gained(frame: np.ndarray, gain: float) -> np.ndarray:
    return np.clip(frame.astype(np.float64) * gain + 0.5, 0, 255).astype(np.uint8)


def stream_gains(smoother: LevelSmoother, frames: list[np.ndarray], gains: list[float],
                 dt: float = 1 / 30) -> np.ndarray:
    """log2 gain (output level over input level) of each frame the smoother returns."""
    levels = []
    for i, (frame, gain) in enumerate(zip(frames, gains, strict=True)):
        out = smoother.apply(frame, gained(frame, gain), t=i * dt)
        levels.append(frame_level(out) - frame_level(frame))
    return np.array(levels)


def test_a_network_whose_gain_flickers_comes_out_steady():
    frames = [scene(i % 3) for i in range(40)]  # a small pan: the view's content changes a little
    gains = [1.6 if i % 2 else 1.4 for i in range(40)]  # the network's level choice alternates by 0.19 stops
    raw = stream_gains(LevelSmoother(0.0), frames, gains)
    steady = stream_gains(LevelSmoother(0.9), frames, gains)
    raw_flicker, steady_flicker = np.abs(np.diff(raw)).mean(), np.abs(np.diff(steady)).mean()
    assert raw_flicker > 0.15
    assert steady_flicker < raw_flicker / 5
    # the level it settles on is the average gain, not one of the two
    assert abs(steady[-10:].mean() - math.log2(1.5)) < 0.02


def test_first_frame_and_a_steady_gain_pass_unchanged():
    smoother = LevelSmoother(0.9)
    frames = [scene(i) for i in range(5)]
    for i, frame in enumerate(frames):
        made = gained(frame, 1.3)
        out = smoother.apply(frame, made.copy(), t=i / 30)
        np.testing.assert_array_equal(out, made)  # the gain never changes: nothing to smooth


def test_changes_the_output_in_place_by_one_gain_per_frame():
    smoother = LevelSmoother(0.5)
    frame = scene(1)
    smoother.apply(frame, gained(frame, 1.0), t=0.0)
    made = gained(frame, 2.0)
    out = smoother.apply(frame, made, t=1 / 30)
    assert out is made  # in place
    # average of log2 gains 0 and 1 with weight 0.5: 0.5 stops, i.e. the output scaled by 2 ** -0.5
    assert smoother.last_gain_change == pytest.approx(2 ** -0.5, rel=0.02)
    expected = gained(gained(frame, 2.0), smoother.last_gain_change).astype(int)
    assert np.abs(out.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("restart", ["exposure step", "pause", "segment", "size"])
def test_restarts_when_the_input_or_the_correction_changes(restart):
    smoother = LevelSmoother(0.9)
    frame = scene(2, level=60.0)
    for i in range(10):
        smoother.apply(frame, gained(frame, 2.0), t=i / 30, segment="mixed")
    t, segment, new = 10 / 30, "mixed", frame
    if restart == "exposure step":  # auto-exposure brightens the input by 0.3 stops; the network lowers its gain
        new = gained(frame, 2 ** 0.3)
        assert frame_level(new) - frame_level(frame) > CUT_STOPS
    elif restart == "pause":
        t = 10 / 30 + 1.5
    elif restart == "segment":
        segment = "auto/under"
    else:
        new = np.ascontiguousarray(frame[:32, :32])
    made = gained(new, 1.2)
    out = smoother.apply(new, made.copy(), t=t, segment=segment)
    np.testing.assert_array_equal(out, made)  # the network's frame as it is, no lag behind the change


def test_weight_zero_is_off_and_bad_arguments_are_refused():
    smoother = LevelSmoother(0.0)
    frame = scene(3)
    for i, gain in enumerate((1.0, 2.0, 1.0)):
        made = gained(frame, gain)
        np.testing.assert_array_equal(smoother.apply(frame, made.copy(), t=i / 30), made)
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="weight"):
            LevelSmoother(bad)
    with pytest.raises(ValueError, match="cut_stops"):
        LevelSmoother(0.5, cut_stops=0)
    with pytest.raises(ValueError, match="one shape"):
        smoother.apply(frame, frame[:10])
    with pytest.raises(ValueError, match="uint8"):
        smoother.apply(frame, frame.astype(np.float32))


def test_black_frames_have_a_finite_level():
    assert frame_level(np.zeros((4, 4, 3), np.uint8)) == 0.0
    assert frame_level(np.full((4, 4, 3), 255, np.uint8)) == pytest.approx(8.0)


def full_level(frame: np.ndarray) -> float:
    return math.log2(float(frame.astype(np.float64).mean()) + 1.0)


def test_level_reads_every_row_up_to_twice_level_rows_and_a_subset_of_taller_frames():
    photo = cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR)  # 512 x 512
    short = photo[:2 * LEVEL_ROWS - 1]
    assert frame_level(short) == pytest.approx(full_level(short), abs=1e-9)
    # 1080p: every 4th row, within 0.003 stops of the whole frame's level (real photo, not a flat test card)
    tall = cv2.resize(photo, (1920, 1080), interpolation=cv2.INTER_CUBIC)
    assert abs(frame_level(tall) - full_level(tall)) < 0.003
    # It is a subset of rows, and that is its limit: a pattern repeating every 4 rows can be misread (a frame
    # bright only on the rows the stride skips reads as black); in and out frames are read on the same rows.
    striped = np.zeros((1080, 16, 3), np.uint8)
    striped[1::4] = 255
    assert frame_level(striped) == 0.0


def test_gain_change_is_what_apply_multiplies_by_and_leaves_the_frame_alone():
    frames = [scene(i % 3) for i in range(6)]
    gains = [1.6 if i % 2 else 1.4 for i in range(6)]
    by_apply, by_change = LevelSmoother(0.8), LevelSmoother(0.8)
    for i, (frame, gain) in enumerate(zip(frames, gains)):
        made = gained(frame, gain)
        applied = by_apply.apply(frame, made.copy(), t=i / 30)
        untouched = made.copy()
        change = by_change.gain_change(frame, untouched, t=i / 30)
        np.testing.assert_array_equal(untouched, made)
        assert change == by_apply.last_gain_change == by_change.last_gain_change
        if i:  # the first frame passes; later ones alternate around the average
            assert change != 1.0
        np.testing.assert_array_equal(applied, made if change == 1.0 else
                                      np.clip(np.rint(made * change), 0, 255).astype(np.uint8))
