#!/usr/bin/env python3
"""Find ACAB spatial-attention gates that are shut on every training draw and reopen them, output unchanged.

    python training/revive_gates.py --config training/configs/mixed_fast.yaml models/mixed_fast.pt --out FILE
                                    [--batches 16] [--batch-size 8] [--threshold 1e-3] [--threads N]

Why (found 2026-11-26): in every mixed_fast file since the first CPU-trained one, the spatial attention of the
deepest decoder block (enhancement.decode.2) outputs sigmoid(z) with z far below zero everywhere: the gate is
0 on every pixel, so that ACAB outputs a constant and the U-Net's deepest level (the one that sees the whole
frame) contributes nothing. A saturated sigmoid passes no gradient, so training can never reopen it.

The repair, per shut gate: its 7x7 conv is zeroed (the gate becomes 0.5 everywhere, open and trainable, like no
spatial attention at first), and the block's 1x1 projection weights are zeroed, bias kept. Before, the
projection saw zeros and output ELU(bias); after, it still outputs ELU(bias) whatever it sees, so the network
computes what it did (checked by the script, max difference printed). The projection's weights get gradients
at once, so further training can use the reopened level. Not a training step: weights change only in the
zeroed layers. Exit 0 (also when nothing is shut: no file written), 2 with one line on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.core.fast import run_network  # noqa: E402
from illexp_ros.core.networks import ACAB  # noqa: E402
from illexp_ros.runtime.errors import EnhancerError  # noqa: E402
from illexp_ros.runtime.model_io import load_model, save_model  # noqa: E402
from training.arguments import cannot_write, fraction, int_at_least, output_file, thread_count  # noqa: E402
from training.config import ConfigError, load_config  # noqa: E402
from training.data import TensorPatchSource, config_photos  # noqa: E402


@torch.no_grad()
def largest_gate(model: torch.nn.Module, frames: list[torch.Tensor], fast_short_side: int | None) -> dict[str, float]:
    """The largest spatial-attention gate value each ACAB reaches over all pixels of all `frames` batches."""
    largest: dict[str, float] = {}
    hooks = []
    for name, block in model.named_modules():
        if isinstance(block, ACAB):
            def record(mod, inputs, _out, name=name):
                largest[name] = max(largest.get(name, 0.0), float(mod.gate(inputs[0]).max()))
            hooks.append(block.spatial_attention.register_forward_hook(record))
    model.eval()
    try:
        for x in frames:
            run_network(model, x, fast_short_side)
    finally:
        for h in hooks:
            h.remove()
    return largest


@torch.no_grad()
def reopen(model: torch.nn.Module, block_names: list[str]) -> None:
    """Reopen the spatial gate of each named ACAB, keeping its output (module docstring), in place."""
    for name in block_names:
        block = model.get_submodule(name)
        torch.nn.init.zeros_(block.spatial_attention.conv.weight)
        torch.nn.init.zeros_(block.spatial_attention.conv.bias)
        torch.nn.init.zeros_(block.project[0].weight)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--config", required=True, help="the training config (its training photos are the draws)")
    p.add_argument("--out", required=True, type=output_file, help="where to write the repaired file")
    p.add_argument("--batches", type=int_at_least(1), default=16)
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument("--threshold", type=fraction, default=1e-3,
                   help="a gate whose largest value stays below is shut (in (0, 1); a gate's values are in 0..1)")
    p.add_argument("--seed", type=int, default=4321)
    p.add_argument("--threads", type=thread_count, default=0)
    args = p.parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = load_config(args.config)
        model, info = load_model(args.model)
        fast = info["fast_short_side"] or cfg.train.fast_short_side
        train_files, _ = config_photos(cfg.data)
        source = TensorPatchSource(train_files, cfg.data, args.seed, "cpu")
        frames = [source.batch(args.batch_size, cfg.data.crop)[0] for _ in range(args.batches)]
        gates = largest_gate(model, frames, fast)
    except (ConfigError, EnhancerError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, g in gates.items():
        print(f"{name:24s} largest spatial gate {g:.2e}{'  SHUT' if g < args.threshold else ''}")
    shut = [name for name, g in gates.items() if g < args.threshold]
    if not shut:
        print("no shut gate; nothing written")
        return 0
    with torch.no_grad():
        before = [run_network(model, x, fast)[0] for x in frames[:4]]
        reopen(model, shut)
        diff = max(float((run_network(model, x, fast)[0] - b).abs().max()) for x, b in zip(frames[:4], before))
    after = largest_gate(model, frames, fast)
    print(f"reopened {', '.join(shut)}: largest gate now {min(after[n] for n in shut):.2f}; "
          f"output max difference {diff:.2e}")
    meta = dict(info.get("meta", {}))
    meta["gates_reopened"] = shut
    try:
        save_model(args.out, model, info["model_config"], info["name"], meta)
    except OSError as exc:
        return cannot_write(args.out, exc)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
