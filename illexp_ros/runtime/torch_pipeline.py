"""Frame pipeline on a torch device (the GPU backends): every step from uint8 to uint8 runs on the device.

Per (resolution, colour order, internal size) a state holds the static tensors: a host staging buffer
(page-locked on CUDA, so the copies are asynchronous DMA), the device input, and the device outputs. On CUDA
the whole device part (uint8 -> half, colour order, resize/pad, network, guided upsampling, clamp, -> uint8) is
captured once as a CUDA graph and replayed per frame: one launch instead of hundreds of small kernels.
Device-agnostic: on the CPU with float32 and no graphs it runs as is, which is how the tests check its maths
on a machine without a GPU.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit, area_downscale, guided_upsample, internal_size

ForwardFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
MAX_CACHED_STATES = 4


class _State:
    """Static tensors (and the CUDA graph) of one resolution / colour order / internal size."""

    def __init__(self, h: int, w: int, device: torch.device, pinned: bool) -> None:
        self.host_in = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=pinned)
        self.host_out = torch.empty((h, w, 3), dtype=torch.uint8, pin_memory=pinned)
        self.host_map = torch.empty((h, w), dtype=torch.uint8, pin_memory=pinned)
        self.host_in_np = self.host_in.numpy()
        self.dev_in = torch.empty((h, w, 3), dtype=torch.uint8, device=device)
        self.dev_out: torch.Tensor | None = None
        self.dev_map: torch.Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None


class TorchFramePipeline:
    """Runs `forward` (an aligned-input network: H, W multiples of `multiple`) on frames on `device`."""

    def __init__(self, forward: ForwardFn, multiple: int, device: torch.device | str = "cpu",
                 dtype: torch.dtype = torch.float32, channels_last: bool = False, cuda_graphs: bool = False,
                 logger: Callable[[str], None] | None = None, fit: GuidedFit = DEFAULT_FIT) -> None:
        self.forward = forward
        self.fit = fit  # fast mode's guided fit (the model file's, model_io)
        self.multiple = multiple
        self.device = torch.device(device)
        self.dtype = dtype
        self.channels_last = channels_last
        self.is_cuda = self.device.type == "cuda"
        self.cuda_graphs = cuda_graphs and self.is_cuda
        self.log = logger or (lambda _msg: None)
        self._states: OrderedDict[tuple, _State] = OrderedDict()

    def compute(self, dev_in: torch.Tensor, bgr: bool, low_hw: tuple[int, int] | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 H x W x 3 on the device -> (uint8 H x W x 3 in the same colour order, uint8 H x W map)."""
        h, w = dev_in.shape[:2]
        x = dev_in.permute(2, 0, 1).unsqueeze(0)
        if bgr:
            x = x.flip(1)
        x = x.to(torch.float32).mul_(1.0 / 255.0)
        low = area_downscale(x, low_hw) if low_hw else x  # as the CPU pipeline's OpenCV INTER_AREA
        lh, lw = low.shape[-2:]
        pad_h, pad_w = (-lh) % self.multiple, (-lw) % self.multiple
        net_in = F.pad(low, (0, pad_w, 0, pad_h), mode="replicate") if pad_h or pad_w else low
        net_in = net_in.to(self.dtype)
        if self.channels_last:
            net_in = net_in.contiguous(memory_format=torch.channels_last)
        out, em = self.forward(net_in)
        # Guided fit and output conversion in float32: variances in fp16 lose too much precision.
        out = out[..., :lh, :lw].float()
        em = em[..., :lh, :lw].float()
        if low_hw:
            out = guided_upsample(low, out, x, *self.fit)
            em = F.interpolate(em, size=(h, w), mode="bilinear", align_corners=False)
        out = out.clamp(0.0, 1.0).mul(255.0).add(0.5).to(torch.uint8)
        if bgr:
            out = out.flip(1)
        out_hwc = out[0].permute(1, 2, 0).contiguous()
        em_u8 = em.mean(dim=1)[0].clamp(0.0, 1.0).mul(255.0).add(0.5).to(torch.uint8)
        return out_hwc, em_u8

    def _state(self, h: int, w: int, bgr: bool, low_hw: tuple[int, int] | None) -> _State:
        key = (h, w, bgr, low_hw)
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
            return state
        state = _State(h, w, self.device, pinned=self.is_cuda)
        if self.cuda_graphs:
            self._capture(state, bgr, low_hw)
        self._states[key] = state
        while len(self._states) > MAX_CACHED_STATES:
            self._states.popitem(last=False)  # frees that resolution's graph and buffers
        return state

    def _capture(self, state: _State, bgr: bool, low_hw: tuple[int, int] | None) -> None:
        # Warm up on a side stream (cuDNN picks its algorithms, allocator pools fill), then capture.
        state.dev_in.random_(0, 256)
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(side), torch.inference_mode():
                for _ in range(3):
                    self.compute(state.dev_in, bgr, low_hw)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                state.dev_out, state.dev_map = self.compute(state.dev_in, bgr, low_hw)
            state.graph = graph
        except Exception as exc:  # noqa: BLE001 - capture is an optimisation: run eagerly instead
            torch.cuda.synchronize(self.device)
            state.graph, state.dev_out, state.dev_map = None, None, None
            self.log(f"CUDA graph capture failed ({type(exc).__name__}: {exc}); running this resolution eagerly")

    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
        h, w = frame.shape[:2]
        low_hw = None
        if short_side > 0:
            hl, wl = internal_size(h, w, short_side)
            if hl < h and wl < w:
                low_hw = (hl, wl)
        state = self._state(h, w, bgr, low_hw)
        np.copyto(state.host_in_np, frame)
        state.dev_in.copy_(state.host_in, non_blocking=self.is_cuda)
        if state.graph is not None:
            state.graph.replay()
            dev_out, dev_map = state.dev_out, state.dev_map
        else:
            with torch.inference_mode():
                dev_out, dev_map = self.compute(state.dev_in, bgr, low_hw)
        state.host_out.copy_(dev_out, non_blocking=self.is_cuda)
        if want_map:
            state.host_map.copy_(dev_map, non_blocking=self.is_cuda)
        if self.is_cuda:
            torch.cuda.current_stream(self.device).synchronize()
        return state.host_out.numpy().copy(), (state.host_map.numpy().copy() if want_map else None)

    def buffered_resolutions(self) -> int:
        """How many per-resolution states (buffers, CUDA graphs) are held now: at most MAX_CACHED_STATES."""
        return len(self._states)

    def clear(self) -> None:
        self._states.clear()
