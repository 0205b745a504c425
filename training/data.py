"""Training data: well-exposed photos degraded on the fly with eq. 5, and the fixed held-out split.

The held-out split is a seeded choice of `val_fraction` of the photos in train/ (never eval/): validation
(checkpoint selection, early stopping) and the synthetic test set both come from it, the test set with its
own seed so the two never share a degradation draw.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from illexp_ros.core.degradation import (
    ExposureSampler,
    add_sensor_noise,
    degrade_mixed,
    jpeg_roundtrip,
    mixed_exposure_mask,
)
from illexp_ros.core.exposure import exposure_map

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def list_images(root: Path) -> list[Path]:
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images found under {root}")
    return files


def split_holdout(files: list[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, held_out): a seeded, order-independent split (files are sorted first)."""
    files = sorted(files)
    rng = np.random.default_rng(seed)
    n_val = max(1, int(round(len(files) * fraction)))
    idx = rng.permutation(len(files))
    held = sorted(files[i] for i in idx[:n_val])
    train = sorted(files[i] for i in idx[n_val:])
    return train, held


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def sampler_from(data_cfg, rng: np.random.Generator) -> ExposureSampler:
    return ExposureSampler(alpha=data_cfg.alpha, beta_under=data_cfg.beta_under, gamma_under=data_cfg.gamma_under,
                           beta_over=data_cfg.beta_over, gamma_over=data_cfg.gamma_over, rng=rng)


def make_pair(reference: np.ndarray, kind: str, sampler: ExposureSampler, rng: np.random.Generator,
              mixed_region_prob: float = 0.0, noise: bool = False,
              jpeg_quality: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(degraded, target exposure map) for a float reference in [0, 1] (H x W x 3)."""
    if kind == "mixed" and rng.random() < mixed_region_prob:
        h, w = reference.shape[:2]
        degraded = degrade_mixed(reference, sampler.sample("under"), sampler.sample("over"),
                                 mixed_exposure_mask(h, w, rng))
    else:
        degraded = sampler.sample("any" if kind == "mixed" else kind).apply(reference)
    if noise:
        degraded = add_sensor_noise(degraded, rng)
    if jpeg_quality is not None:
        degraded = jpeg_roundtrip(degraded, int(rng.integers(jpeg_quality[0], jpeg_quality[1] + 1)))
    return degraded, exposure_map(degraded, reference, kind)


class PatchSource:
    """Random crops (with flips) of in-memory photos, degraded on the fly."""

    def __init__(self, files: list[Path], data_cfg, rng: np.random.Generator) -> None:
        self.images = [read_rgb(p) for p in files]
        self.cfg = data_cfg
        self.rng = rng
        self.sampler = sampler_from(data_cfg, rng)

    def _crop(self, img: np.ndarray, size: int) -> np.ndarray:
        h, w = img.shape[:2]
        if h < size or w < size:
            scale = size / min(h, w)
            img = cv2.resize(img, (max(size, round(w * scale)), max(size, round(h * scale))),
                             interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
        y = int(self.rng.integers(0, h - size + 1))
        x = int(self.rng.integers(0, w - size + 1))
        patch = img[y:y + size, x:x + size]
        if self.rng.random() < 0.5:
            patch = patch[:, ::-1]
        if self.rng.random() < 0.5:
            patch = patch[::-1]
        return np.ascontiguousarray(patch).astype(np.float32) / 255.0

    def batch(self, batch_size: int, crop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(degraded, reference, target map), each B x 3 x crop x crop float32."""
        deg, ref, em = [], [], []
        for _ in range(batch_size):
            r = self._crop(self.images[int(self.rng.integers(len(self.images)))], crop)
            d, m = make_pair(r, self.cfg.kind, self.sampler, self.rng, self.cfg.mixed_region_prob,
                             self.cfg.noise, self.cfg.jpeg_quality)
            deg.append(d)
            ref.append(r)
            em.append(m)
        return tuple(np.stack(a).transpose(0, 3, 1, 2).copy() for a in (deg, ref, em))


def fixed_pairs(files: list[Path], data_cfg, seed: int, crop: int | None, kind: str | None = None,
                max_images: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Deterministic (name, degraded, reference) pairs, float H x W x 3 - for validation and the synthetic
    test set. With crop, a centre crop of that size (cheap validation on the CPU)."""
    rng = np.random.default_rng(seed)
    sampler = sampler_from(data_cfg, rng)
    kind = kind or data_cfg.kind
    out = []
    for i, path in enumerate(files[:max_images] if max_images else files):
        ref = read_rgb(path).astype(np.float32) / 255.0
        if crop:
            h, w = ref.shape[:2]
            c = min(crop, h, w) // 8 * 8
            y, x = (h - c) // 2, (w - c) // 2
            ref = ref[y:y + c, x:x + c]
        draw_kind = kind
        if kind == "mixed":
            draw_kind = ("under", "over", "mixed")[i % 3]
        if draw_kind == "mixed":
            h, w = ref.shape[:2]
            deg = degrade_mixed(ref, sampler.sample("under"), sampler.sample("over"), mixed_exposure_mask(h, w, rng))
        else:
            deg = sampler.sample(draw_kind).apply(ref)
        out.append((f"{draw_kind}_{path.stem}", deg, ref))
    return out
