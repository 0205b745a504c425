"""A sample camera bag made on demand: a camera pans across photographs while "driving out of a tunnel".

Source photographs are the colour images scikit-image installs with its package (skimage.data), all free to
redistribute (licences from skimage/data/_fetchers.py):
  * rocket   - launch of DSCOVR on Falcon 9 at night, SpaceX, released into the public domain
  * coffee   - "Coffee cup", CC0, photographer Rachel Michetti
  * chelsea  - "Chelsea the cat", CC0, photographer Stefan van der Walt
They are scaled to the frame height and laid side by side; the camera window pans left to right across them.

Exposure follows paper eq. 5 (illexp_ros.core.degrade) per frame: inside the tunnel the frame is under-exposed
(beta 0.5 -> 0.65, gamma 1.5); then the tunnel exit opens as a bright disc in the middle of the frame that
grows until it fills it (spatially mixed exposure, core.degrade_mixed with a radial mask); outside the frame
is blown out (beta 2 -> 1.6, gamma 0.67 -> 0.8, the camera's auto-exposure slowly catching up).
The clean (well-exposed) frames are kept, in the bag on a reference topic as lossless PNG, for PSNR.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from skimage import data as skdata

from illexp_ros.core import ExposureParams, degrade_mixed
from illexp_ros.core.metrics import to_uint8
from illexp_ros.ros.bags.images import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    TYPESTORE,
    make_compressed,
    make_image,
    serialize,
)

SOURCES = ("rocket", "coffee", "chelsea")
IMAGE_TOPIC = "/cam/image_raw"
REFERENCE_TOPIC = "/cam/image_reference"
FRAME_ID = "camera"
START_NS = 1_700_000_000 * 1_000_000_000  # a fixed epoch: the same bag every time
# A camera driver's offered QoS (reliable, keep last 10), so copies can be checked to keep it.
CAMERA_QOS = Qos(QosHistory.KEEP_LAST, 10, QosReliability.RELIABLE, QosDurability.VOLATILE, QosTime(0, 0),
                 QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


@dataclass(frozen=True)
class SampleFrame:
    index: int
    stamp_ns: int
    degraded: np.ndarray  # H x W x 3 uint8 RGB
    clean: np.ndarray  # H x W x 3 uint8 RGB


def panorama(height: int) -> np.ndarray:
    """The source photographs scaled to `height` and laid side by side (RGB uint8)."""
    parts = []
    for name in SOURCES:
        img = getattr(skdata, name)()
        w = round(img.shape[1] * height / img.shape[0])
        parts.append(cv2.resize(img, (w, height), interpolation=cv2.INTER_AREA))
    return np.concatenate(parts, axis=1)


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def exposure_at(t: float) -> tuple[ExposureParams, ExposureParams, float]:
    """(under params, over params, radius of the tunnel exit) at time t in [0, 1] of the drive."""
    under = ExposureParams(1.0, 0.5 + 0.15 * _smoothstep(t / 0.3), 1.5)
    adapt = _smoothstep((t - 0.7) / 0.3)
    over = ExposureParams(1.0, 2.0 - 0.4 * adapt, 0.67 + 0.13 * adapt)
    radius = -0.2 + 1.5 * _smoothstep((t - 0.3) / 0.4)  # < 0: no exit visible; > 1.1: the frame is outside
    return under, over, radius


def exit_mask(height: int, width: int, radius: float) -> np.ndarray:
    """H x W x 1 in [0, 1]: 1 inside the bright tunnel exit (a soft disc centred in the frame)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = np.hypot((xx - (width - 1) / 2) / (width / 2), (yy - (height - 1) / 2) / (height / 2)) / np.sqrt(2)
    return (1.0 / (1.0 + np.exp(-(radius - r) / 0.06)))[..., None].astype(np.float32)


def sample_frames(frames: int = 60, size: tuple[int, int] = (480, 640), fps: float = 15.0
                  ) -> Iterator[SampleFrame]:
    """The sequence, frame by frame. size = (height, width)."""
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    height, width = size
    pano = panorama(height)
    if pano.shape[1] < width:
        raise ValueError(f"frame width {width} exceeds the panorama width {pano.shape[1]}")
    span = pano.shape[1] - width
    for i in range(frames):
        t = i / max(frames - 1, 1)
        x = round(span * t)
        clean = np.ascontiguousarray(pano[:, x:x + width])
        under, over, radius = exposure_at(t)
        mask = exit_mask(height, width, radius)
        degraded = degrade_mixed(clean.astype(np.float32) / 255.0, under, over, mask)
        yield SampleFrame(i, START_NS + round(i * 1e9 / fps), to_uint8(degraded), clean)


def write_sample_bag(path: str | Path, frames: int = 60, size: tuple[int, int] = (480, 640),
                     fps: float = 15.0, storage: str = "mcap", compressed: bool = False,
                     with_reference: bool = True) -> list[SampleFrame]:
    """Write the sequence as a ROS 2 bag at `path` (must not exist); returns the frames written.

    /cam/image_raw: the ill-exposed frames, sensor_msgs/Image rgb8 (CompressedImage JPEG if `compressed`);
    /cam/image_reference: the clean frames, CompressedImage PNG (lossless), same header stamps.
    """
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    written = []
    with Writer(Path(path), version=9, storage_plugin=plugin) as writer:
        cam = writer.add_connection(IMAGE_TOPIC, COMPRESSED_TYPE if compressed else IMAGE_TYPE,
                                    typestore=TYPESTORE, offered_qos_profiles=[CAMERA_QOS])
        ref = writer.add_connection(REFERENCE_TOPIC, COMPRESSED_TYPE, typestore=TYPESTORE,
                                    offered_qos_profiles=[CAMERA_QOS]) if with_reference else None
        for f in sample_frames(frames, size, fps):
            if compressed:
                msg = make_compressed(f.degraded, "rgb", f.stamp_ns, FRAME_ID, fmt="jpg")
            else:
                msg = make_image(f.degraded, "rgb", "rgb8", f.stamp_ns, FRAME_ID)
            writer.write(cam, f.stamp_ns, serialize(msg))
            if ref is not None:
                clean = make_compressed(f.clean, "rgb", f.stamp_ns, FRAME_ID)
                writer.write(ref, f.stamp_ns, serialize(clean))
            written.append(f)
    return written
