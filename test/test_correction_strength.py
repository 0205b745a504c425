"""runtime/correction_strength.py: 1 leaves the correction, 0 gives the input, values between blend per pixel;
out-of-range values are refused; the node's, the bag tool's and evaluate.py's defaults and ranges are the module's."""

from __future__ import annotations

import numpy as np
import pytest

from illexp_ros.ros.bags import tool as bag_tool
from illexp_ros.runtime.correction_strength import DEFAULT_STRENGTH, apply_strength, check_strength


def frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))


def test_one_returns_the_correction_untouched_and_zero_the_input():
    inp, out = frames()
    corrected = out.copy()
    assert apply_strength(inp, out, 1.0) is out
    np.testing.assert_array_equal(out, corrected)
    assert apply_strength(inp, out, 0) is out  # in place
    np.testing.assert_array_equal(out, inp)


@pytest.mark.parametrize("strength", [0.25, 0.5, 0.9])
def test_between_it_blends_each_pixel(strength):
    inp, out = frames(1)
    expected = inp + strength * (out.astype(np.float64) - inp)
    got = apply_strength(inp, out.copy(), strength)
    assert np.abs(got - expected).max() <= 0.5 + 1e-9  # rounded


@pytest.mark.parametrize("bad", [-0.1, 1.01, float("nan"), True, "1"])
def test_out_of_range_values_are_refused(bad):
    with pytest.raises(ValueError, match="correction strength must be a number in"):
        check_strength(bad)


def test_frames_must_match():
    inp, out = frames()
    with pytest.raises(ValueError, match="one shape"):
        apply_strength(inp[:3], out, 0.5)
    with pytest.raises(ValueError, match="uint8"):
        apply_strength(inp.astype(np.float32), out, 0.5)


def test_node_bag_tool_and_evaluate_share_the_range_and_default():
    from illexp_ros.ros.node.parameters import PARAMETERS
    from training import evaluate

    spec = PARAMETERS["strength"]
    assert spec.float_range == (0.0, 1.0) and spec.default == DEFAULT_STRENGTH == 1.0
    assert bag_tool.DEFAULT_STRENGTH == DEFAULT_STRENGTH == evaluate.NODE_DEFAULTS["strength"]
    for command in (["process", "IN", "OUT"], ["sheet", "IN", "--out", "s.png"]):
        assert bag_tool.build_parser().parse_args([*command, "--topic", "/t"]).strength == DEFAULT_STRENGTH
        with pytest.raises(SystemExit):
            bag_tool.build_parser().parse_args([*command, "--topic", "/t", "--strength", "1.5"])
