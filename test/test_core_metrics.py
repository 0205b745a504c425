import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from illexp_ros.core import metrics


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, ref.shape)
    out = np.clip(ref.astype(int) + noise, 0, 255).astype(np.uint8)
    return out, ref


def test_psnr_mse_against_skimage(pair):
    out, ref = pair
    f_out, f_ref = out / 255.0, ref / 255.0
    assert metrics.mse(out, ref) == pytest.approx(mean_squared_error(f_ref, f_out), rel=1e-5)
    assert metrics.psnr(out, ref) == pytest.approx(peak_signal_noise_ratio(f_ref, f_out, data_range=1.0), rel=1e-5)
    assert metrics.mae(out, ref) == pytest.approx(np.abs(f_out - f_ref).mean(), rel=1e-5)


def test_ssim_against_skimage(pair):
    out, ref = pair
    expected = structural_similarity(out / 255.0, ref / 255.0, channel_axis=-1, data_range=1.0,
                                     gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert metrics.ssim(out, ref) == pytest.approx(expected, rel=1e-4)


def test_identical_images(pair):
    _, ref = pair
    m = metrics.all_metrics(ref, ref)
    assert m["psnr"] == pytest.approx(100.0)
    assert m["mse"] == 0 and m["mae"] == 0
    assert m["ssim"] == pytest.approx(1.0)
    assert m["sobel_iou"] == 1.0 and m["canny_iou"] == 1.0
    assert m["hist_diff"] == 0.0


def test_black_images():
    black = np.zeros((32, 32, 3), np.uint8)
    m = metrics.all_metrics(black, black)
    assert m["sobel_iou"] == 1.0 and m["canny_iou"] == 1.0  # no edges on either side is a perfect match
    white = np.full((32, 32, 3), 255, np.uint8)
    m2 = metrics.all_metrics(black, white)
    assert m2["mse"] == pytest.approx(1.0) and m2["psnr"] == pytest.approx(0.0, abs=1e-6)
    # disjoint histograms: every pixel counted twice per channel
    assert m2["hist_diff"] == pytest.approx(np.log10(1 + 3 * 2 * 32 * 32))


def test_edge_iou_of_a_square():
    img = np.zeros((40, 40, 3), np.uint8)
    img[10:30, 10:30] = 255
    shifted = np.roll(img, 6, axis=1)
    assert metrics.canny_iou(img, img) == 1.0
    assert 0.0 <= metrics.canny_iou(img, shifted) < 0.7
    assert 0.0 <= metrics.sobel_iou(img, shifted) < 0.7
    assert metrics.sobel_edges(img).sum() > 0 and metrics.canny_edges(img).sum() > 0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape mismatch"):
        metrics.psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_all_metrics_keys(pair):
    assert tuple(metrics.all_metrics(*pair)) == metrics.METRIC_NAMES
