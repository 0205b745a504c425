#!/usr/bin/env python3
"""How much a model's correction flickers while the camera pans.

    python training/pan_flicker.py --config training/configs/mixed_fast.yaml models/mixed_fast.pt
                                   [--photos validation|confirmation] [--stops=-2,0,1] [--frames 40] [--step 4]
                                   [--crop 256] [--fast N | --full] [--level-smoothing W] [--stereo]
                                   [--threads N]

A pan simulated on the held-out training photos (never eval/): `frames` square crops of side `crop` sliding
`step` pixels per frame across each photo, the photo exposed by each of `stops` (core.degradation.expose, a
camera's exposure change in linear light; 0 = the photo as it is), rounded to 8 bits as a camera gives it, and
the output rounded to 8 bits as the node publishes it. For each frame the level error is
log2(mean output / mean reference crop) in stops; the flicker is the mean |change of that error| from one frame
to the next, in millistops per frame. The reference crops drift too (the view changes), so a correction that
keeps its error steady has zero flicker however much the scene's brightness moves. Per exposure it prints the
mean, median and largest flicker over the photos, and the median ratio of the output's mean drift to the
reference's (1 = moves as the scene does), and the mean PSNR of the frames against their reference crops; then
the mean over everything.

--level-smoothing W runs each pan's outputs through the node's level smoothing (runtime.level_smoothing, the
node's `level_smoothing` parameter) at weight W, as a 30 Hz stream, and then also prints its lag: on a still
view whose exposure steps or ramps as auto-exposure would (RAMPS), the largest level difference between the
smoothed stream and the network's own.

--stereo (with --frames 2) reads the two frames as a stereo pair `step` px of disparity apart and corrects them
as illexp_stereo_node does, at one shared level (runtime.stereo_level); the "flicker" is then the difference in
level error between the two views (README, "Stereo cameras").

Why: a robot's camera pans all the time, and SLAM's photometric terms and detectors take a correction that
breathes with the framing for a change in the scene (README, known limits). On 2026-11-27 the shipped
mixed_fast's error changed by ~10 millistops per frame on average, up to 59, along a 4-pixel-per-frame pan.
Exit 0, or 2 with one line on an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from illexp_ros.core.degradation import expose  # noqa: E402
from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit, run_network  # noqa: E402
from illexp_ros.core.metrics import to_uint8  # noqa: E402
from illexp_ros.runtime.errors import EnhancerError  # noqa: E402
from illexp_ros.runtime.level_smoothing import LevelSmoother, frame_level  # noqa: E402
from illexp_ros.runtime.model_io import load_model  # noqa: E402
from illexp_ros.runtime.stereo_level import stereo_gain_changes  # noqa: E402
from training.arguments import int_at_least, thread_count  # noqa: E402
from training.config import ConfigError, load_config  # noqa: E402
from training.data import config_photos, confirmation_photos, read_reference, validation_photos  # noqa: E402
from training.level_diagnosis import stops_between  # noqa: E402

FPS = 30.0  # frame rate of the simulated stream (level smoothing's pause check)


def pan_crops(image: np.ndarray, frames: int, step: int, crop: int) -> np.ndarray:
    """frames x crop x crop x 3 crops of `image` (H x W x 3), sliding `step` pixels to the right per frame along
    the top rows (the last ones repeat the right edge when the photo is too narrow). ValueError when the photo
    is smaller than one crop."""
    h, w = image.shape[:2]
    if h < crop or w < crop:
        raise ValueError(f"a {w}x{h} photo is smaller than the {crop}-pixel crop of the pan")
    return np.stack([image[:crop, x0:x0 + crop] for x0 in (min(i * step, w - crop) for i in range(frames))])


@torch.no_grad()
def pan_outputs(model: torch.nn.Module, frames: np.ndarray, fast_short_side: int | None,
                fit: GuidedFit = DEFAULT_FIT) -> np.ndarray:
    """The model's 8-bit output for each frame (N x H x W x 3 uint8 in, as a camera gives them; the same out,
    as the node publishes them)."""
    x = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float() / 255.0
    out, _ = run_network(model, x, fast_short_side, fit)
    return np.ascontiguousarray(to_uint8(out.float().permute(0, 2, 3, 1).numpy()))


def smoothed(inputs: np.ndarray, outputs: np.ndarray, weight: float, fps: float = FPS) -> np.ndarray:
    """The outputs of one stream after the node's level smoothing (runtime.level_smoothing) at `weight`."""
    smoother = LevelSmoother(weight)
    return np.stack([smoother.apply(i, o.copy(), t=n / fps) for n, (i, o) in enumerate(zip(inputs, outputs))])


def shared_level(inputs: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """The outputs of one stereo pair (2 x H x W x 3) scaled to one shared gain, as illexp_stereo_node does."""
    changes = stereo_gain_changes(LevelSmoother(0.0), list(inputs), list(outputs)).changes
    return np.stack([cv2.convertScaleAbs(o, alpha=c) for o, c in zip(outputs, changes)])


def flicker(output_levels: np.ndarray, reference_levels: np.ndarray) -> tuple[float, float]:
    """(mean |frame-to-frame change| of the level error in stops, the output's mean drift / the reference's)."""
    error = stops_between(output_levels, reference_levels)
    ref_drift = float(np.abs(np.diff(reference_levels)).mean())
    ratio = float(np.abs(np.diff(output_levels)).mean()) / ref_drift if ref_drift > 0 else float("nan")
    return float(np.abs(np.diff(error)).mean()), ratio


def mean_psnr(outputs: np.ndarray, references: np.ndarray) -> float:
    """Mean over frames of the PSNR (dB) of 8-bit outputs against the references in [0, 1]."""
    mse = ((outputs.astype(np.float32) / 255.0 - references) ** 2).mean(axis=(1, 2, 3))
    return float(np.mean(10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def measure(model: torch.nn.Module, photos: list[Path], stops: list[float], frames: int, step: int, crop: int,
            fast_short_side: int | None, fit: GuidedFit = DEFAULT_FIT,
            smoothing: float = 0.0, stereo: bool = False) -> dict[float, np.ndarray]:
    """Per exposure, a photos x 3 array of (flicker in stops per frame, drift ratio, mean PSNR in dB)."""
    rows: dict[float, list[tuple[float, float, float]]] = {s: [] for s in stops}
    for path in photos:
        reference = pan_crops(read_reference(path, None), frames, step, crop)
        ref_levels = reference.mean(axis=(1, 2, 3))
        for s in stops:
            degraded = to_uint8(expose(reference, s))
            out = pan_outputs(model, degraded, fast_short_side, fit)
            if smoothing:
                out = smoothed(degraded, out, smoothing)
            if stereo:
                out = shared_level(degraded, out)
            rows[s].append((*flicker(out.mean(axis=(1, 2, 3)) / 255.0, ref_levels), mean_psnr(out, reference)))
    return {s: np.array(v) for s, v in rows.items()}


# Auto-exposure changes on a still view (stops per frame), for the lag of level smoothing: ~20-30 frames each.
RAMPS = {
    "step 1": np.r_[np.full(10, -2.0), np.full(10, -1.0)],
    "ramp 0.1": np.r_[np.full(10, -2.0), np.linspace(-1.9, -1.0, 10), np.full(10, -1.0)],
    "ramp 0.02": np.r_[np.full(5, -2.0), np.linspace(-1.98, -1.5, 25), np.full(5, -1.5)],
}


def ramp_lag(model: torch.nn.Module, photos: list[Path], crop: int, fast_short_side: int | None,
             fit: GuidedFit, smoothing: float) -> dict[str, np.ndarray]:
    """Per exposure change in RAMPS, per photo: the largest |level difference| in stops between the smoothed
    stream and the network's own, on a still view whose exposure changes (0 = no lag)."""
    lags: dict[str, list[float]] = {name: [] for name in RAMPS}
    for path in photos:
        view = pan_crops(read_reference(path, None), 1, 1, crop)[0]
        for name, stops in RAMPS.items():
            inputs = to_uint8(np.stack([expose(view, s) for s in stops]))
            out = pan_outputs(model, inputs, fast_short_side, fit)
            own = np.array([frame_level(o) for o in out])
            steady = np.array([frame_level(o) for o in smoothed(inputs, out, smoothing)])
            lags[name].append(float(np.abs(steady - own).max()))
    return {name: np.array(v) for name, v in lags.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="the training config whose held-out photos to pan over")
    p.add_argument("model")
    p.add_argument("--photos", choices=("validation", "confirmation"), default="confirmation",
                   help="the held-out photos validation uses, or those it leaves out (training.data)")
    p.add_argument("--stops", default="-2,0,1",
                   help="exposures of the pan in stops, comma-separated (write --stops=-1,0: a leading minus)")
    p.add_argument("--frames", type=int_at_least(2), default=40)
    p.add_argument("--step", type=int_at_least(1), default=4, help="pixels the view moves per frame")
    p.add_argument("--crop", type=int_at_least(8), default=256, help="side of the square view")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--fast", type=int_at_least(8), default=None, help="fast mode at this internal short side")
    mode.add_argument("--full", action="store_true", help="full mode (no fast path)")
    p.add_argument("--level-smoothing", type=float, default=0.0, metavar="W",
                   help="the node's level smoothing at this weight, 0..0.99 (0 = off, the network's frames as "
                        "they are)")
    p.add_argument("--stereo", action="store_true",
                   help="with --frames 2: the two views of a stereo pair at one shared level (illexp_stereo_node)")
    p.add_argument("--threads", type=thread_count, default=0)
    args = p.parse_args(argv)
    try:
        stops = [float(s) for s in args.stops.split(",")]
        if args.frames < 2 or args.step < 1 or args.crop < 16:
            raise ValueError("--frames must be >= 2, --step >= 1 and --crop >= 16")
        if args.stereo and (args.frames != 2 or args.level_smoothing):
            raise ValueError("--stereo needs --frames 2 (one pair) and no --level-smoothing")
        LevelSmoother(args.level_smoothing)  # ValueError for a weight outside the node's range
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
        result = measure(model, photos, stops, args.frames, args.step, args.crop, fast, info["guided_fit"],
                         args.level_smoothing, args.stereo)
        lags = (ramp_lag(model, photos, args.crop, fast, info["guided_fit"], args.level_smoothing)
                if args.level_smoothing else {})
    except (ConfigError, EnhancerError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{Path(args.model).name}: pan of {args.frames} x {args.crop}-px views, {args.step} px per frame, over "
          f"{len(photos)} {args.photos} photos of {cfg.name}, {'fast mode at ' + str(fast) if fast else 'full mode'}, "
          f"level smoothing {args.level_smoothing:g}" + (", the pair at one shared level" if args.stereo else ""))
    print(f"{'stops':>6s} {'mean':>7s} {'median':>7s} {'max':>7s} {'drift':>6s} {'PSNR':>6s}   (flicker: millistops "
          "per frame; drift: output's / reference's; PSNR: dB, mean over frames)")
    for s, v in result.items():
        print(f"{s:+6.1f} {v[:, 0].mean() * 1e3:7.1f} {np.median(v[:, 0]) * 1e3:7.1f} {v[:, 0].max() * 1e3:7.1f} "
              f"{np.nanmedian(v[:, 1]):6.2f} {v[:, 2].mean():6.2f}")
    everything = np.concatenate([v[:, 0] for v in result.values()])
    print(f"flicker (mean over photos and exposures): {everything.mean() * 1e3:.1f} millistops per frame")
    for name, lag in lags.items():
        print(f"lag on an exposure {name} (stops per frame): mean {lag.mean():.3f}, max {lag.max():.3f} stops")
    return 0


if __name__ == "__main__":
    sys.exit(main())
