#!/usr/bin/env python3
"""How much of a model's validation error is the overall brightness level, and how much is the rest.

    python training/level_diagnosis.py --config training/configs/mixed_fast.yaml models/mixed_fast.pt
                                       [--fast N | --full] [--pairs validation|confirmation]
                                       [--set SECTION.KEY=VALUE] [--png FILE] [--threads N]

For each validation kind of the config (the pairs train.py validates on, held-out training photos, never
eval/; with --pairs confirmation the held-out photos validation leaves out, training.data says why) it prints:
  psnr        the model as it is (fast mode at the model's own internal side unless told otherwise);
  +gain       the same output times the one per-image gain that fits the reference best (least squares): what
              the model would score if only its overall level were right;
  bias, std   the level error log2(mean output / mean reference) in stops, mean and spread over the pairs;
  corr        the correlation of that error with the reference's own level log2(mean reference). Near -1 means
              the model pulls every frame towards one typical level: bright scenes come out too dark, dark
              scenes too bright (what a model does when the degraded frame does not tell it the level).
  off         how many pairs come out more than LEVEL_OFF_STOPS off the reference's level: a mean over the
              pairs hides a few frames moved a long way (on 2026-11-27 the shipped mixed_fast's well-exposed
              kind scored 35.7 dB on average while 3 of its 16 frames came out more than 0.25 stops off).
and, once, the score train.py compares (the mean over kinds of each kind's psnr capped at PSNR_CAP, 35 dB; with the
model's stored BatchNorm statistics, so it is what a shipped file scores) and the level-blind floor: the PSNR
of a perfect reconstruction scaled to the mean level of the references (a model that gets every detail right
but knows nothing of the scene's own level).

Why: on 2026-11-26 the fast net's score stopped at ~20 dB on validation whatever the draws and the run length.
This tells whether more capacity (detail) or more information about the level would move it. With --png, a
scatter of level error against reference level per kind. Exit 0, or 2 with one line on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit, run_network  # noqa: E402
from illexp_ros.core.metrics import psnr  # noqa: E402
from illexp_ros.runtime.errors import EnhancerError  # noqa: E402
from illexp_ros.runtime.model_io import load_model  # noqa: E402
from training.arguments import cannot_write, int_at_least, output_file, thread_count  # noqa: E402
from training.config import ConfigError, apply_overrides, load_config  # noqa: E402
from training.data import config_confirmation_sets, config_photos, config_validation_sets  # noqa: E402
from training.train import PSNR_CAP, validation_score  # noqa: E402

LEVEL_OFF_STOPS = 0.25  # a mean brightness 16 % lower or 19 % higher than the reference's: plainly visible


def best_gain(output: np.ndarray, reference: np.ndarray) -> float:
    """The scalar g minimising ||g * output - reference||^2 (1.0 for an all-black output)."""
    o, r = output.astype(np.float64), reference.astype(np.float64)
    denom = float((o * o).sum())
    return float((o * r).sum() / denom) if denom > 0 else 1.0


def stops_between(output_level, reference_level):
    """log2(output level / reference level) of mean brightnesses (floats or arrays; a black mean counts as 1e-6)."""
    return np.log2(np.maximum(output_level, 1e-6) / np.maximum(reference_level, 1e-6))


def level_error_stops(output: np.ndarray, reference: np.ndarray) -> float:
    """log2 of the ratio of mean brightness, output over reference (0 = the right level)."""
    return float(stops_between(float(output.mean()), float(reference.mean())))


def level_blind_floor(references: list[np.ndarray]) -> float:
    """Mean PSNR of each reference scaled to the references' mean level (clipped): a perfect reconstruction of
    detail and colour that knows only the typical level."""
    target = float(np.mean([r.mean() for r in references]))
    return float(np.mean([psnr(np.clip(r * (target / max(float(r.mean()), 1e-6)), 0, 1).astype(np.float32), r)
                          for r in references]))


@torch.no_grad()
def diagnose(model: torch.nn.Module, val_sets: dict, fast_short_side: int | None,
             fit: GuidedFit = DEFAULT_FIT) -> dict[str, dict]:
    """Per kind (fast mode through `fit` when fast_short_side): psnr, psnr with the best per-image gain, level
    errors and reference levels (arrays)."""
    model.eval()
    result = {}
    for kind, pairs in val_sets.items():
        plain, gained, errors, levels = [], [], [], []
        for _, degraded, reference in pairs:
            x = torch.from_numpy(np.ascontiguousarray(degraded.transpose(2, 0, 1)))[None]
            out, _ = run_network(model, x, fast_short_side, fit)
            out = out[0].float().permute(1, 2, 0).numpy()
            plain.append(psnr(out, reference))
            gained.append(psnr(np.clip(out * best_gain(out, reference), 0, 1).astype(np.float32), reference))
            errors.append(level_error_stops(out, reference))
            levels.append(float(np.log2(max(float(reference.mean()), 1e-6))))
        e, lv = np.array(errors), np.array(levels)
        corr = float(np.corrcoef(e, lv)[0, 1]) if len(e) > 2 and e.std() > 0 and lv.std() > 0 else float("nan")
        result[kind] = {"psnr": float(np.mean(plain)), "gain_psnr": float(np.mean(gained)), "bias": float(e.mean()),
                        "std": float(e.std()), "corr": corr, "off": int((np.abs(e) > LEVEL_OFF_STOPS).sum()),
                        "errors": e, "levels": lv}
    return result


def plot(result: dict[str, dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(result)
    cols = min(4, len(kinds))
    rows = (len(kinds) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False, sharex=True, sharey=True)
    for ax, kind in zip(axes.flat, kinds):
        r = result[kind]
        ax.axhline(0, color="0.6", lw=0.8)
        ax.scatter(r["levels"], r["errors"], s=10)
        ax.set_title(f"{kind}: {r['psnr']:.1f} dB, +gain {r['gain_psnr']:.1f}", fontsize=9)
    for ax in axes.flat[len(kinds):]:
        ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("reference level log2(mean)", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("level error (stops)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("model")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", type=int_at_least(8), default=None, help="fast mode at this internal short side")
    mode.add_argument("--full", action="store_true", help="full mode (no fast path)")
    p.add_argument("--pairs", choices=("validation", "confirmation"), default="validation",
                   help="validation: the pairs train.py validates on; confirmation: the held-out photos it leaves out")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value, e.g. --set data.flat_prob=0.1 (adds the flat kind)")
    p.add_argument("--png", default=None, type=output_file, help="write the level-error scatter here (a .png)")
    p.add_argument("--threads", type=thread_count, default=0)
    args = p.parse_args(argv)
    if args.png and args.png.suffix.lower() != ".png":  # matplotlib would write FILE.png and we say FILE
        p.error(f"--png {args.png} must be a .png file name")
    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = apply_overrides(load_config(args.config), args.set)
        model, info = load_model(args.model)
        fast = None if args.full else (args.fast or info["fast_short_side"] or None)
        _, held = config_photos(cfg.data)
        pairs_of = config_validation_sets if args.pairs == "validation" else config_confirmation_sets
        val_sets = pairs_of(cfg.data, held)
        result = diagnose(model, val_sets, fast, info["guided_fit"])
    except (ConfigError, EnhancerError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    references = [ref for _, _, ref in val_sets.get("well", next(iter(val_sets.values())))]
    print(f"{Path(args.model).name} on {cfg.name}'s {args.pairs} pairs, "
          f"{'fast mode at ' + str(fast) if fast else 'full mode'}")
    print(f"{'kind':8s} {'psnr':>6s} {'+gain':>6s} {'bias':>6s} {'std':>5s} {'corr':>6s} {'off':>6s}")
    for kind, r in result.items():
        print(f"{kind:8s} {r['psnr']:6.2f} {r['gain_psnr']:6.2f} {r['bias']:+6.2f} {r['std']:5.2f} {r['corr']:+6.2f} "
              f"{r['off']:>3d}/{len(r['errors']):<2d}")
    print(f"off: pairs whose mean brightness is more than {LEVEL_OFF_STOPS} stops from the reference's")
    score = validation_score({kind: r["psnr"] for kind, r in result.items()})
    print(f"score (mean over kinds, each capped at {PSNR_CAP:g} dB): {score:.2f}")
    print(f"level-blind floor (perfect detail at the references' mean level): {level_blind_floor(references):.2f} dB")
    if args.png:
        try:
            plot(result, args.png, f"{Path(args.model).name}: level error vs reference level")
        except OSError as exc:
            return cannot_write(args.png, exc)
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
