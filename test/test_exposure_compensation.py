"""runtime/exposure_compensation.py: a stop is a doubling of linear light in a gamma-2.2 frame; 0 changes nothing;
out-of-range values are refused; the node's and the bag tool's ranges are the module's."""

from __future__ import annotations

import numpy as np
import pytest

from illexp_ros.ros.bags import tool as bag_tool
from illexp_ros.runtime.exposure_compensation import (
    ENCODING_GAMMA,
    MAX_STOPS,
    compensate_exposure,
    compensation_factor,
)


def test_zero_returns_the_frame_untouched():
    frame = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    before = frame.copy()
    assert compensate_exposure(frame, 0.0) is frame
    np.testing.assert_array_equal(frame, before)


@pytest.mark.parametrize("stops", [-2.0, -1.0, 0.5, 1.0])
def test_a_stop_doubles_linear_light(stops):
    frame = np.full((4, 4, 3), 90, np.uint8)
    out = compensate_exposure(frame.copy(), stops)
    linear_ratio = (out[0, 0, 0] / 255.0) ** ENCODING_GAMMA / (90 / 255.0) ** ENCODING_GAMMA
    assert linear_ratio == pytest.approx(2.0 ** stops, rel=0.04)  # 8-bit rounding


def test_highlights_clip_and_the_frame_is_changed_in_place():
    frame = np.array([[[0, 128, 250]]], np.uint8)
    out = compensate_exposure(frame, 1.0)
    assert out is frame
    np.testing.assert_array_equal(out, [[[0, round(128 * 2 ** (1 / 2.2)), 255]]])


@pytest.mark.parametrize("bad", [MAX_STOPS + 0.1, -MAX_STOPS - 0.1, float("nan"), True, "1"])
def test_out_of_range_values_are_refused(bad):
    with pytest.raises(ValueError, match="exposure compensation must be a number of stops"):
        compensation_factor(bad)


def test_only_uint8_frames():
    with pytest.raises(ValueError, match="uint8"):
        compensate_exposure(np.zeros((2, 2, 3), np.float32), 1.0)


def test_node_and_bag_tool_share_the_range_and_default():
    from illexp_ros.ros.node.parameters import PARAMETERS

    spec = PARAMETERS["exposure_compensation"]
    assert spec.float_range == (-MAX_STOPS, MAX_STOPS) and spec.default == 0.0
    assert bag_tool.MAX_EXPOSURE_COMPENSATION == MAX_STOPS
    args = bag_tool.build_parser().parse_args(["process", "IN", "OUT", "--topic", "/t"])
    assert args.exposure_compensation == spec.default


def test_a_further_gain_is_applied_in_the_same_single_pass():
    frame = np.random.default_rng(1).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    factor = compensation_factor(0.7) * 0.8
    once = compensate_exposure(frame.copy(), 0.7, gain=0.8)
    np.testing.assert_array_equal(once, np.clip(np.rint(frame * factor), 0, 255).astype(np.uint8))
    # two passes round twice: on some values that differs from the one pass
    twice = compensate_exposure(compensate_exposure(frame.copy(), 0.7), 0.0, gain=0.8)
    assert (twice != once).any()
    # a gain alone works at 0 stops, and a factor within 1/1024 of 1 changes nothing
    np.testing.assert_array_equal(compensate_exposure(frame.copy(), 0.0, gain=2.0),
                                  np.clip(np.rint(frame * 2.0), 0, 255).astype(np.uint8))
    near = frame.copy()
    assert compensate_exposure(near, 0.0, gain=1.0005) is near
    np.testing.assert_array_equal(near, frame)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan"), True])
def test_bad_gains_are_refused(bad):
    with pytest.raises(ValueError, match="gain must be"):
        compensate_exposure(np.zeros((2, 2, 3), np.uint8), 0.0, gain=bad)


def _post_processing_steps():
    """(name, step(frame_in, frame_out) -> frame_out) for the three in-place steps after the network."""
    from illexp_ros.runtime.correction_strength import apply_strength
    from illexp_ros.runtime.level_smoothing import LevelSmoother

    def smoothed(frame_in, frame_out):
        smoother = LevelSmoother(0.9)
        smoother.apply(frame_in, frame_in.copy())  # the average's first frame: no gain over the input
        return smoother.apply(frame_in, frame_out)  # so this one is scaled back towards the input's level

    return [("strength", lambda i, o: apply_strength(i, o, 0.5)),
            ("compensation", lambda i, o: compensate_exposure(o, 1.0)),
            ("smoothing", smoothed)]


@pytest.mark.parametrize("name", ["strength", "compensation", "smoothing"])
def test_post_processing_takes_strided_frames_and_names_a_read_only_one(name):
    """A crop or a strided view is changed in place like a contiguous frame (OpenCV alone refused it with
    "Overload resolution failed"); a read-only frame is one clear ValueError."""
    step = dict(_post_processing_steps())[name]
    rng = np.random.default_rng(1)
    frame_in = rng.integers(20, 60, (6, 16, 3), dtype=np.uint8)
    frame_out = rng.integers(100, 200, (6, 16, 3), dtype=np.uint8)
    expected = step(frame_in.copy(), frame_out.copy())
    assert not np.array_equal(expected, frame_out)  # the step changes this frame
    wide = np.zeros((6, 32, 3), np.uint8)
    view = wide[:, ::2]
    view[:] = frame_out
    assert step(frame_in[:, :], view) is view
    np.testing.assert_array_equal(view, expected)
    assert not wide[:, 1::2].any()  # nothing written beside the view
    frozen = frame_out.copy()
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match="changed in place, but this array is read-only"):
        step(frame_in, frozen)
