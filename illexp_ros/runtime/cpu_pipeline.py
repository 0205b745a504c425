"""Frame pipeline of the CPU backends: uint8 frame -> network input -> network -> uint8 frame, in numpy/OpenCV.

The network is a callable on an aligned N x 3 x H x W float32 RGB array in [0, 1] (H, W multiples of the
model's stride) returning (corrected, exposure_map) arrays of the same shape; torch_cpu and onnxruntime differ
only in that callable, so they share every pre/post-processing step (and their parity test checks the network).

Per resolution a set of buffers is kept (a few resolutions at most), so once warm a frame allocates only the
returned arrays. Colour order: the network is RGB; a BGR frame is reordered with negative-stride views while
it is copied into the network's buffer, never as a separate pass.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import cv2
import numpy as np

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit, internal_size
from illexp_ros.runtime.guided_filter import GuidedUpsampler

NetworkFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
INV255 = np.float32(1.0 / 255.0)
MAX_CACHED_RESOLUTIONS = 4


# Per-stage timing for `illexp_bench --profile`: None (the default) costs one check per stage.
STAGE_ORDER = ("downscale", "net_in", "network", "guided_fit", "upsample_coefficients", "apply", "to_uint8",
               "exposure_map")
_stage_times: dict[str, list[float]] | None = None


@contextmanager
def stage_profile() -> Iterator[dict[str, list[float]]]:
    """Collect milliseconds per pipeline stage while the block runs: {stage: [ms per call, ...]}."""
    global _stage_times
    previous, _stage_times = _stage_times, {}
    try:
        yield _stage_times
    finally:
        _stage_times = previous


class _Stages:
    """Stopwatch of one frame: mark(name) books the time since the previous mark to `name`."""

    __slots__ = ("t",)

    def __init__(self) -> None:
        self.t = time.perf_counter()

    def mark(self, name: str) -> None:
        if _stage_times is not None:
            now = time.perf_counter()
            _stage_times.setdefault(name, []).append((now - self.t) * 1e3)
            self.t = now


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


DOWNSCALE_BAND_ROWS = 48  # about this many full-resolution rows per downscale band: its float copy stays in cache


class _FastBuffers:
    """Everything fast mode needs for one (full, low) resolution pair, kept across frames.

    The two full-resolution passes work in row bands so that no full-size float image is written: the
    downscale converts one band at a time to float (a per-worker buffer of ~48 rows) and area-resizes it into
    its rows of the low-resolution image, with band borders where area cells begin (a multiple of
    h / gcd(h, hl) rows), so the result is the same as one resize of the whole frame; the apply pass writes
    the uint8 output straight from A_up * frame + 255 * b_up with saturation.
    """

    def __init__(self, h: int, w: int, hl: int, wl: int, multiple: int, workers: int, fit: GuidedFit) -> None:
        self.low_in = np.empty((hl, wl, 3), np.float32)
        self.low_out = np.empty((hl, wl, 3), np.float32)
        self.b255 = np.empty((hl, wl, 3), np.float32)
        self.net_in = np.empty((1, 3, padded(hl, multiple), padded(wl, multiple)), np.float32)
        self.low_plane = np.empty((hl, wl), np.float32)
        self.plane = np.empty((h, w), np.float32)
        self.guided = GuidedUpsampler((hl, wl), (h, w), 3, *fit)
        g = math.gcd(h, hl)
        unit_full, unit_low = h // g, hl // g
        k = max(1, DOWNSCALE_BAND_ROWS // unit_full)
        bands = [(i * unit_full, min(h, (i + k) * unit_full), i * unit_low, min(hl, (i + k) * unit_low))
                 for i in range(0, g, k)]
        # Contiguous groups of bands, one per worker, each with its own float buffer: (bands, buffer) per job.
        groups = [bands[j * len(bands) // workers:(j + 1) * len(bands) // workers] for j in range(workers)]
        self.down_jobs = [(grp, np.empty((k * unit_full, w, 3), np.float32)) for grp in groups if grp]
        self.apply_rows = [(j * h // workers, (j + 1) * h // workers) for j in range(workers)]


class CpuPipeline:
    """Runs one network on frames, full resolution or fast (reduced internal resolution + guided upsampling)."""

    def __init__(self, network: NetworkFn, stride_multiple: int, workers: int = 0,
                 fit: GuidedFit = DEFAULT_FIT) -> None:
        """workers: threads for fast mode's full-resolution passes (0 = the CPU count, at most 4); the network's
        own threads are the backend's business. fit: fast mode's guided fit (the model file's, model_io)."""
        self.network = network
        self.fit = fit
        self.multiple = stride_multiple
        self.workers = max(1, workers if workers > 0 else min(4, os.cpu_count() or 1))
        self._pool: ThreadPoolExecutor | None = None
        self._buffers: OrderedDict[tuple, object] = OrderedDict()

    def _map(self, fn: Callable, items: list) -> None:
        """fn over items, on the worker threads when there is more than one (OpenCV and numpy release the GIL)."""
        if len(items) == 1:
            fn(items[0])
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="illexp_fast")
        for future in [self._pool.submit(fn, item) for item in items]:
            future.result()

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
        st = _Stages()
        b: _FullBuffers = self._get(("full", h, w), lambda: _FullBuffers(h, w, self.multiple))
        # cv2.split / cv2.merge move between interleaved and planar layouts several times faster than a
        # numpy copy through a transposed view.
        cv2.split(frame, b.planes_u8)
        rgb_planes = b.planes_u8[::-1] if bgr else b.planes_u8
        for c in range(3):
            np.multiply(rgb_planes[c], INV255, out=b.net_in[0, c, :h, :w])
        fill_replicate_pad(b.net_in, h, w)
        st.mark("net_in")
        out, em = self.network(b.net_in)
        st.mark("network")
        out_planes = [out[0, c, :h, :w] for c in ((2, 1, 0) if bgr else (0, 1, 2))]
        cv2.merge(out_planes, b.hwc)
        np.clip(b.hwc, 0.0, 1.0, out=b.hwc)
        result = to_uint8(b.hwc)
        st.mark("to_uint8")
        if not want_map:
            return result, None
        em_u8 = self._exposure_map(em[0, :, :h, :w], b.plane)
        st.mark("exposure_map")
        return result, em_u8

    def _run_fast(self, frame: np.ndarray, bgr: bool, want_map: bool, hl: int, wl: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
        h, w = frame.shape[:2]
        st = _Stages()
        b: _FastBuffers = self._get(("fast", h, w, hl, wl),
                                    lambda: _FastBuffers(h, w, hl, wl, self.multiple, self.workers, self.fit))
        # The guided fit is per channel, so the full-resolution work stays in the frame's own colour order;
        # only the small network input/output is reordered.

        def downscale(job: tuple[list, np.ndarray]) -> None:
            bands, buf = job
            for y0, y1, l0, l1 in bands:
                band = buf[:y1 - y0]
                np.multiply(frame[y0:y1], INV255, out=band)
                cv2.resize(band, (wl, l1 - l0), dst=b.low_in[l0:l1], interpolation=cv2.INTER_AREA)

        self._map(downscale, b.down_jobs)
        st.mark("downscale")
        np.copyto(b.net_in[0, :, :hl, :wl], channels_first_view(b.low_in, bgr))
        fill_replicate_pad(b.net_in, hl, wl)
        st.mark("net_in")
        out, em = self.network(b.net_in)
        st.mark("network")
        np.copyto(b.low_out, channels_last_view(out[0, :, :hl, :wl], bgr))
        a, offset = b.guided.coefficients(b.low_in, b.low_out)
        np.multiply(offset, np.float32(255.0), out=b.b255)  # out = A * x + b on [0, 1] = (A * x_u8 + 255 b) / 255
        st.mark("guided_fit")
        a_up, b_up = b.guided.a_up, b.guided.b_up
        cv2.resize(a, b.guided.full_wh, dst=a_up, interpolation=cv2.INTER_LINEAR)
        cv2.resize(b.b255, b.guided.full_wh, dst=b_up, interpolation=cv2.INTER_LINEAR)
        st.mark("upsample_coefficients")
        result = np.empty((h, w, 3), np.uint8)

        def apply(rows: tuple[int, int]) -> None:
            y0, y1 = rows
            cv2.multiply(a_up[y0:y1], frame[y0:y1], dst=a_up[y0:y1], dtype=cv2.CV_32F)
            # float -> uint8 with rounding and saturation at both ends: the clamp to [0, 1] and the conversion.
            cv2.add(a_up[y0:y1], b_up[y0:y1], dst=result[y0:y1], dtype=cv2.CV_8U)

        self._map(apply, b.apply_rows)
        st.mark("apply")
        if not want_map:
            return result, None
        em_low = em[0, :, :hl, :wl]
        np.add(em_low[0], em_low[1], out=b.low_plane)
        b.low_plane += em_low[2]
        cv2.resize(b.low_plane, (w, h), dst=b.plane, interpolation=cv2.INTER_LINEAR)
        np.clip(b.plane, 0.0, 3.0, out=b.plane)
        em_u8 = to_uint8(b.plane, 255.0 / 3.0)
        st.mark("exposure_map")
        return result, em_u8

    @staticmethod
    def _exposure_map(em_chw: np.ndarray, plane: np.ndarray) -> np.ndarray:
        """H x W uint8 exposure map: the mean of the three channels of the network's map."""
        np.add(em_chw[0], em_chw[1], out=plane)
        plane += em_chw[2]
        np.clip(plane, 0.0, 3.0, out=plane)
        return to_uint8(plane, 255.0 / 3.0)

    def buffered_resolutions(self) -> int:
        """How many (resolution, mode) buffer sets are held now: at most MAX_CACHED_RESOLUTIONS."""
        return len(self._buffers)

    def clear(self) -> None:
        self._buffers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
