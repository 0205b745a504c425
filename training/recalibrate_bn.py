#!/usr/bin/env python3
"""Re-estimate a model file's BatchNorm running statistics from training draws, and validate before / after.

    python training/recalibrate_bn.py --config training/configs/over.yaml models/over.pt [--out FILE]
                                      [--all] [--batches 64] [--batch-size 8] [--crop 256] [--threads N]
                                      [--set SECTION.KEY=VALUE]

Why: model files written before 2026-11-26 stored every tensor in float16, and a BatchNorm running variance
above 65504 became infinity there (the shipped paper-sized nets had one such layer, enhancement.up.1.1: that
BatchNorm then output its bias alone). The learned weights are intact, so the statistics can be measured
again: the layers concerned (every BatchNorm with --all) run in training mode with a cumulative average
(momentum None) over `--batches` batches drawn from the config's training photos exactly as training draws
them (never the held-out validation photos, never eval/), the rest of the network in eval mode, no gradient.

Prints the validation score of the file before and after (the same per-kind validation as train.py) and
writes the repaired file (default: in place). Exit 0 on success or when there is nothing to repair, 2 with
one line on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.runtime.errors import EnhancerError  # noqa: E402
from illexp_ros.runtime.model_io import load_model, save_model  # noqa: E402
from training.arguments import cannot_write, int_at_least, output_file, thread_count  # noqa: E402
from training.config import ConfigError, apply_overrides, load_config  # noqa: E402
from training.data import TensorPatchSource, config_photos, config_validation_sets  # noqa: E402
from training.precise_bn import batchnorm_names, recalibrate  # noqa: E402
from training.train import validate  # noqa: E402


def broken_batchnorms(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers whose running statistics are not all finite."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
            and not (torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all())]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="the model file to repair")
    p.add_argument("--config", required=True, help="the training config the model was trained with")
    p.add_argument("--out", type=output_file, help="where to write the repaired file (default: over the input)")
    p.add_argument("--all", action="store_true", help="re-estimate every BatchNorm, not only non-finite ones")
    p.add_argument("--batches", type=int_at_least(1), default=64)
    p.add_argument("--batch-size", type=int_at_least(1), default=8)
    p.add_argument("--crop", type=int, default=None, help="default: the config's data.crop")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--threads", type=thread_count, default=0)
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value as the run did, e.g. --set data.scene_prob=0.5 (the draws "
                        "measured and the validation pairs follow it)")
    args = p.parse_args(argv)
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = apply_overrides(load_config(args.config), args.set)
        model, info = load_model(args.model, allow_nonfinite=True)
        names = batchnorm_names(model) if args.all else broken_batchnorms(model)
        if not names:
            print(f"{args.model}: every BatchNorm statistic is finite; nothing to do (--all re-estimates them)")
            return 0
        train_files, held = config_photos(cfg.data)
        val_sets = config_validation_sets(cfg.data, held)
        fast = cfg.train.fast_short_side
        before = validate(model, val_sets, "cpu", fast, fit=info["guided_fit"])
        source = TensorPatchSource(train_files, cfg.data, args.seed, "cpu")
        recalibrate(model, names, source, args.batches, args.batch_size, args.crop or cfg.data.crop, fast)
        after = validate(model, val_sets, "cpu", fast, fit=info["guided_fit"])
    except (ConfigError, EnhancerError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"re-estimated {len(names)} BatchNorm layer(s) over {args.batches} x {args.batch_size} training draws: "
          f"{', '.join(names)}")
    print(f"{'':8} {'score':>6} " + " ".join(f"{k:>7}" for k in before if k != "score"))
    for label, r in (("before", before), ("after", after)):
        print(f"{label:8} {r['score']:6.2f} " + " ".join(f"{r[k]:7.2f}" for k in r if k != "score"))
    if after["score"] < before["score"]:  # written anyway: these are the statistics the weights produce
        print("note: the validation score fell; the file is written all the same (a non-finite statistic "
              "breaks the fp16 backends)", file=sys.stderr)
    meta = dict(info.get("meta", {}))
    meta["bn_recalibrated"] = {"layers": names, "batches": args.batches, "batch_size": args.batch_size,
                               "val_before": round(before["score"], 3), "val_after": round(after["score"], 3)}
    meta["val_psnr"] = round(after["score"], 3)
    meta["val_by_kind"] = {k: round(v, 2) for k, v in after.items() if k != "score"}
    out = Path(args.out or args.model)
    try:
        save_model(out, model, info["model_config"], info["name"], meta)
    except OSError as exc:
        return cannot_write(out, exc)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
