"""training/pan_flicker.py: how much a model's correction flickers while the camera pans."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_training import tiny_config  # noqa: E402

from training.pan_flicker import flicker, measure, pan_crops  # noqa: E402
from training.pan_flicker import main as flicker_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, torch.zeros_like(x)


class ToMiddleGrey(torch.nn.Module):
    """Scales every frame to a mean of 0.45: a correction set by the whole view, as a level-blind net's is."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * (0.45 / x.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-4)), torch.zeros_like(x)


class JitteryGain(torch.nn.Module):
    """Brightens each frame by its own random 0-0.3 stops, as a net whose level choice jitters with the view."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = torch.Generator().manual_seed(0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gain = 2.0 ** (0.3 * torch.rand(x.shape[0], 1, 1, 1, generator=self.rng))
        return (x * gain).clamp(0, 1), torch.zeros_like(x)


def test_pan_crops_slide_along_the_photo():
    image = np.arange(20 * 30 * 3, dtype=np.float32).reshape(20, 30, 3)
    crops = pan_crops(image, frames=5, step=4, crop=16)
    assert crops.shape == (5, 16, 16, 3)
    assert np.array_equal(crops[1], image[:16, 4:20]) and np.array_equal(crops[4], image[:16, 14:30])  # clamped
    with pytest.raises(ValueError, match="smaller than"):
        pan_crops(image, frames=2, step=1, crop=24)


def test_flicker_is_the_change_of_the_level_error_not_of_the_level():
    ref = np.array([0.30, 0.40, 0.35, 0.50])
    assert flicker(ref * 0.5, ref) == (pytest.approx(0.0), pytest.approx(0.5))  # a steady error: no flicker
    steady_output = np.full(4, 0.4)  # a correction that cancels the scene's own drift
    assert flicker(steady_output, ref)[0] == pytest.approx(np.abs(np.diff(np.log2(0.4 / ref))).mean())


def test_a_correction_set_by_the_whole_view_flickers_and_the_identity_does_not(tmp_path):
    cfg_path = tiny_config(tmp_path, max_steps=1)
    photos = sorted((tmp_path / "photos").glob("*.png"))[:3]
    still = measure(Identity(), photos, [0.0, -1.0], frames=8, step=3, crop=32, fast_short_side=None)
    assert np.all(still[0.0][:, 0] < 3e-4)  # output = reference to 8-bit rounding: a steady error of ~0
    assert np.all(still[0.0][:, 2] > 45)  # PSNR of the rounding alone
    moving = measure(ToMiddleGrey(), photos, [0.0], frames=8, step=3, crop=32, fast_short_side=None)
    assert np.all(moving[0.0][:, 0] > 1e-3)
    # the node's level smoothing (weight 0.9: the node's default) steadies a gain that jitters from frame to
    # frame, on a slow pan (1 px of 32 per frame; in a fast one the input's level moves by more than its cut)
    slow = {w: measure(JitteryGain(), photos, [0.0], frames=12, step=1, crop=32, fast_short_side=None,
                       smoothing=w)[0.0][:, 0].mean() for w in (0.0, 0.9)}
    assert slow[0.0] > 0.05 and slow[0.9] < slow[0.0] * 0.6, slow
    assert cfg_path.is_file()


def test_cli_prints_a_row_per_exposure_and_a_clear_error(tmp_path, capsys):
    cfg_path = tiny_config(tmp_path, max_steps=1)
    model = Path(__file__).resolve().parents[1] / "models" / "mixed_fast.pt"
    rc = flicker_main(["--config", str(cfg_path), str(model), "--photos", "validation", "--stops=-1,0",
                       "--frames", "4", "--step", "2", "--crop", "32", "--threads", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["-1.0"], ["+0.0"])]
    assert len(rows) == 2 and all(float(r[1]) >= 0 for r in rows), out
    assert "fast mode at 64" in out and "millistops per frame" in out and "lag" not in out
    rc = flicker_main(["--config", str(cfg_path), str(model), "--photos", "validation", "--stops=0",
                       "--frames", "3", "--crop", "32", "--threads", "1", "--level-smoothing", "0.9"])
    out = capsys.readouterr().out
    lags = [line for line in out.splitlines() if line.startswith("lag on an exposure")]
    assert rc == 0 and "level smoothing 0.9" in out and len(lags) == 3, out
    assert flicker_main(["--config", str(cfg_path), str(model), "--level-smoothing", "1"]) == 2
    assert "weight" in capsys.readouterr().err
    rc = flicker_main(["--config", str(cfg_path), str(model), "--crop", "512", "--photos", "validation"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "smaller than" in err and len(err.splitlines()) == 1


def test_stereo_pairs_at_one_shared_level_differ_less_than_views_corrected_alone(tmp_path, capsys):
    """--stereo: two views `step` px apart, each brightened by a gain of its own (JitteryGain), then put at one
    shared level as illexp_stereo_node does: the difference of their level errors all but goes."""
    cfg_path = tiny_config(tmp_path, max_steps=1)
    photos = sorted((tmp_path / "photos").glob("*.png"))[:3]
    apart = measure(JitteryGain(), photos, [0.0], frames=2, step=8, crop=32, fast_short_side=None)[0.0][:, 0]
    shared = measure(JitteryGain(), photos, [0.0], frames=2, step=8, crop=32, fast_short_side=None,
                     stereo=True)[0.0][:, 0]
    assert apart.mean() > 0.02 and shared.mean() < apart.mean() * 0.3, (apart, shared)
    model = Path(__file__).resolve().parents[1] / "models" / "mixed_fast.pt"
    assert flicker_main(["--config", str(cfg_path), str(model), "--stereo", "--frames", "3"]) == 2
    assert "--stereo needs --frames 2" in capsys.readouterr().err
