#!/usr/bin/env python3
"""How much a model's correction flickers while the camera pans.

    python training/pan_flicker.py --config training/configs/mixed_fast.yaml models/mixed_fast.pt
                                   [--photos validation|confirmation] [--stops=-2,0,1] [--frames 40] [--step 4]
                                   [--crop 256] [--fast N | --full] [--threads N]

A pan simulated on the held-out training photos (never eval/): `frames` square crops of side `crop` sliding
`step` pixels per frame across each photo, the photo exposed by each of `stops` (core.degradation.expose, a
camera's exposure change in linear light; 0 = the photo as it is). For each frame the level error is
log2(mean output / mean reference crop) in stops; the flicker is the mean |change of that error| from one frame
to the next, in millistops per frame. The reference crops drift too (the view changes), so a correction that
keeps its error steady has zero flicker however much the scene's brightness moves. Per exposure it prints the
mean, median and largest flicker over the photos, and the median ratio of the output's mean drift to the
reference's (1 = moves as the scene does); then the mean over everything.

Why: a robot's camera pans all the time, and SLAM's photometric terms and detectors take a correction that
breathes with the framing for a change in the scene (README, known limits). On 2026-11-27 the shipped
mixed_fast's error changed by ~10 millistops per frame on average, up to 59, along a 4-pixel-per-frame pan.
Exit 0, or 2 with one line on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.core.degradation import expose  # noqa: E402
from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit, run_network  # noqa: E402
from illexp_ros.runtime.errors import EnhancerError  # noqa: E402
from illexp_ros.runtime.model_io import load_model  # noqa: E402
from training.config import ConfigError, load_config  # noqa: E402
from training.data import config_photos, confirmation_photos, read_reference, validation_photos  # noqa: E402
from training.level_diagnosis import stops_between  # noqa: E402


def pan_crops(image: np.ndarray, frames: int, step: int, crop: int) -> np.ndarray:
    """frames x crop x crop x 3 crops of `image` (H x W x 3), sliding `step` pixels to the right per frame along
    the top rows (the last ones repeat the right edge when the photo is too narrow). ValueError when the photo
    is smaller than one crop."""
    h, w = image.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"a {w}x{h} photo is smaller than the {crop}-pixel crop of the pan")
    return np.stack([image[:crop, x0:x0 + crop] for x0 in (min(i * step, w - crop) for i in range(frames))])


@torch.no_grad()
def pan_levels(model: torch.nn.Module, frames: np.ndarray, fast_short_side: int | None,
               fit: GuidedFit = DEFAULT_FIT) -> np.ndarray:
    """Mean brightness of the model's output for each frame (N x H x W x 3 in [0, 1])."""
    x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    out, _ = run_network(model, x, fast_short_side, fit)
    return out.float().mean(dim=(1, 2, 3)).numpy()


def flicker(output_levels: np.ndarray, reference_levels: np.ndarray) -> tuple[float, float]:
    """(mean |frame-to-frame change| of the level error in stops, the output's mean drift / the reference's)."""
    error = stops_between(output_levels, reference_levels)
    ref_drift = float(np.abs(np.diff(reference_levels)).mean())
    ratio = float(np.abs(np.diff(output_levels)).mean()) / ref_drift if ref_drift > 0 else float("nan")
    return float(np.abs(np.diff(error)).mean()), ratio


def measure(model: torch.nn.Module, photos: list[Path], stops: list[float], frames: int, step: int, crop: int,
            fast_short_side: int | None, fit: GuidedFit = DEFAULT_FIT) -> dict[float, np.ndarray]:
    """Per exposure, a photos x 2 array of (flicker in stops per frame, drift ratio)."""
    rows: dict[float, list[tuple[float, float]]] = {s: [] for s in stops}
    for path in photos:
        reference = pan_crops(read_reference(path, None), frames, step, crop)
        ref_levels = reference.mean(axis=(1, 2, 3))
        for s in stops:
            degraded = np.clip(expose(reference, s), 0, 1).astype(np.float32)
            rows[s].append(flicker(pan_levels(model, degraded, fast_short_side, fit), ref_levels))
    return {s: np.array(v) for s, v in rows.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the training config whose held-out photos to pan over")
    p.add_argument("model")
    p.add_argument("--photos", choices=("validation", "confirmation"), default="confirmation",
                   help="the held-out photos validation uses, or those it leaves out (training.data)")
    p.add_argument("--stops", default="-2,0,1",
                   help="exposures of the pan in stops, comma-separated (write --stops=-1,0: a leading minus)")
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--step", type=int, default=4, help="pixels the view moves per frame")
    p.add_argument("--crop", type=int, default=256, help="side of the square view")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", type=int, default=None, help="fast mode at this internal short side")
    mode.add_argument("--full", action="store_true", help="full mode (no fast path)")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    try:
        stops = [float(s) for s in args.stops.split(",")]
        if args.frames < 2 or args.step < 1 or args.crop < 16:
            raise ValueError("--frames must be >= 2, --step >= 1 and --crop >= 16")
        if args.threads:
            torch.set_num_threads(args.threads)
        cfg = load_config(args.config)
        model, info = load_model(args.model)
        model.eval()
        fast = None if args.full else (args.fast or info["fast_short_side"] or None)
        _, held = config_photos(cfg.data)
        photos = (validation_photos if args.photos == "validation" else confirmation_photos)(cfg.data, held)
        if not photos:
            raise ValueError(f"no {args.photos} photos among the {len(held)} held-out ones")
        result = measure(model, photos, stops, args.frames, args.step, args.crop, fast, info["guided_fit"])
    except (ConfigError, EnhancerError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{Path(args.model).name}: pan of {args.frames} x {args.crop}-px views, {args.step} px per frame, over "
          f"{len(photos)} {args.photos} photos of {cfg.name}, {'fast mode at ' + str(fast) if fast else 'full mode'}")
    print(f"{'stops':>6s} {'mean':>7s} {'median':>7s} {'max':>7s} {'drift':>6s}   (flicker: millistops per frame; "
          "drift: output's / reference's)")
    for s, v in result.items():
        print(f"{s:+6.1f} {v[:, 0].mean() * 1e3:7.1f} {np.median(v[:, 0]) * 1e3:7.1f} {v[:, 0].max() * 1e3:7.1f} "
              f"{np.nanmedian(v[:, 1]):6.2f}")
    everything = np.concatenate([v[:, 0] for v in result.values()])
    print(f"flicker (mean over photos and exposures): {everything.mean() * 1e3:.1f} millistops per frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
