"""The shipped models correct strong synthetic ill-exposure of an image no model was trained on.

scikit-image's bundled `chelsea` photo (300 x 451) is degraded with eq. 5 at the strong ends of the
training ranges; the `mixed` model, and `auto` routing to under / over / mixed, must each gain >= 5 dB PSNR
over the degraded input, and so must fast mode's under specialist (`under_fast.pt`) for `mode: under` and
auto's under route. A missing model file fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from shipped import shipped_model

from illexp_ros.core.degradation import degrade
from illexp_ros.core.metrics import psnr, to_uint8
from illexp_ros.runtime.model_io import SHIPPED_NAMES

DEGRADATIONS = {  # (alpha, beta, gamma)
    "under": (1.0, 0.3, 1.4),
    "over": (1.0, 2.5, 0.7),
}
MIN_GAIN_DB = 5.0

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    from skimage import data

    return data.chelsea()


@pytest.mark.parametrize("mode", ["mixed", "auto"])
@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_shipped_model_gains_5_db(reference, mode, kind):
    for name in ["mixed"] if mode == "mixed" else SHIPPED_NAMES:
        shipped_model(name)
    from illexp_ros.runtime import Enhancer

    alpha, beta, gamma = DEGRADATIONS[kind]
    degraded = to_uint8(degrade(reference.astype(np.float32) / 255.0, alpha, beta, gamma))
    enh = Enhancer.from_model("mixed" if mode == "mixed" else "default", backend="torch_cpu", mode=mode)
    try:
        out = enh.enhance(degraded, color_order="rgb")
        route = enh.last_route
    finally:
        enh.close()
    before, after = psnr(degraded, reference), psnr(out, reference)
    assert after >= before + MIN_GAIN_DB, (
        f"{mode} on {kind}-exposed chelsea: {before:.2f} dB -> {after:.2f} dB (route {route}), "
        f"needs +{MIN_GAIN_DB} dB")
    if mode == "auto":
        assert route in (kind, "mixed"), f"auto routed a {kind}-exposed frame to {route}"


@pytest.mark.parametrize("mode", ["under", "auto"])
def test_fast_mode_routes_dark_frames_to_the_under_specialist(reference, mode):
    """In fast mode (the node's default on a CPU) `mode: under` and auto's under route take models/under_fast.pt,
    the slim network trained through fast mode on under-exposure, not under.pt at a size it never saw."""
    shipped_model("under_fast")
    from illexp_ros.runtime import Enhancer

    degraded = to_uint8(degrade(reference.astype(np.float32) / 255.0, *DEGRADATIONS["under"]))
    enh = Enhancer.from_model("default", backend="torch_cpu", mode=mode, fast=True)
    try:
        out = enh.enhance(degraded, color_order="rgb")
        route = enh.last_route
    finally:
        enh.close()
    before, after = psnr(degraded, reference), psnr(out, reference)
    assert route == "under_fast", f"fast {mode} ran {route} on an under-exposed frame"
    assert after >= before + MIN_GAIN_DB, f"fast {mode}: {before:.2f} dB -> {after:.2f} dB, needs +{MIN_GAIN_DB} dB"
