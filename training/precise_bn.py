"""BatchNorm running statistics measured afresh from training draws ("precise BN"), for validation and export.

Why (measured 2026-11-26, mixed_fast with the lamp draws): the running statistics that training leaves behind
follow the last few batches (momentum 0.1), and the weight average (train.weight_average) averages them too.
A rare batch makes one layer's variance explode (enhancement.up.1.1, the same layer that overflowed fp16 in the
paper-sized files): 500 steps into a run the averaged net's running variance there was 464x the current
net's, and the averaged net validated at 17.75 dB where the same weights with statistics measured again over
32 training batches scored 19.90. (That layer's input was nearly constant because of a shut attention gate,
training/revive_gates.py, so its variance was tiny and one batch could swamp it.) Training itself was fine (its
loss uses batch statistics); validation, the choice of best.pt and the exported file were not. Measuring the
statistics before each validation is the standard remedy (PreciseBN in fvcore / Detectron2;
torch.optim.swa_utils.update_bn for averaged weights).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from illexp_ros.core.fast import run_network


def batchnorm_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]


@torch.no_grad()
def recalibrate(model: nn.Module, names: list[str], source, batches: int, batch_size: int, crop: int,
                fast_short_side: int | None) -> None:
    """Measure the running statistics of the named BatchNorm layers anew (cumulative average over `batches`
    batches of `source`, a training.data.TensorPatchSource), in place; everything else stays in eval mode."""
    model.eval()
    for name in names:
        bn = model.get_submodule(name)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
        bn.train()
    for _ in range(batches):
        deg, _, _ = source.batch(batch_size, crop)
        run_network(model, deg, fast_short_side)
    for name in names:
        bn = model.get_submodule(name)
        bn.momentum = 0.1  # torch's default, what training uses
        bn.eval()


def fixed_draw_state(seed: int, device: torch.device | str = "cpu") -> dict:
    """A TensorPatchSource state (numpy bit generator + torch generator) fixed by `seed`: restoring it before
    every measurement makes each one see the same batches."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return {"rng": np.random.default_rng(seed).bit_generator.state, "gen": gen.get_state()}


def with_precise_bn(model: nn.Module, source, draw_state: dict, batches: int, batch_size: int, crop: int,
                    fast_short_side: int | None) -> nn.Module:
    """A copy of `model` whose BatchNorm statistics are measured over `batches` fixed training batches.

    The batches come from `source` restored to `draw_state`; the source's own state is put back afterwards, so
    the training stream (and a resumed run) is exactly what it would have been without this."""
    measured = copy.deepcopy(model)
    was = source.state()
    source.set_state(copy.deepcopy(draw_state))
    try:
        recalibrate(measured, batchnorm_names(measured), source, batches, batch_size, crop, fast_short_side)
    finally:
        source.set_state(was)
    return measured
