"""The shipped models correct strong synthetic ill-exposure of an image no model was trained on.

scikit-image's bundled `chelsea` photo (300 x 451) is degraded with eq. 5 at the strong ends of the
training ranges; the `mixed` model, and `auto` routing to under / over / mixed, must each gain >= 5 dB PSNR
over the degraded input, and so must fast mode's specialists (`under_fast.pt`, `over_fast.pt`) for `mode:
under` / `over` and auto's routes. A missing model file fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from shipped import shipped_model

from illexp_ros.core.degradation import degrade
from illexp_ros.core.metrics import psnr, to_uint8
from illexp_ros.runtime.model_io import SHIPPED_NAMES, load_model

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


def degrade_and_correct(reference: np.ndarray, kind: str, model: str, mode: str, fast: bool = False
                        ) -> tuple[float, float, str]:
    """Degrade `reference` with DEGRADATIONS[kind], correct it once through the runtime (torch_cpu); returns
    (PSNR before, PSNR after, the route the Enhancer took)."""
    from illexp_ros.runtime import Enhancer

    degraded = to_uint8(degrade(reference.astype(np.float32) / 255.0, *DEGRADATIONS[kind]))
    enh = Enhancer.from_model(model, backend="torch_cpu", mode=mode, fast=fast)
    try:
        out = enh.enhance(degraded, color_order="rgb")
        route = enh.last_route
    finally:
        enh.close()
    return psnr(degraded, reference), psnr(out, reference), route


@pytest.mark.parametrize("mode", ["mixed", "auto"])
@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_shipped_model_gains_5_db(reference, mode, kind):
    for name in ["mixed"] if mode == "mixed" else SHIPPED_NAMES:
        shipped_model(name)
    before, after, route = degrade_and_correct(reference, kind, "mixed" if mode == "mixed" else "default", mode)
    assert after >= before + MIN_GAIN_DB, (
        f"{mode} on {kind}-exposed chelsea: {before:.2f} dB -> {after:.2f} dB (route {route}), "
        f"needs +{MIN_GAIN_DB} dB")
    if mode == "auto":
        assert route in (kind, "mixed"), f"auto routed a {kind}-exposed frame to {route}"


@pytest.mark.parametrize("mode", ["side", "auto"])
@pytest.mark.parametrize("kind", list(DEGRADATIONS))
def test_fast_mode_routes_to_the_side_s_specialist(reference, kind, mode):
    """In fast mode (the node's default on a CPU) `mode: under` / `over` and auto's under / over routes take
    models/<side>_fast.pt, the slim network trained through fast mode on that side's draws, not the paper-sized
    file at a size it never saw."""
    shipped_model(f"{kind}_fast")
    before, after, route = degrade_and_correct(reference, kind, "default", kind if mode == "side" else mode, fast=True)
    assert route == f"{kind}_fast", f"fast {mode} ran {route} on an {kind}-exposed frame"
    assert after >= before + MIN_GAIN_DB, (
        f"fast {mode} on {kind}-exposed chelsea: {before:.2f} dB -> {after:.2f} dB, needs +{MIN_GAIN_DB} dB")


@pytest.mark.parametrize("name", ["mixed_fast", "under_fast", "over_fast"])
def test_shipped_fast_model_records_its_guided_fit(name):
    """Each shipped fast file says which guided fit it runs through (meta guided_radius / guided_eps), so a later
    change of core/fast.py's defaults cannot silently change how it corrects frames."""
    _, info = load_model(shipped_model(name))
    meta = info["meta"]
    assert "guided_radius" in meta and "guided_eps" in meta, f"{name}.pt does not record its guided fit"
    assert (meta["guided_radius"], meta["guided_eps"]) == tuple(info["guided_fit"])
