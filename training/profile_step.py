#!/usr/bin/env python3
"""Profile training steps: time per phase (data, forward, loss, backward, optimizer) and torch.profiler's top ops.

    python training/profile_step.py --config training/configs/mixed_fast.yaml [--threads 2] [--steps 30]
                                    [--warmup 5] [--crop C] [--batch-size B] [--ops 15] [--train-dir DIR]

Runs the same step as training/train.py (train.training_step) on real training draws, on the CPU, and prints
a table of milliseconds per phase (median over --steps) and steps per second, then the --ops most expensive
operators (self CPU time) from torch.profiler over a few further steps. Numbers in the README's "Training
speed" section come from this script.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.arguments import thread_count  # noqa: E402
from training.config import ConfigError, apply_overrides, load_config, named_overrides  # noqa: E402
from training.data import TensorPatchSource, config_photos  # noqa: E402
from training.train import StepTimer, training_model, training_step  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--threads", type=thread_count, default=2)
    p.add_argument("--steps", type=int, default=30, help="timed steps (default 30)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--crop", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--train-dir", default=None)
    p.add_argument("--ops", type=int, default=15, help="operators to list from torch.profiler (0 = none)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        apply_overrides(cfg, named_overrides({"data.crop": args.crop, "train.batch_size": args.batch_size,
                                              "data.train_dir": args.train_dir}))
        train_files, _ = config_photos(cfg.data)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    source = TensorPatchSource(train_files, cfg.data, seed=0, device="cpu")
    model = training_model(cfg, "cpu").train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    fast = cfg.train.fast_short_side

    def one(timer: StepTimer | None) -> None:
        training_step(model, opt, source, cfg, fast, timer=timer)

    for _ in range(args.warmup):
        one(None)
    timers = []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        timers.append(StepTimer())
        one(timers[-1])
    wall = time.perf_counter() - t0
    phases = StepTimer.PHASES
    print(f"{cfg.name}: batch {cfg.train.batch_size} x {cfg.data.crop} px, fast short side {fast or '-'}, "
          f"{args.threads} threads, {args.steps} steps")
    print(f"{'phase':<12} {'ms (median)':>12} {'share':>7}")
    medians = {ph: float(np.median([t.ms[ph] for t in timers])) for ph in phases}
    total = sum(medians.values())
    for ph in phases:
        print(f"{ph:<12} {medians[ph]:>12.1f} {100 * medians[ph] / total:>6.0f}%")
    print(f"{'step':<12} {1000 * wall / args.steps:>12.1f}   ({args.steps / wall:.2f} steps/s)")
    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                one(None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
