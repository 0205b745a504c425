import numpy as np
import pytest
import torch

from illexp_ros.core.baselines import BASELINES
from illexp_ros.core.degradation import degrade
from illexp_ros.core.fast import guided_upsample, internal_size
from illexp_ros.core.metrics import psnr


@pytest.fixture
def dark_image():
    rng = np.random.default_rng(0)
    grad = np.linspace(0, 1, 64, dtype=np.float32)[None, :, None].repeat(48, 0).repeat(3, 2)
    ref = np.clip(grad * 0.8 + rng.random((48, 64, 3), dtype=np.float32) * 0.2, 0, 1)
    return (degrade(ref, 0.9, 0.4, 1.5) * 255).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_brighten_a_dark_frame(name, dark_image):
    out = BASELINES[name](dark_image)
    assert out.shape == dark_image.shape and out.dtype == np.uint8
    assert out.mean() > dark_image.mean() + 10


def test_retinex_gives_a_flat_frame_mid_grey_not_black():
    for value in (30, 128, 220):
        out = BASELINES["msr"](np.full((32, 32, 3), value, np.uint8))
        assert out.min() == out.max() == 128


def test_internal_size():
    assert internal_size(480, 640, 128) == (128, 168)
    assert internal_size(100, 60, 256) == (96, 64)  # never upscales, rounds to multiples of 8
    assert internal_size(5, 5, 64) == (8, 8)


def test_guided_upsample_transfers_a_global_curve():
    # A pointwise curve applied at low resolution must transfer to full resolution almost exactly.
    rng = np.random.default_rng(0)
    full = torch.from_numpy(rng.random((1, 3, 96, 128), dtype=np.float32))
    full = torch.nn.functional.avg_pool2d(full, 5, 1, 2)  # natural-ish smoothness
    low = torch.nn.functional.interpolate(full, size=(24, 32), mode="area")
    curve = lambda t: t.clamp(0, 1) ** 0.5  # noqa: E731
    out = guided_upsample(low, curve(low), full)
    expected = curve(full)
    gain = psnr(out[0].permute(1, 2, 0).numpy(), expected[0].permute(1, 2, 0).numpy())
    naive = torch.nn.functional.interpolate(curve(low), size=(96, 128), mode="bilinear", align_corners=False)
    naive_psnr = psnr(naive[0].permute(1, 2, 0).numpy(), expected[0].permute(1, 2, 0).numpy())
    assert gain > 30 and gain > naive_psnr + 3
