"""Synthetic ill-exposure (paper eq. 5) and samplers for training pairs.

eq. 5:  I = beta * (alpha * I~) ** gamma, clipped to [0, 1], with I~ the well-exposed reference.
The paper draws alpha in [0.9, 1/0.9], beta in [0.5, 2], gamma in [1/1.5, 1.5] uniformly. We split those
ranges into under-exposure draws (beta <= 1, gamma >= 1: every value goes down) and over-exposure draws
(beta >= 1, gamma <= 1: every value goes up), so that the separate under / over models of the paper each see
their own case. Ranges are parameters: training configs may widen them (documented there) to cover real
captures that are darker or more clipped than the paper's simulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from illexp_ros.core.exposure import LUMA_WEIGHTS

PAPER_ALPHA = (0.9, 1 / 0.9)
PAPER_BETA = (0.5, 2.0)
PAPER_GAMMA = (1 / 1.5, 1.5)


def degrade(reference: np.ndarray, alpha: float, beta: float, gamma: float) -> np.ndarray:
    """Eq. 5 on a float image in [0, 1] (any shape); returns float32 clipped to [0, 1]."""
    ref = np.asarray(reference, dtype=np.float32)
    return np.clip(beta * np.power(np.clip(alpha * ref, 0.0, None), gamma), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class ExposureParams:
    alpha: float
    beta: float
    gamma: float

    def apply(self, reference: np.ndarray) -> np.ndarray:
        return degrade(reference, self.alpha, self.beta, self.gamma)


@dataclass
class ExposureSampler:
    """Draws eq. 5 parameters. kind: 'under', 'over' or 'any' (the paper's full ranges)."""

    alpha: tuple[float, float] = PAPER_ALPHA
    beta_under: tuple[float, float] = (PAPER_BETA[0], 1.0)
    gamma_under: tuple[float, float] = (1.0, PAPER_GAMMA[1])
    beta_over: tuple[float, float] = (1.0, PAPER_BETA[1])
    gamma_over: tuple[float, float] = (PAPER_GAMMA[0], 1.0)
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    def __post_init__(self) -> None:
        for name in ("alpha", "beta_under", "gamma_under", "beta_over", "gamma_over"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi):
                raise ValueError(f"ExposureSampler.{name} must be 0 < low <= high, got {(lo, hi)}")

    def _uniform(self, bounds: tuple[float, float]) -> float:
        return float(self.rng.uniform(bounds[0], bounds[1]))

    def sample(self, kind: str) -> ExposureParams:
        if kind == "any":
            kind = "under" if self.rng.random() < 0.5 else "over"
        if kind == "under":
            return ExposureParams(self._uniform(self.alpha), self._uniform(self.beta_under),
                                  self._uniform(self.gamma_under))
        if kind == "over":
            return ExposureParams(self._uniform(self.alpha), self._uniform(self.beta_over),
                                  self._uniform(self.gamma_over))
        raise ValueError(f"kind must be 'under', 'over' or 'any', got {kind!r}")


def mixed_exposure_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth H x W x 1 mask in [0, 1]: a soft edge at a random angle and position (a tunnel exit, a window).

    1 marks the region that gets the over-exposure draw, 0 the under-exposure one.
    """
    theta = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy = yy / max(height - 1, 1) - 0.5
    xx = xx / max(width - 1, 1) - 0.5
    proj = xx * np.cos(theta) + yy * np.sin(theta) - rng.uniform(-0.25, 0.25)
    softness = rng.uniform(0.03, 0.2)
    return (1.0 / (1.0 + np.exp(-proj / softness)))[..., None].astype(np.float32)


def degrade_mixed(reference: np.ndarray, under: ExposureParams, over: ExposureParams,
                  mask: np.ndarray) -> np.ndarray:
    """Spatially varying exposure: the under draw where mask = 0, the over draw where mask = 1."""
    return (under.apply(reference) * (1.0 - mask) + over.apply(reference) * mask).astype(np.float32)


def add_sensor_noise(image: np.ndarray, rng: np.random.Generator, shot: float = 0.01,
                     read: float = 0.002) -> np.ndarray:
    """Heteroscedastic Gaussian approximation of shot + read noise: var = shot * I + read^2."""
    sigma = np.sqrt(np.clip(image, 0, 1) * shot + read**2)
    return np.clip(image + rng.standard_normal(image.shape).astype(np.float32) * sigma, 0, 1).astype(np.float32)


# Camera exposure (beyond the paper): eq. 5 bends the gamma-encoded values directly; a camera that is set k stops
# too dark or too bright scales the *linear* light by 2^k and then encodes it, clipping in linear light (per
# channel, which is why blown highlights go white). Same sRGB curve both ways (IEC 61966-2-1).
def srgb_to_linear(x):
    """sRGB-encoded values in [0, 1] -> linear light (numpy or torch)."""
    lib = torch if isinstance(x, torch.Tensor) else np
    return lib.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x):
    """Linear light in [0, 1] -> sRGB-encoded values (numpy or torch)."""
    lib = torch if isinstance(x, torch.Tensor) else np
    x = x.clip(0.0, 1.0) if lib is np else x.clamp(0.0, 1.0)
    return lib.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def expose(reference, stops):
    """The frame a camera gives `stops` EV darker (< 0) or brighter (> 0): scale in linear light, clip, encode.
    reference: sRGB in [0, 1]; stops: a float, or an N x 1 x 1 x 1 tensor for a batch."""
    return linear_to_srgb(srgb_to_linear(reference) * 2.0 ** stops)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode/decode an H x W x 3 RGB float image as an 8-bit JPEG in memory: the blocks and ringing of a
    camera's or a compressed image topic's JPEG (4:2:0 chroma, OpenCV's default). The channels are handed to the
    encoder in its BGR order, so its luma and chroma are the image's own."""
    u8 = np.ascontiguousarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1])
    ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def jpeg_batch(images: torch.Tensor, qualities: list[int]) -> torch.Tensor:
    """jpeg_roundtrip of each image of an N x 3 x H x W float batch at its own quality (on the CPU: OpenCV's
    codec; ~1 ms per 256-px crop), returned on the batch's device."""
    frames = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    coded = np.stack([jpeg_roundtrip(f, q) for f, q in zip(frames, qualities, strict=True)])
    return torch.from_numpy(coded).permute(0, 3, 1, 2).to(images.device, images.dtype)


# ------------------------------------------------------------------------------------------------------
# Batched torch versions (training): the same eq. 5, mask and noise on whole batches, on any device, so a GPU
# run synthesises its pairs where it trains and the CPU run keeps numpy work off the training loop.
def degrade_batch(reference: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                  gamma: torch.Tensor) -> torch.Tensor:
    """Eq. 5 on N x C x H x W in [0, 1] with per-sample parameters (each shaped N x 1 x 1 x 1)."""
    return (beta * (alpha * reference).clamp_min(0.0).pow(gamma)).clamp(0.0, 1.0)


def mixed_exposure_mask_batch(n: int, height: int, width: int, generator: torch.Generator,
                              device: torch.device | str) -> torch.Tensor:
    """N x 1 x H x W soft edges, as mixed_exposure_mask (random angle, offset and softness per sample)."""
    u = torch.rand((n, 3, 1, 1), generator=generator, device=device)
    theta = u[:, 0:1] * (2 * np.pi)
    offset = (u[:, 1:2] - 0.5) * 0.5
    softness = 0.03 + u[:, 2:3] * 0.17
    yy = torch.linspace(-0.5, 0.5, height, device=device).view(1, 1, height, 1)
    xx = torch.linspace(-0.5, 0.5, width, device=device).view(1, 1, 1, width)
    proj = xx * torch.cos(theta) + yy * torch.sin(theta) - offset
    return torch.sigmoid(proj / softness)


def add_sensor_noise_batch(image: torch.Tensor, shot: torch.Tensor, read: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
    """Shot + read noise as add_sensor_noise, per-sample strengths (N x 1 x 1 x 1). Added after the exposure
    change, so relative to the signal it is strongest in the darkest frames, as on a real sensor."""
    sigma = (image.clamp(0, 1) * shot + read * read).sqrt()
    noise = torch.randn(image.shape, generator=generator, device=image.device, dtype=image.dtype)
    return (image + noise * sigma).clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------------
# Camera realism beyond expose() (issue 10, item 2: "a sensor response curve"; the project's own scenes: "a tunnel
# exit, a headlight, a dark warehouse aisle").
#
# Film-like response. expose() assumes the camera's tone curve is the sRGB curve, which is almost linear near
# black and clips hard at white. Real cameras apply an S-shaped tone curve (a toe and a soft shoulder). We take
# the classic film characteristic curve, a logistic in log exposure: logit(v) = a * log2(E) + c. Under that
# response a change of k stops is exactly a shift of the log-odds, logit(v') = logit(v) + a * k, whatever c
# is, so it needs no inverse of an unknown curve: the reference is read as that camera's frame. The slope a
# (log-odds per stop) is drawn per sample; sRGB's slope at mid-grey is ~0.6, a contrasty camera curve's ~1.
# 8-bit white / black are read as 0.5 / 254.5 of 255 (a logit needs the open interval), so a clipped sky of
# the reference stays the brightest part of the frame but darkens with the rest, as it would for radiance just
# above the clip point.
LOGIT_EPS = 0.5 / 255.0


def logit_exposure(reference, stops, per_stop):
    """The frame a camera with a logistic (film-like) response gives `stops` EV darker / brighter.
    reference: values in [0, 1] (numpy or torch); stops, per_stop: floats or N x 1 x 1 x 1 tensors."""
    if isinstance(reference, torch.Tensor):
        v = reference.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
        return torch.sigmoid(torch.logit(v) + per_stop * stops)
    v = np.clip(reference, LOGIT_EPS, 1.0 - LOGIT_EPS)
    shifted = np.log(v / (1.0 - v)) + per_stop * stops
    return (1.0 / (1.0 + np.exp(-shifted))).astype(np.float32)


def light_sources(n: int, height: int, width: int, generator: torch.Generator, device: torch.device | str,
                  max_count: int = 3) -> torch.Tensor:
    """N x 3 x H x W linear radiance of 1..max_count lamps per frame (headlights, ceiling lights, a window's sun),
    to add to a reference in linear light. An LDR photo holds no radiance above its white; a real scene's lights
    are 2-64 x brighter, so they stay bright in a frame exposed several stops darker. Each lamp is a Gaussian
    (sigma 0.5-5 % of the short side, log-uniform) with a peak of 2^1..2^6 x white and a warm-to-neutral tint."""
    short = min(height, width)
    yy = torch.arange(height, device=device, dtype=torch.float32).view(1, 1, height, 1)
    xx = torch.arange(width, device=device, dtype=torch.float32).view(1, 1, 1, width)
    out = torch.zeros((n, 3, height, width), device=device)
    u = torch.rand((n, max_count, 7), generator=generator, device=device)
    for j in range(max_count):
        p = u[:, j].view(n, 7, 1, 1)
        present = (j == 0) | (p[:, 6:7] < 0.4)  # the first lamp always, each further one with 40 %
        cy, cx = p[:, 0:1] * (height - 1), p[:, 1:2] * (width - 1)
        sigma = short * 0.005 * 10.0 ** p[:, 2:3]
        peak = 2.0 ** (1.0 + 5.0 * p[:, 3:4])
        tint = torch.cat([torch.ones_like(p[:, 4:5]), 0.75 + 0.25 * p[:, 4:5], 0.5 + 0.5 * p[:, 5:6]], dim=1)
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma * sigma))
        out += present * peak * tint * blob
    return out


def lit_scene(reference: torch.Tensor, lights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(scene radiance, well-exposed frame of it) for a reference (sRGB, N x 3 x H x W) with lamps added:
    the radiance may exceed 1 (the lamps' cores); the frame is it encoded and clipped, i.e. the new target."""
    radiance = srgb_to_linear(reference) + lights
    return radiance, linear_to_srgb(radiance)


def expose_scene(radiance: torch.Tensor, frame: torch.Tensor, stops: torch.Tensor,
                 per_stop: torch.Tensor | None) -> torch.Tensor:
    """A scene of `radiance` (linear, may exceed 1) whose well-exposed `frame` is given, taken `stops` EV off:
    by the sRGB camera (per_stop None: scale, clip, encode) or the logistic one (log-odds shift of the frame,
    plus a * log2 of the radiance above white, which the frame's clip hid)."""
    if per_stop is None:
        return linear_to_srgb(radiance.clamp_min(0.0) * 2.0 ** stops)
    return logit_exposure(frame, stops + torch.log2(radiance.clamp_min(1.0)), per_stop)


# ------------------------------------------------------------------------------------------------------
# Metered targets (beyond the paper; issue 10: "a target convention"). A strongly under- or over-exposed frame
# does not say how bright its scene was, so with the photo's own level as the target a network must guess it and
# pulls every frame towards a typical level (models/MODEL_CARD.md, "the ceiling is the brightness level"). A
# camera resolves that with its meter: the "correct exposure" of a bracketed set is the one that puts the scene's
# average at middle grey. With metering on, a strong draw's target is the photo re-exposed (in linear light, as
# expose() does) so that its mean linear luminance is `key`; the degraded input is made from that target, so the
# target level follows from the input. Average metering at 18 % grey is the simplest camera meter; our training
# photos sit at -0.13 EV from it on average (sd 0.70 EV), so their photographers agree with it on average and it
# removes only the spread. Well-exposed and mild pairs keep the photo as it is: a frame that is fine stays as it is.
METERING_KEY = 0.18
METERING_MAX_STOPS = 2.0
# Luminance of linear sRGB (Rec. 709 primaries): a meter measures light, so not core.exposure.LUMA_WEIGHTS
# (Rec. 601 luma of gamma-encoded values, which classify_exposure and the tone head work on).
REC709_LUMA = (0.2126, 0.7152, 0.0722)


def metering_stops(reference, key: float = METERING_KEY, max_stops: float = METERING_MAX_STOPS):
    """Stops that bring a frame's mean linear luminance to `key`, clipped to +-max_stops.
    reference: sRGB H x W x 3 in [0, 1] (numpy; returns a float) or N x 3 x H x W (torch; returns N x 1 x 1 x 1)."""
    lin = srgb_to_linear(reference)
    if isinstance(reference, torch.Tensor):
        weights = torch.tensor(REC709_LUMA, dtype=lin.dtype, device=lin.device).view(1, 3, 1, 1)
        mean = (lin * weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        return torch.log2(key / mean.clamp_min(1e-4)).clamp(-max_stops, max_stops)
    mean = float((lin * np.asarray(REC709_LUMA, np.float32)).sum(-1).mean())
    return float(np.clip(np.log2(key / max(mean, 1e-4)), -max_stops, max_stops))


def metered(reference, strength: float = 1.0, key: float = METERING_KEY, max_stops: float = METERING_MAX_STOPS):
    """The frame re-exposed `strength` of the way to the metered exposure (0 = unchanged, 1 = mean at key)."""
    if strength == 0:
        return reference
    out = expose(reference, metering_stops(reference, key, max_stops) * strength)
    return out.astype(np.float32) if isinstance(out, np.ndarray) else out


# ------------------------------------------------------------------------------------------------------
# Flat renderings (beyond the paper; issue 10, item 2: "training data that covers what cameras do"). Exposure is
# not the only way a frame comes out badly: a camera's flat or log picture profile, a raw file rendered with
# neutral defaults, haze or a veil of glare on the lens all keep the level but lift the blacks, pull the whites
# down and wash out colour. None of the draws above does that (eq. 5 and a stop change both keep black at black),
# and the shipped mixed_fast makes such frames worse (21.8 dB against their own 23.1 on validation). A flat
# rendering here is a lower log-odds slope (logit(v') = slope * logit(v) + shift, slope < 1: less contrast, grey
# 0.5 stays unless shifted) and a saturation scale towards the frame's luma. The target is the photo, at its own
# level (not metered: a flat frame is not mis-exposed). Everything here is what the tone head can undo per pixel
# (a gain, an offset and a saturation scale). Representable is not identifiable, though: a single frame does not say how
# flat it was rendered, and two 90-minute fine-tunes with flat draws (2026-11-27, models/MODEL_CARD.md) learnt to
# stop harming flat frames (+1.0 / +1.5 dB) but not to restore them, and lost on the other kinds: off by default.
def flat_rendering(reference, slope, shift, saturation):
    """A low-contrast, washed-out rendering of `reference` (values in [0, 1], numpy H x W x 3 or torch
    N x 3 x H x W); slope, shift, saturation: floats, or N x 1 x 1 x 1 tensors for a batch."""
    if isinstance(reference, torch.Tensor):
        v = reference.clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
        flat = torch.sigmoid(torch.logit(v) * slope + shift)
        w = torch.tensor(LUMA_WEIGHTS, dtype=flat.dtype, device=flat.device).view(1, 3, 1, 1)
        luma = (flat * w).sum(1, keepdim=True)
        return (luma + saturation * (flat - luma)).clamp(0.0, 1.0)
    v = np.clip(reference, LOGIT_EPS, 1.0 - LOGIT_EPS)
    flat = 1.0 / (1.0 + np.exp(-(np.log(v / (1.0 - v)) * slope + shift)))
    luma = (flat * np.asarray(LUMA_WEIGHTS, np.float32)).sum(-1, keepdims=True)
    return np.clip(luma + saturation * (flat - luma), 0.0, 1.0).astype(np.float32)
