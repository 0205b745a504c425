import numpy as np
import pytest

from illexp_ros.core.degradation import (
    ExposureSampler,
    add_sensor_noise,
    degrade,
    degrade_mixed,
    jpeg_roundtrip,
    mixed_exposure_mask,
)


def test_eq5_against_hand_computation():
    ref = np.array([0.0, 0.25, 0.5, 1.0], np.float32)
    # beta * (alpha * x) ** gamma with alpha=0.9, beta=0.5, gamma=1.5
    expected = [0.0, 0.5 * (0.225**1.5), 0.5 * (0.45**1.5), 0.5 * (0.9**1.5)]
    np.testing.assert_allclose(degrade(ref, 0.9, 0.5, 1.5), expected, rtol=1e-5)


def test_eq5_clips_overexposure():
    out = degrade(np.array([0.2, 0.6, 0.9], np.float32), 1 / 0.9, 2.0, 1 / 1.5)
    assert out.max() == 1.0 and out.min() >= 0
    np.testing.assert_allclose(out[0], min(1.0, 2.0 * (0.2 / 0.9) ** (1 / 1.5)), rtol=1e-5)


def test_sampler_ranges_split_under_and_over():
    s = ExposureSampler(rng=np.random.default_rng(0))
    ref = np.linspace(0.05, 0.95, 50, dtype=np.float32)
    for _ in range(200):
        u, o = s.sample("under"), s.sample("over")
        assert 0.5 <= u.beta <= 1.0 and 1.0 <= u.gamma <= 1.5 and 0.9 <= u.alpha <= 1 / 0.9
        assert 1.0 <= o.beta <= 2.0 and 1 / 1.5 <= o.gamma <= 1.0
        assert u.apply(ref).mean() < o.apply(ref).mean()
    with pytest.raises(ValueError):
        s.sample("sideways")
    with pytest.raises(ValueError):
        ExposureSampler(beta_under=(1.0, 0.5))


def test_sampler_is_seeded():
    a = ExposureSampler(rng=np.random.default_rng(5)).sample("any")
    b = ExposureSampler(rng=np.random.default_rng(5)).sample("any")
    assert a == b


def test_mixed_mask_and_degradation():
    rng = np.random.default_rng(3)
    mask = mixed_exposure_mask(40, 60, rng)
    assert mask.shape == (40, 60, 1) and mask.min() >= 0 and mask.max() <= 1
    assert mask.min() < 0.2 and mask.max() > 0.8  # both regions present
    ref = np.full((40, 60, 3), 0.5, np.float32)
    s = ExposureSampler(rng=rng)
    u, o = s.sample("under"), s.sample("over")
    out = degrade_mixed(ref, u, o, mask)
    dark = out[mask[..., 0] < 0.05]
    bright = out[mask[..., 0] > 0.95]
    np.testing.assert_allclose(dark, u.apply(ref)[0, 0][None].repeat(len(dark), 0), atol=0.03)
    np.testing.assert_allclose(bright, o.apply(ref)[0, 0][None].repeat(len(bright), 0), atol=0.03)


def test_realistic_extras_default_off_but_work():
    rng = np.random.default_rng(0)
    img = np.full((32, 32, 3), 0.5, np.float32)
    noisy = add_sensor_noise(img, rng)
    assert 0.01 < noisy.std() < 0.2
    jpg = jpeg_roundtrip(rng.random((32, 32, 3), dtype=np.float32), 20)
    assert jpg.shape == (32, 32, 3) and jpg.dtype == np.float32


def test_metering_brings_the_mean_linear_luminance_to_the_key():
    import torch

    from illexp_ros.core.degradation import METERING_KEY, metered, metering_stops, srgb_to_linear

    rng = np.random.default_rng(0)
    dark = rng.uniform(0.1, 0.5, (24, 32, 3)).astype(np.float32)  # ~1.1 EV below the key, nothing clips
    stops = metering_stops(dark)
    assert 1.0 < stops < 2.0
    out = metered(dark)
    luma = (srgb_to_linear(out) * np.array([0.2126, 0.7152, 0.0722], np.float32)).sum(-1).mean()
    assert luma == pytest.approx(METERING_KEY, rel=0.02)
    assert out.dtype == np.float32 and abs(metering_stops(out)) < 0.03
    np.testing.assert_array_equal(metered(dark, strength=0.0), dark)
    half = metered(dark, strength=0.5)
    assert metering_stops(half) == pytest.approx(stops / 2, abs=0.03)
    # The correction is clipped: a nearly black frame is raised by max_stops, no more.
    assert metering_stops(np.full((4, 4, 3), 0.01, np.float32), max_stops=2.0) == 2.0
    # The batched torch version agrees with numpy, per sample.
    batch = torch.from_numpy(np.stack([dark, 1.0 - dark * 0.5])).permute(0, 3, 1, 2).contiguous()
    per_sample = metering_stops(batch).flatten()
    assert per_sample.shape == (2,) and float(per_sample[0]) == pytest.approx(stops, abs=1e-4)
    assert float(per_sample[1]) < 0  # a bright frame is metered down
    np.testing.assert_allclose(metered(batch)[0].permute(1, 2, 0).numpy(), out, atol=1e-5)


def test_flat_rendering_lifts_blacks_lowers_whites_and_washes_out_colour():
    import torch

    from illexp_ros.core.degradation import flat_rendering
    from illexp_ros.core.exposure import LUMA_WEIGHTS

    rng = np.random.default_rng(0)
    img = rng.random((24, 32, 3), dtype=np.float32)
    img[0, 0], img[0, 1] = 0.0, 1.0
    flat = flat_rendering(img, 0.6, 0.0, 0.7)
    assert flat.dtype == np.float32 and flat.shape == img.shape
    assert flat[0, 0].min() > 5 / 255 and flat[0, 1].max() < 250 / 255  # black lifted, white pulled down
    assert flat.std() < 0.8 * img.std()  # less contrast

    def chroma(x):
        return np.abs(x - (x * np.asarray(LUMA_WEIGHTS, np.float32)).sum(-1, keepdims=True)).mean()

    assert chroma(flat) < 0.75 * chroma(img)
    grey = np.repeat(img[..., :1], 3, axis=-1)
    out = flat_rendering(grey, 0.6, 0.2, 0.7)
    assert np.abs(out.max(-1) - out.min(-1)).max() < 1e-6  # a grey frame stays grey
    # slope 1, shift 0, saturation 1 is the identity (up to the open interval a logit needs).
    np.testing.assert_allclose(flat_rendering(img, 1.0, 0.0, 1.0), img, atol=0.5 / 255 + 1e-6)
    # The batched torch version agrees with numpy, per sample.
    batch = torch.from_numpy(np.stack([img, grey])).permute(0, 3, 1, 2).contiguous()
    params = [torch.tensor([a, b]).view(2, 1, 1, 1) for a, b in ((0.6, 0.8), (0.0, 0.2), (0.7, 0.9))]
    got = flat_rendering(batch, *params).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got[0], flat_rendering(img, 0.6, 0.0, 0.7), atol=1e-5)
    np.testing.assert_allclose(got[1], flat_rendering(grey, 0.8, 0.2, 0.9), atol=1e-5)
