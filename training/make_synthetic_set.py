#!/usr/bin/env python3
"""Build the synthetic paired test set from the held-out training photos (as the paper's simulated sets).

    python training/make_synthetic_set.py [--out runs/synthetic_test] [--count 24] [--seed 20240611]

Photos: those that every config in training/configs/ holds out for validation (training.data.split_holdout
with the config's train_dir, val_fraction and val_seed), so no model ever trained on them.
Degradation: the paper's eq. 5 ranges (alpha in [0.9, 1/0.9], beta in [0.5, 2], gamma in [1/1.5, 1.5]) split
into under draws (beta <= 1, gamma >= 1) and over draws, plus mixed-region draws (under on one side of a soft
edge, over on the other), cycling under / over / mixed, at the photos' native size. The seed is fixed and
differs from every validation seed, so the test draws never repeat the validation draws. Same arguments ->
byte-identical files.

Writes OUT/input/KIND_PHOTO.png, OUT/target/KIND_PHOTO.png (KIND = under, over, mixed) and OUT/manifest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.core.metrics import to_uint8  # noqa: E402
from training.config import REPO, ConfigError, DataConfig, load_config  # noqa: E402
from training.data import config_photos, fixed_pairs  # noqa: E402

SYNTHETIC_SEED = 20240611
DEFAULT_OUT = REPO / "runs" / "synthetic_test"
DEFAULT_COUNT = 24


def held_out_photos(config_paths: list[Path]) -> tuple[list[Path], list[int]]:
    """Photos held out by every config (sorted), and the configs' validation seeds."""
    held: set[Path] | None = None
    seeds = []
    for path in config_paths:
        cfg = load_config(path)
        _, h = config_photos(cfg.data)
        held = set(h) if held is None else held & set(h)
        seeds.append(cfg.data.val_seed)
    if not held:
        raise ValueError("the configs share no held-out photo; align their val_fraction / val_seed")
    return sorted(held), seeds


def make_synthetic_set(out: Path, count: int = DEFAULT_COUNT, seed: int = SYNTHETIC_SEED,
                       config_paths: list[Path] | None = None) -> list[str]:
    """Write the set to out/; returns the file names."""
    config_paths = config_paths or sorted((REPO / "training" / "configs").glob("*.yaml"))
    photos, val_seeds = held_out_photos(config_paths)
    if seed in val_seeds:
        raise ValueError(f"seed {seed} is a validation seed; the test set must use its own draws")
    # DataConfig() defaults are the paper's eq. 5 ranges (the configs may widen theirs for training).
    pairs = fixed_pairs(photos, DataConfig(), seed=seed, crop=None, kind="mixed", max_images=count)
    for sub in ("input", "target"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob("*.png"):  # a rerun with a smaller --count leaves no extra pairs
            stale.unlink()
    names = []
    for name, degraded, reference in pairs:
        for sub, img in (("input", degraded), ("target", reference)):
            cv2.imwrite(str(out / sub / f"{name}.png"), cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2BGR))
        names.append(f"{name}.png")
    manifest = {"seed": seed, "count": len(names),
                "ranges": "paper eq. 5 (under / over / mixed-region draws)",
                "sources": [os.path.relpath(p, REPO) for p in photos[:count]], "files": names}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--count", type=int, default=DEFAULT_COUNT,
                   help="number of pairs (at most the size of the held-out set)")
    p.add_argument("--seed", type=int, default=SYNTHETIC_SEED)
    p.add_argument("--config", action="append", help="configs whose held-out photos to use (default: all)")
    args = p.parse_args(argv)
    if args.count < 1:
        print("error: --count must be >= 1", file=sys.stderr)
        return 2
    try:
        names = make_synthetic_set(Path(args.out), args.count, args.seed,
                                   [Path(c) for c in args.config] if args.config else None)
    except (ConfigError, ValueError, OSError) as exc:  # OSError: an --out that cannot be made or written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kinds = {k: sum(n.startswith(k + "_") for n in names) for k in ("under", "over", "mixed")}
    print(f"wrote {len(names)} pairs to {args.out} ({', '.join(f'{v} {k}' for k, v in kinds.items())})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
