"""torch_cpu: the PyTorch model in eager mode on the CPU, inside the shared numpy/OpenCV frame pipeline."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit
from illexp_ros.core.networks import IllExpNet, fold_batchnorm
from illexp_ros.runtime.backends.base import Backend
from illexp_ros.runtime.cpu_pipeline import CpuPipeline


class TorchCpuRunner:
    def __init__(self, model: IllExpNet, workers: int = 0, fit: GuidedFit = DEFAULT_FIT) -> None:
        import torch

        self.torch = torch
        self.model = model.eval()
        self.pipeline = CpuPipeline(self._network, model.stride_multiple, workers, fit)

    def _network(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.torch.inference_mode():
            out, em = self.model.forward_aligned(self.torch.from_numpy(x))  # shares x's memory
        return out.numpy(), em.numpy()

    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.pipeline.run(frame, bgr, want_map, short_side)

    def close(self) -> None:
        self.pipeline.clear()


class TorchCpuBackend(Backend):
    name = "torch_cpu"
    default_short_side = 64  # see README "Benchmark": what reaches 60 FPS at 640x480 on a 2-core CPU

    @staticmethod
    def unavailable_reason() -> str | None:
        if importlib.util.find_spec("torch") is None:
            return "torch is not installed (pip install torch; see requirements.txt for the pinned version)"
        return None

    def load(self, model: IllExpNet | None, info: dict[str, Any]) -> TorchCpuRunner:
        if self.threads > 0:
            import torch

            torch.set_num_threads(self.threads)  # process-wide in torch
        # BatchNorm folded into the convs: exact up to rounding and fewer passes.
        return TorchCpuRunner(fold_batchnorm(model), self.threads, info["guided_fit"])
