"""Small random models and frames for the runtime tests (the trained weights are not needed to test plumbing)."""

from __future__ import annotations

import numpy as np
import torch

from illexp_ros.core.networks import IllExpNet
from illexp_ros.runtime.model_io import save_model

TINY = {"attention_width": 8, "widths": [8, 16, 32, 64]}


def make_tiny_model(path, seed: int = 0, meta: dict | None = None):
    """A small random IllExpNet whose output varies strongly with the input: convs re-initialised with
    Kaiming normal x 1.5 (torch's default init shrinks the signal layer by layer to a near-constant grey, which
    would make the parity checks compare flat images)."""
    torch.manual_seed(seed)
    model = IllExpNet(attention_width=8, widths=(8, 16, 32, 64))
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
            mod.weight.data *= 1.5
            if mod.bias is not None:
                mod.bias.data.zero_()
    return save_model(path, model, TINY, "tiny", meta)


def random_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
