"""tensorrt: the model compiled by Torch-TensorRT (fp16, dynamic H/W profile), engines cached on disk.

A TensorRT engine only runs on the GPU model and TensorRT version it was built with, so engines are built on
the target at first use (this can take minutes, and is logged) and cached under
<cache>/tensorrt/<model sha256>_<GPU>_trt<TensorRT version>_tt<Torch-TensorRT version>_<profile>_fp16.ep;
later starts load the saved program in seconds. The build path: torch.export with H and W as multiples of the
model's stride, torch_tensorrt.dynamo.compile with a min/opt/max Input profile, torch_tensorrt.save; loading
is torch_tensorrt.load(path).module(). Frames whose padded size falls outside the profile raise an error that
says how to widen it (ILLEXP_TRT_PROFILE) or to use fast mode.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from illexp_ros.core.networks import IllExpNet
from illexp_ros.runtime.backends.base import Backend
from illexp_ros.runtime.backends.torch_cuda import cuda_unavailable_reason
from illexp_ros.runtime.cache import cache_dir
from illexp_ros.runtime.errors import EnhancerError

# (min, opt, max) network input sizes as (H, W); the max covers 1080p padded to a multiple of 8.
DEFAULT_PROFILE = ((32, 32), (480, 640), (1088, 1920))
PROFILE_ENV = "ILLEXP_TRT_PROFILE"

Profile = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' (W x H, like camera resolutions) -> (H, W)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 640x480)")
    return int(m.group(2)), int(m.group(1))


def check_profile(profile: Profile, multiple: int) -> Profile:
    (h0, w0), (h1, w1), (h2, w2) = profile
    if not (h0 <= h1 <= h2 and w0 <= w1 <= w2):
        raise ValueError(f"TensorRT profile needs min <= opt <= max, got {profile}")
    for h, w in profile:
        if h % multiple or w % multiple or h <= 0 or w <= 0:
            raise ValueError(f"TensorRT profile sizes must be positive multiples of {multiple}, got {w}x{h}")
    return profile


def profile_from_env(multiple: int) -> Profile:
    text = os.environ.get(PROFILE_ENV)
    if not text:
        return DEFAULT_PROFILE
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError(f"{PROFILE_ENV}={text!r}: expected MINWxMINH,OPTWxOPTH,MAXWxMAXH")
    return check_profile(tuple(parse_size(p) for p in parts), multiple)  # type: ignore[arg-type]


def profile_tag(profile: Profile) -> str:
    return "-".join(f"{w}x{h}" for h, w in profile)


def trt_unavailable_reason() -> str | None:
    reason = cuda_unavailable_reason()
    if reason:
        return reason
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt is not installed (pip install torch-tensorrt, the release matching your torch)"
    return None


def engine_path(sha256: str, profile: Profile) -> Path:
    import tensorrt
    import torch
    import torch_tensorrt

    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-")
    name = (f"{sha256[:16]}_{gpu}_trt{tensorrt.__version__}_tt{torch_tensorrt.__version__}_"
            f"{profile_tag(profile)}_fp16.ep")
    return cache_dir("tensorrt") / name


def _kwargs_accepted(fn: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The subset of kwargs that fn's signature names (Torch-TensorRT renamed some between releases)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def export_program(model: IllExpNet, profile: Profile, device: str = "cuda",
                   half: bool = True) -> tuple[Any, Any, dict]:
    """torch.export of the aligned network with dynamic H and W inside `profile`.

    H and W are declared as multiples of the model's stride so export can prove the encoder/decoder shapes
    line up. Returns (ExportedProgram, example input at the opt size, dynamic_shapes)."""
    import torch

    from illexp_ros.runtime.onnx_export import AlignedForward

    m = model.stride_multiple
    (h0, w0), (h1, w1), (h2, w2) = check_profile(profile, m)
    wrapper = AlignedForward(copy.deepcopy(model)).eval().to(device)
    example = torch.rand(1, 3, h1, w1, device=device)
    if half:
        wrapper, example = wrapper.half(), example.half()
    h_blocks = torch.export.Dim("h_blocks", min=h0 // m, max=h2 // m)
    w_blocks = torch.export.Dim("w_blocks", min=w0 // m, max=w2 // m)
    dynamic_shapes = {"x": {2: m * h_blocks, 3: m * w_blocks}}
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    return program, example, dynamic_shapes


def build_engine(model: IllExpNet, profile: Profile, path: Path) -> Path:
    """Compile `model` with Torch-TensorRT (fp16, dynamic H/W within `profile`) and save it to `path`."""
    import torch
    import torch_tensorrt

    program, example, dynamic_shapes = export_program(model, profile)
    (h0, w0), (h1, w1), (h2, w2) = profile
    inputs = [torch_tensorrt.Input(min_shape=(1, 3, h0, w0), opt_shape=(1, 3, h1, w1),
                                   max_shape=(1, 3, h2, w2), dtype=torch.half)]
    with torch.no_grad():
        compiled = torch_tensorrt.dynamo.compile(program, inputs=inputs, enabled_precisions={torch.half},
                                                 min_block_size=1)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.ep")
        save_kwargs = _kwargs_accepted(torch_tensorrt.save, {
            "output_format": "exported_program", "arg_inputs": [example], "inputs": [example],
            "dynamic_shapes": dynamic_shapes, "retrace": True})
        if "arg_inputs" in save_kwargs and "inputs" in save_kwargs:
            del save_kwargs["inputs"]
        torch_tensorrt.save(compiled, str(tmp), **save_kwargs)
    os.replace(tmp, path)
    return path


class TensorRtRunner:
    def __init__(self, module: Any, profile: Profile, multiple: int, logger) -> None:
        import torch

        from illexp_ros.runtime.torch_pipeline import TorchFramePipeline

        self.module = module
        self.profile = profile
        self.pipeline = TorchFramePipeline(self._forward, multiple, "cuda", torch.float16, channels_last=False,
                                           cuda_graphs=False, logger=logger)

    def _forward(self, x):
        h, w = x.shape[-2:]
        (h0, w0), _, (h2, w2) = self.profile
        if not (h0 <= h <= h2 and w0 <= w <= w2):
            raise EnhancerError(
                f"network input {w}x{h} is outside the TensorRT engine's profile {profile_tag(self.profile)} "
                f"(W x H); set {PROFILE_ENV}=MINWxMINH,OPTWxOPTH,MAXWxMAXH and restart, or use fast mode")
        out = self.module(x)
        return out[0], out[1]

    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.pipeline.run(frame, bgr, want_map, short_side)

    def close(self) -> None:
        self.pipeline.clear()


class TensorRtBackend(Backend):
    name = "tensorrt"
    default_short_side = 256

    @staticmethod
    def unavailable_reason() -> str | None:
        return trt_unavailable_reason()

    def load(self, model: IllExpNet | None, info: dict[str, Any]) -> TensorRtRunner:
        import torch_tensorrt

        profile = profile_from_env(model.stride_multiple)
        path = engine_path(info["sha256"], profile)
        if not path.is_file():
            self.log(f"building a TensorRT engine for {info['path']} (profile {profile_tag(profile)}, fp16); "
                     f"the first build on this GPU may take several minutes; cached at {path}")
            start = time.monotonic()
            try:
                build_engine(model, profile, path)
            except Exception as exc:  # noqa: BLE001 - report the compiler's failure in one line
                raise EnhancerError(f"TensorRT build of {info['path']} failed: {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
            self.log(f"TensorRT engine built in {time.monotonic() - start:.0f} s")
        else:
            self.log(f"loading cached TensorRT engine {path}")
        try:
            module = torch_tensorrt.load(str(path)).module()
        except Exception as exc:  # noqa: BLE001
            raise EnhancerError(f"cannot load TensorRT engine {path} (delete it to rebuild): "
                                f"{type(exc).__name__}: {exc}") from exc
        return TensorRtRunner(module, profile, model.stride_multiple, self.log)
