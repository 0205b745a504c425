import numpy as np
import pytest
import torch

from illexp_ros.core.exposure import classify_exposure, exposure_map


def test_under_map_known_values():
    ref = np.array([[[0.8, 0.5, 0.0]]], np.float32)
    deg = np.array([[[0.2, 0.5, 0.0]]], np.float32)
    em = exposure_map(deg, ref, "under")
    # |0.8-0.2|/0.8 = 0.75 ; nothing lost -> 0 ; black reference -> 0
    np.testing.assert_allclose(em[0, 0], [0.75, 0.0, 0.0], atol=2e-3)


def test_over_map_known_values():
    ref = np.array([[[0.6, 0.2, 1.0]]], np.float32)
    deg = np.array([[[0.9, 1.0, 1.0]]], np.float32)
    em = exposure_map(deg, ref, "over")
    # |0.6-0.9|/(1-0.6) = 0.75 ; |0.2-1|/(0.8) = 1 ; white reference -> 0
    np.testing.assert_allclose(em[0, 0], [0.75, 1.0, 0.0], atol=3e-3)


def test_maps_clip_to_unit_range_and_accept_uint8():
    ref = np.full((4, 4, 3), 0.1, np.float32)
    deg = np.full((4, 4, 3), 0.9, np.float32)
    em = exposure_map(deg, ref, "under")
    assert em.max() <= 1.0 and em.min() >= 0.0
    u8 = exposure_map((deg * 255).astype(np.uint8), (ref * 255).astype(np.uint8), "over")
    np.testing.assert_allclose(u8, exposure_map(deg, ref, "over"), atol=0.02)


def test_mixed_map_picks_formula_per_element():
    ref = np.array([[[0.8, 0.6]]], np.float32)
    deg = np.array([[[0.2, 0.9]]], np.float32)
    em = exposure_map(deg, ref, "mixed")
    np.testing.assert_allclose(em[0, 0], [0.75, 0.75], atol=3e-3)


def test_torch_and_numpy_agree():
    rng = np.random.default_rng(0)
    ref, deg = rng.random((2, 3, 5, 5), dtype=np.float32)
    for kind in ("under", "over", "mixed"):
        t = exposure_map(torch.from_numpy(deg), torch.from_numpy(ref), kind).numpy()
        np.testing.assert_allclose(t, exposure_map(deg, ref, kind), atol=1e-6)


def test_bad_kind_and_shape():
    a = np.zeros((2, 2, 3), np.float32)
    with pytest.raises(ValueError):
        exposure_map(a, a, "sideways")
    with pytest.raises(ValueError):
        exposure_map(a, np.zeros((2, 3, 3), np.float32), "under")


def test_classify_exposure():
    rng = np.random.default_rng(1)
    mid = (rng.random((64, 64, 3)) * 0.4 + 0.3) * 255
    assert classify_exposure(mid.astype(np.uint8)) == "well"
    assert classify_exposure((mid * 0.2).astype(np.uint8)) == "under"
    assert classify_exposure(np.clip(mid * 2.2, 0, 255).astype(np.uint8)) == "over"
    split = mid.copy()
    split[:, :32] *= 0.1
    split[:, 32:] = 250
    assert classify_exposure(split.astype(np.uint8)) == "mixed"
