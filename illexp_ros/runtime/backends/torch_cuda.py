"""torch_cuda: the PyTorch model on an NVIDIA GPU in fp16 and channels_last, pre/post-processing on the GPU,
page-locked host buffers and one CUDA graph per resolution (see runtime/torch_pipeline.py)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit
from illexp_ros.core.networks import IllExpNet, fold_batchnorm
from illexp_ros.runtime.backends.base import Backend


def cuda_unavailable_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install torch with CUDA support)"
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        return (f"no CUDA device (torch {torch.__version__}, {build}); install a CUDA build of torch "
                "and an NVIDIA driver")
    return None


class TorchCudaRunner:
    def __init__(self, model: IllExpNet, device: str, cuda_graphs: bool, logger,
                 fit: GuidedFit = DEFAULT_FIT) -> None:
        import torch

        from illexp_ros.runtime.torch_pipeline import TorchFramePipeline

        # BatchNorm folded first (in float64): a running variance above 65504 would be infinite in fp16.
        self.model = fold_batchnorm(model).to(device).half().to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True  # fixed shapes per graph: let cuDNN pick the fastest kernels
        self.pipeline = TorchFramePipeline(self.model.forward_aligned, model.stride_multiple, device,
                                           torch.float16, channels_last=True, cuda_graphs=cuda_graphs,
                                           logger=logger, fit=fit)

    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.pipeline.run(frame, bgr, want_map, short_side)

    def close(self) -> None:
        self.pipeline.clear()


class TorchCudaBackend(Backend):
    name = "torch_cuda"
    default_short_side = 256
    device = "cuda"

    @staticmethod
    def unavailable_reason() -> str | None:
        return cuda_unavailable_reason()

    def load(self, model: IllExpNet | None, info: dict[str, Any]) -> TorchCudaRunner:
        return TorchCudaRunner(model, self.device, cuda_graphs=True, logger=self.log,
                               fit=info["guided_fit"])

    def close(self) -> None:
        import torch

        torch.cuda.empty_cache()
