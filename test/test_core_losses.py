import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from illexp_ros.core.degradation import degrade
from illexp_ros.core.exposure import exposure_map
from illexp_ros.core.losses import attention_loss, dssim, enhancement_loss, view_consistency_loss
from illexp_ros.core.networks import IllExpNet

torch.set_num_threads(1)


def test_dssim_matches_skimage():
    rng = np.random.default_rng(0)
    a = rng.random((3, 40, 40), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ours = float(dssim(torch.from_numpy(a)[None], torch.from_numpy(b)[None]))
    ref = structural_similarity(a, b, channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ours == pytest.approx((1 - ref) / 2, abs=2e-3)


@pytest.mark.parametrize("shape", [(1, 3, 40, 40), (4, 3, 64, 48), (2, 3, 9, 12)])
def test_ssim_matches_pytorch_msssim_value_and_gradient(shape):
    # Our SSIM replaced pytorch-msssim's for speed (core/losses.py); it must give the same loss and gradient.
    from pytorch_msssim import ssim as reference_ssim

    from illexp_ros.core.losses import _window, ssim

    gen = torch.Generator().manual_seed(1)
    ref = torch.rand(shape, generator=gen)
    out = (ref * 0.7 + 0.2 * torch.rand(shape, generator=gen)).requires_grad_()
    out2 = out.detach().clone().requires_grad_()
    win = _window(shape[-2], shape[-1])
    ours = ssim(out, ref, win_size=win)
    theirs = reference_ssim(out2, ref, data_range=1.0, size_average=True, win_size=win)
    ours.backward()
    theirs.backward()
    assert float(ours) == pytest.approx(float(theirs), abs=1e-6)
    assert torch.allclose(out.grad, out2.grad, atol=1e-7, rtol=1e-4)
    assert out.grad.abs().max() > 0  # a gradient reached the output


def test_enhancement_loss_terms():
    ref = torch.full((1, 3, 16, 16), 0.9)
    out = torch.full((1, 3, 16, 16), 0.5)
    # identical -> 0 ; constant images: SSIM term from luminance only
    assert float(enhancement_loss(ref, ref)) == pytest.approx(0.0, abs=1e-6)
    weighted = (1 - 0.76) * 0.4 * 0.4
    assert float(enhancement_loss(out, ref)) > weighted
    # a mid-grey reference zeroes the weighted-L1 term (|I~ - 0.5| = 0)
    grey = torch.full((1, 3, 16, 16), 0.5)
    assert float(enhancement_loss(torch.full_like(grey, 0.7), grey, lam=0.0)) == pytest.approx(0.0, abs=1e-7)


def test_attention_loss_is_mse():
    a, b = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert float(attention_loss(a, b)) == pytest.approx(0.25)


def test_overfitting_one_pair_reduces_the_loss():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ref = rng.random((32, 32, 3), dtype=np.float32) * 0.6 + 0.2
    deg = degrade(ref, 0.9, 0.5, 1.5)
    em_t = exposure_map(deg, ref, "under")
    to_t = lambda a: torch.from_numpy(a.transpose(2, 0, 1)[None].copy())  # noqa: E731
    x, y, m = to_t(deg), to_t(ref), to_t(em_t)
    net = IllExpNet(attention_width=8, widths=(8, 16, 32, 64))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out, em = net(x)
        loss = attention_loss(em, m) + enhancement_loss(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_l1_weight_adds_a_plain_l1_term():
    # Beyond the paper: eq. 4 barely sees a 10 % brightness change at mid-grey; the optional L1 term does.
    ref = torch.full((1, 3, 16, 16), 0.5)
    out = torch.full((1, 3, 16, 16), 0.55)
    paper = float(enhancement_loss(out, ref))
    assert paper < 0.002
    assert float(enhancement_loss(out, ref, l1_weight=0.25)) == pytest.approx(paper + 0.25 * 0.05, abs=1e-6)


def test_mse_weight_adds_a_squared_error_term_that_weighs_large_errors_more():
    ref = torch.full((1, 3, 16, 16), 0.5)
    small, large = torch.full_like(ref, 0.55), torch.full_like(ref, 0.7)
    for out, e in ((small, 0.05), (large, 0.2)):
        paper = float(enhancement_loss(out, ref))
        assert float(enhancement_loss(out, ref, mse_weight=2.0)) == pytest.approx(paper + 2.0 * e * e, abs=1e-6)
    # Per unit of error, the squared term grows with the error; the L1 term does not.
    extra = [float(enhancement_loss(o, ref, mse_weight=1.0) - enhancement_loss(o, ref)) for o in (small, large)]
    assert extra[1] / 0.2 > 3.5 * extra[0] / 0.05



def test_view_consistency_compares_the_level_where_both_views_overlap():
    frame = torch.rand(2, 3, 40, 40) * 0.8 + 0.1
    dy, dx = 5, 3
    first, second = frame[..., :32, :32], frame[..., dy:dy + 32, dx:dx + 32]
    # Two views of one consistent output: nothing to penalise, though the views differ pixel by pixel.
    assert float(view_consistency_loss(first, second, (dy, dx))) == pytest.approx(0.0, abs=1e-6)
    assert float((first - second).abs().mean()) > 0.1
    # A correction 10 % brighter in the second view (a border that moved the level): log(1.1), at any brightness,
    # so a weaker correction is not cheaper.
    for scale in (1.0, 0.1):
        loss = float(view_consistency_loss(first * scale, second * scale * 1.1, (dy, dx)))
        assert loss == pytest.approx(np.log(1.1), rel=0.05)
    # Detail that averages out within the blocks (a fine checkerboard) is not the level: hardly penalised.
    checker = (torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 0.04 - 0.02
    assert float(view_consistency_loss(first, second + checker, (dy, dx))) < 0.01
    # The wrong offset sees a difference: the loss aligns the views.
    assert float(view_consistency_loss(first, second, (dx, dy))) > 0.005
    with pytest.raises(ValueError, match="do not overlap"):
        view_consistency_loss(first, second, (32, 0))
