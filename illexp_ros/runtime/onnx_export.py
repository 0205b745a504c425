"""Export an IllExpNet to ONNX (dynamic H and W) and keep exports in a cache keyed by model hash + opset.

The graph is IllExpNet.forward_aligned: input "input" N x 3 x H x W float RGB in [0, 1] with H and W multiples
of the model's stride (callers replicate-pad; the runtime does); outputs "output" (corrected) and
"exposure_map", same shape. The legacy TorchScript-based exporter is used (dynamo=False) because the dynamo
exporter needs the extra onnxscript package and gives nothing more for this plain conv net.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from illexp_ros.core.networks import IllExpNet
from illexp_ros.runtime.cache import cache_dir

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAMES = ("output", "exposure_map")


class AlignedForward(torch.nn.Module):
    """forward = model.forward_aligned (no padding inside, so the traced graph has no shape arithmetic)."""

    def __init__(self, model: IllExpNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_aligned(x)


def export_onnx(model: IllExpNet, path: str | os.PathLike, opset: int = DEFAULT_OPSET,
                example_hw: tuple[int, int] = (64, 64), half: bool = False) -> Path:
    """Write `model` as ONNX to `path` (atomically: a concurrent reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # eval() on the wrapper too: the exporter exports the wrapper's training flag, and a training-mode
    # BatchNorm would normalise with batch statistics.
    wrapper = AlignedForward(model).eval()
    param = next(model.parameters())
    example = torch.rand(1, 3, *example_hw, dtype=param.dtype, device=param.device)
    if half:
        wrapper = wrapper.half()
        example = example.half()
    axes = {2: "height", 3: "width"}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
        torch.onnx.export(
            wrapper, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES), dynamic_axes={n: axes for n in (INPUT_NAME, *OUTPUT_NAMES)},
            do_constant_folding=True,
        )
    os.replace(tmp, path)
    return path


def cached_onnx(model: IllExpNet, sha256: str, opset: int = DEFAULT_OPSET) -> tuple[Path, bool]:
    """(path of the cached ONNX export of a model file with this sha256, whether it was exported now)."""
    path = cache_dir("onnx") / f"{sha256[:20]}_opset{opset}.onnx"
    if path.is_file():
        return path, False
    return export_onnx(model, path, opset), True
