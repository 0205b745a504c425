"""Frame pipeline of the CPU backends: uint8 frame -> network input -> network -> uint8 frame, in numpy/OpenCV.

The network is a callable on an aligned N x 3 x H x W float32 RGB array in [0, 1] (H, W multiples of the
model's stride) returning (corrected, exposure_map) arrays of the same shape; torch_cpu and onnxruntime differ
only in that callable, so they share every pre/post-processing step (and their parity test checks the network).

Per resolution a set of buffers is kept (a few resolutions at most), so once warm a frame allocates only the
returned arrays. Colour order: the network is RGB; a BGR frame is reordered with negative-stride views while
it is copied into the network's buffer, never as a separate pass.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import cv2
import numpy as np

from illexp_ros.core.fast import internal_size
from illexp_ros.runtime.guided_filter import GuidedUpsampler

NetworkFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
INV255 = np.float32(1.0 / 255.0)
MAX_CACHED_RESOLUTIONS = 4


def padded(n: int, multiple: int) -> int:
    return n + (-n) % multiple


def fill_replicate_pad(buf: np.ndarray, h: int, w: int) -> None:
    """Replicate the last valid row/column of an N x C x Hp x Wp buffer into its padding, in place."""
    if buf.shape[-1] > w:
        buf[..., :h, w:] = buf[..., :h, w - 1:w]
    if buf.shape[-2] > h:
        buf[..., h:, :] = buf[..., h - 1:h, :]


def channels_first_view(hwc: np.ndarray, bgr: bool) -> np.ndarray:
    """C x H x W RGB view of an H x W x 3 array in `bgr` or RGB order (no copy)."""
    return (hwc[..., ::-1] if bgr else hwc).transpose(2, 0, 1)


def channels_last_view(chw: np.ndarray, bgr: bool) -> np.ndarray:
    """H x W x 3 view, in the frame's colour order, of a 3 x H x W RGB array (no copy)."""
    return (chw[::-1] if bgr else chw).transpose(1, 2, 0)


def to_uint8(src: np.ndarray, scale: float = 255.0) -> np.ndarray:
    """New uint8 array = round(src * scale), saturated; src must be >= 0 (convertScaleAbs takes |x|)."""
    return cv2.convertScaleAbs(src, alpha=scale)


class _FullBuffers:
    def __init__(self, h: int, w: int, multiple: int) -> None:
        self.net_in = np.empty((1, 3, padded(h, multiple), padded(w, multiple)), np.float32)
        self.planes_u8 = [np.empty((h, w), np.uint8) for _ in range(3)]
        self.hwc = np.empty((h, w, 3), np.float32)
        self.plane = np.empty((h, w), np.float32)


class _FastBuffers:
    def __init__(self, h: int, w: int, hl: int, wl: int, multiple: int) -> None:
        self.full = np.empty((h, w, 3), np.float32)
        self.low_in = np.empty((hl, wl, 3), np.float32)
        self.low_out = np.empty((hl, wl, 3), np.float32)
        self.net_in = np.empty((1, 3, padded(hl, multiple), padded(wl, multiple)), np.float32)
        self.low_plane = np.empty((hl, wl), np.float32)
        self.plane = np.empty((h, w), np.float32)
        self.guided = GuidedUpsampler((hl, wl), (h, w))


class CpuPipeline:
    """Runs one network on frames, full resolution or fast (reduced internal resolution + guided upsampling)."""

    def __init__(self, network: NetworkFn, stride_multiple: int) -> None:
        self.network = network
        self.multiple = stride_multiple
        self._buffers: OrderedDict[tuple, object] = OrderedDict()

    def _get(self, key: tuple, make: Callable[[], object]) -> object:
        buf = self._buffers.get(key)
        if buf is None:
            buf = make()
            self._buffers[key] = buf
            while len(self._buffers) > MAX_CACHED_RESOLUTIONS:
                self._buffers.popitem(last=False)
        else:
            self._buffers.move_to_end(key)
        return buf

    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int = 0
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """frame: H x W x 3 uint8 (C-contiguous). Returns (new uint8 frame, H x W uint8 map or None)."""
        h, w = frame.shape[:2]
        if short_side > 0:
            # Same internal size as core.fast.fast_forward (what a fast model is fine-tuned through).
            hl, wl = internal_size(h, w, short_side)
            if hl < h and wl < w:
                return self._run_fast(frame, bgr, want_map, hl, wl)
        return self._run_full(frame, bgr, want_map)

    def _run_full(self, frame: np.ndarray, bgr: bool, want_map: bool) -> tuple[np.ndarray, np.ndarray | None]:
        h, w = frame.shape[:2]
        b: _FullBuffers = self._get(("full", h, w), lambda: _FullBuffers(h, w, self.multiple))
        # cv2.split / cv2.merge move between interleaved and planar layouts several times faster than a
        # numpy copy through a transposed view.
        cv2.split(frame, b.planes_u8)
        rgb_planes = b.planes_u8[::-1] if bgr else b.planes_u8
        for c in range(3):
            np.multiply(rgb_planes[c], INV255, out=b.net_in[0, c, :h, :w])
        fill_replicate_pad(b.net_in, h, w)
        out, em = self.network(b.net_in)
        out_planes = [out[0, c, :h, :w] for c in ((2, 1, 0) if bgr else (0, 1, 2))]
        cv2.merge(out_planes, b.hwc)
        np.clip(b.hwc, 0.0, 1.0, out=b.hwc)
        result = to_uint8(b.hwc)
        return result, (self._map(em[0, :, :h, :w], b.plane) if want_map else None)

    def _run_fast(self, frame: np.ndarray, bgr: bool, want_map: bool, hl: int, wl: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        h, w = frame.shape[:2]
        b: _FastBuffers = self._get(("fast", h, w, hl, wl), lambda: _FastBuffers(h, w, hl, wl, self.multiple))
        # The guided fit is per channel, so the full-resolution work stays in the frame's own colour order;
        # only the small network input/output is reordered.
        np.multiply(frame, INV255, out=b.full)
        cv2.resize(b.full, (wl, hl), dst=b.low_in, interpolation=cv2.INTER_AREA)
        np.copyto(b.net_in[0, :, :hl, :wl], channels_first_view(b.low_in, bgr))
        fill_replicate_pad(b.net_in, hl, wl)
        out, em = self.network(b.net_in)
        np.copyto(b.low_out, channels_last_view(out[0, :, :hl, :wl], bgr))
        corrected = b.guided.apply(b.low_in, b.low_out, b.full)
        result = to_uint8(corrected)
        if not want_map:
            return result, None
        em_low = em[0, :, :hl, :wl]
        np.add(em_low[0], em_low[1], out=b.low_plane)
        b.low_plane += em_low[2]
        cv2.resize(b.low_plane, (w, h), dst=b.plane, interpolation=cv2.INTER_LINEAR)
        np.clip(b.plane, 0.0, 3.0, out=b.plane)
        return result, to_uint8(b.plane, 255.0 / 3.0)

    @staticmethod
    def _map(em_chw: np.ndarray, plane: np.ndarray) -> np.ndarray:
        """H x W uint8 exposure map: the mean of the three channels of the network's map."""
        np.add(em_chw[0], em_chw[1], out=plane)
        plane += em_chw[2]
        np.clip(plane, 0.0, 3.0, out=plane)
        return to_uint8(plane, 255.0 / 3.0)

    def clear(self) -> None:
        self._buffers.clear()
