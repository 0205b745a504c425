"""tensorrt: the model compiled by Torch-TensorRT (fp16, dynamic H/W profile), engines cached on disk.

A TensorRT engine only runs on the GPU model and TensorRT version it was built with, so engines are built on
the target at first use (this can take minutes, and is logged) and cached under
<cache>/tensorrt/<model sha256>_<GPU>_trt<TensorRT version>_tt<Torch-TensorRT version>_<profile>_fp16.ep;
later starts load the saved program in seconds. The build path: torch.export with H and W as multiples of the
model's stride, torch_tensorrt.dynamo.compile with a min/opt/max Input profile, torch_tensorrt.save with the
same dynamic shapes, then the saved file is loaded (torch_tensorrt.load(path).module()) and run once at the
profile's smallest and largest size before it is kept. Cached files get the same check when loaded. Frames
whose padded size falls outside the profile raise an error that says how to widen it (ILLEXP_TRT_PROFILE) or to
use fast mode.

Torch-TensorRT versions: what is passed to compile() and save() is decided from torch_tensorrt.__version__
(compile_kwargs, save_supports_dynamic_shapes), because every release's functions take **kwargs and silently
swallow names they do not know. Releases before 2.11 cannot save dynamic shapes and are reported unavailable,
so `backend: auto` moves on to the next backend. This module is written against Torch-TensorRT's documented
API and source for 2.9 to 2.13; it is untested on GPU hardware here (the unit tests use stand-in modules).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit
from illexp_ros.core.networks import IllExpNet, fold_batchnorm
from illexp_ros.runtime.backends.base import Backend
from illexp_ros.runtime.backends.torch_cuda import cuda_unavailable_reason
from illexp_ros.runtime.cache import cache_dir
from illexp_ros.runtime.errors import BackendUnavailableError, EnhancerError

# (min, opt, max) network input sizes as (H, W); the max covers 1080p padded to a multiple of 8.
DEFAULT_PROFILE = ((32, 32), (480, 640), (1088, 1920))
PROFILE_ENV = "ILLEXP_TRT_PROFILE"

# From 2.10 compile() defaults to use_explicit_typing=True and asserts when enabled_precisions is also given.
EXPLICIT_TYPING_SINCE = (2, 10)
# torch_tensorrt.save names dynamic_shapes from 2.11; in 2.9 and 2.10 it falls into **kwargs (pytorch/TensorRT#3174).
DYNAMIC_SAVE_SINCE = (2, 11)
# What build_engine passes to torch_tensorrt.save; each must be a named parameter of the installed save().
SAVE_PARAMS = ("output_format", "arg_inputs", "dynamic_shapes", "retrace")

Profile = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def parse_size(text: str) -> tuple[int, int]:
    """'640x480' (W x H, like camera resolutions) -> (H, W)."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"size {text!r} is not WIDTHxHEIGHT (e.g. 640x480)")
    if int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise ValueError(f"size {text!r} must be at least 1x1")
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


def outside_profile(h: int, w: int, profile: Profile) -> str | None:
    """Why a network input of h x w cannot run on an engine built for `profile`, with what to do; None if it can.
    Fast mode is the way out only for inputs above the profile (it runs the network on a reduced copy)."""
    (h0, w0), _, (h2, w2) = profile
    if h0 <= h <= h2 and w0 <= w <= w2:
        return None
    fix = f"set {PROFILE_ENV}=MINWxMINH,OPTWxOPTH,MAXWxMAXH and restart"
    if h < h0 or w < w0:  # a tiny frame (fast mode leaves it as it is), or internal_short_side below the minimum
        fix += ", or raise internal_short_side if fast mode is on"
    else:
        fix += ", or use fast mode"
    return f"network input {w}x{h} is outside the TensorRT engine's profile {profile_tag(profile)} (W x H); {fix}"


def parse_version(text: str) -> tuple[int, int]:
    """'2.11.0+cu130', '2.12.0.dev20260101', '2.11.0a0+gitabc' -> (major, minor); ValueError if there is none."""
    m = re.match(r"\s*v?(\d+)\.(\d+)", text)
    if not m:
        raise ValueError(f"cannot read a version number from {text!r}")
    return int(m.group(1)), int(m.group(2))


def compile_kwargs(version: str) -> dict[str, Any]:
    """Keyword arguments for torch_tensorrt.dynamo.compile of Torch-TensorRT `version`, besides program and inputs.

    The engine must run in fp16. Before 2.10 TensorRT types the network weakly and enabled_precisions={half} is what
    lets it pick fp16 kernels. From 2.10 use_explicit_typing defaults to True and compile() asserts if
    enabled_precisions is given as well (2.13 drops the option): the fp16 weights and fp16 Input are then what make
    the engine fp16, so no precision option is passed at all."""
    import torch

    kwargs: dict[str, Any] = {"min_block_size": 1}  # short runs of ops go to TensorRT too, none are left to PyTorch
    if parse_version(version) < EXPLICIT_TYPING_SINCE:
        kwargs["enabled_precisions"] = {torch.half}
    return kwargs


def save_supports_dynamic_shapes(version: str) -> bool:
    """Whether torch_tensorrt.save of `version` takes dynamic_shapes. In 2.9 and 2.10 the name falls into **kwargs
    unused: the program is re-exported at the example's shape and the loaded file rejects every other size."""
    try:
        return parse_version(version) >= DYNAMIC_SAVE_SINCE
    except ValueError:
        return False


def named_parameters(signature: inspect.Signature) -> set[str]:
    """The parameter names a signature spells out. A **kwargs catch-all names nothing: every Torch-TensorRT
    release's save() has one, so its presence says nothing about what the function actually uses."""
    return {name for name, p in signature.parameters.items()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}


def version_unavailable_reason(version: str, save_signature: inspect.Signature) -> str | None:
    """None when Torch-TensorRT `version`, whose torch_tensorrt.save has `save_signature`, can build and save a
    dynamic-H/W engine; else why not, in one line. The version decides; the signature check only catches a build
    (a nightly, a vendor fork) that claims a version but lacks the parameters."""
    if not save_supports_dynamic_shapes(version):
        return (f"torch_tensorrt {version} cannot save a program with dynamic H/W (torch_tensorrt.save has no "
                f"dynamic_shapes before {DYNAMIC_SAVE_SINCE[0]}.{DYNAMIC_SAVE_SINCE[1]}, so the saved engine would "
                "reject every frame size but one, pytorch/TensorRT#3174); install torch-tensorrt >= "
                f"{DYNAMIC_SAVE_SINCE[0]}.{DYNAMIC_SAVE_SINCE[1]}, the release matching your torch")
    missing = [name for name in SAVE_PARAMS if name not in named_parameters(save_signature)]
    if missing:
        return (f"torch_tensorrt {version}: torch_tensorrt.save does not name {', '.join(missing)}, which this "
                "backend needs to save a dynamic-H/W program; install a torch-tensorrt release >= "
                f"{DYNAMIC_SAVE_SINCE[0]}.{DYNAMIC_SAVE_SINCE[1]}")
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def import_trt() -> tuple[Any, Any]:
    """(tensorrt, torch_tensorrt). A broken install (a missing libnvinfer, a wheel built for another torch) raises
    BackendUnavailableError in one line instead of a raw ImportError, so the backend counts as unavailable."""
    try:
        # torch_tensorrt first: it is the package the backend needs (and it imports tensorrt itself), so a
        # broken install is reported by the name the user installed.
        torch_tensorrt = importlib.import_module("torch_tensorrt")
        tensorrt = importlib.import_module("tensorrt")
    except Exception as exc:  # noqa: BLE001 - broken native installs raise OSError, RuntimeError, ... too
        raise BackendUnavailableError(
            f"torch_tensorrt is installed but does not import ({_one_line(exc)}); reinstall tensorrt and the "
            "torch-tensorrt release matching your torch") from exc
    return tensorrt, torch_tensorrt


def trt_unavailable_reason() -> str | None:
    """None when the backend can run here, else one line on what is missing. It imports torch_tensorrt (only once
    CUDA is there) so that a broken install or a release too old to save dynamic shapes is reported here, where
    `backend: auto` skips to the next backend, and not halfway through a build."""
    reason = cuda_unavailable_reason()
    if reason:
        return reason
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch_tensorrt is not installed (pip install torch-tensorrt, the release matching your torch)"
    try:
        _, torch_tensorrt = import_trt()
    except BackendUnavailableError as exc:
        return str(exc)
    version = str(getattr(torch_tensorrt, "__version__", "unknown"))
    try:
        signature = inspect.signature(torch_tensorrt.save)
    except (AttributeError, TypeError, ValueError) as exc:
        return f"torch_tensorrt {version} has no usable torch_tensorrt.save ({_one_line(exc)})"
    return version_unavailable_reason(version, signature)


def engine_path(sha256: str, profile: Profile) -> Path:
    import torch

    tensorrt, torch_tensorrt = import_trt()
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name()).strip("-")
    name = (f"{sha256[:16]}_{gpu}_trt{tensorrt.__version__}_tt{torch_tensorrt.__version__}_"
            f"{profile_tag(profile)}_fp16.ep")
    return cache_dir("tensorrt") / name


def export_program(model: IllExpNet, profile: Profile, device: str = "cuda",
                   half: bool = True) -> tuple[Any, Any, dict]:
    """torch.export of the aligned network with dynamic H and W inside `profile`.

    H and W are declared as multiples of the model's stride so export can prove the encoder/decoder shapes
    line up. Returns (ExportedProgram, example input at the opt size, dynamic_shapes)."""
    import torch

    from illexp_ros.runtime.onnx_export import AlignedForward

    m = model.stride_multiple
    (h0, w0), (h1, w1), (h2, w2) = check_profile(profile, m)
    # BatchNorm folded first (in float64): a running variance above 65504 would be infinite in fp16.
    wrapper = AlignedForward(fold_batchnorm(model)).eval().to(device)
    example = torch.rand(1, 3, h1, w1, device=device)
    if half:
        wrapper, example = wrapper.half(), example.half()
    h_blocks = torch.export.Dim("h_blocks", min=h0 // m, max=h2 // m)
    w_blocks = torch.export.Dim("w_blocks", min=w0 // m, max=w2 // m)
    dynamic_shapes = {"x": {2: m * h_blocks, 3: m * w_blocks}}
    with torch.no_grad():
        program = torch.export.export(wrapper, (example,), dynamic_shapes=dynamic_shapes, strict=False)
    return program, example, dynamic_shapes


def load_program(path: Path, profile: Profile, device: str = "cuda", half: bool = True) -> Any:
    """torch_tensorrt.load(path).module(), run once at the profile's smallest and largest size.

    A program saved at a fixed shape, or an engine that does not run on this GPU, fails here, while the backend
    is being loaded (where `backend: auto` can still fall back), rather than at the first frame of another size."""
    import torch

    _, torch_tensorrt = import_trt()
    module = torch_tensorrt.load(str(path)).module()
    dtype = torch.half if half else torch.float32
    with torch.inference_mode():
        for h, w in (profile[0], profile[2]):
            x = torch.rand(1, 3, h, w, device=device, dtype=dtype)
            out = module(x)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()  # surface asynchronous engine errors here, not at the next frame
            shapes = [tuple(t.shape) for t in out[:2]]
            if shapes != [(1, 3, h, w)] * 2:
                raise EnhancerError(f"TensorRT program {path} returned shapes {shapes} for a 1x3x{h}x{w} input")
    return module


def build_and_load(model: IllExpNet, profile: Profile, path: Path, device: str = "cuda",
                   half: bool = True) -> Any:
    """Compile `model` with Torch-TensorRT (fp16, dynamic H/W within `profile`), save it, check the saved file
    with load_program and only then move it to `path`. Returns the checked module. `device` and `half` exist for
    tests that stand in for torch_tensorrt on the CPU; the backend always builds on CUDA in fp16."""
    import torch

    _, torch_tensorrt = import_trt()
    version = str(getattr(torch_tensorrt, "__version__", "unknown"))
    reason = version_unavailable_reason(version, inspect.signature(torch_tensorrt.save))
    if reason:
        raise BackendUnavailableError(reason)
    program, example, dynamic_shapes = export_program(model, profile, device=device, half=half)
    (h0, w0), (h1, w1), (h2, w2) = profile
    inputs = [torch_tensorrt.Input(min_shape=(1, 3, h0, w0), opt_shape=(1, 3, h1, w1),
                                   max_shape=(1, 3, h2, w2), dtype=torch.half if half else torch.float32)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.ep")
    try:
        with torch.no_grad():
            compiled = torch_tensorrt.dynamo.compile(program, inputs=inputs, **compile_kwargs(version))
            # arg_inputs only (save asserts when inputs and arg_inputs are both given); retrace with the same
            # dynamic_shapes so the saved program keeps H and W symbolic.
            torch_tensorrt.save(compiled, str(tmp), output_format="exported_program", arg_inputs=[example],
                                dynamic_shapes=dynamic_shapes, retrace=True)
        module = load_program(tmp, profile, device=device, half=half)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return module


def build_engine(model: IllExpNet, profile: Profile, path: Path, device: str = "cuda", half: bool = True) -> Path:
    """Build, save and check a Torch-TensorRT program at `path` (see build_and_load); `path` is only written once
    the saved file loaded and ran at the profile's min and max sizes."""
    build_and_load(model, profile, path, device=device, half=half)
    return path


class TensorRtRunner:
    def __init__(self, module: Any, profile: Profile, multiple: int, logger,
                 fit: GuidedFit = DEFAULT_FIT) -> None:
        import torch

        from illexp_ros.runtime.torch_pipeline import TorchFramePipeline

        self.module = module
        self.profile = profile
        self.pipeline = TorchFramePipeline(self._forward, multiple, "cuda", torch.float16, channels_last=False,
                                           cuda_graphs=False, logger=logger, fit=fit)

    def _forward(self, x):
        h, w = x.shape[-2:]
        problem = outside_profile(h, w, self.profile)
        if problem:
            raise EnhancerError(problem)
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
        profile = profile_from_env(model.stride_multiple)
        path = engine_path(info["sha256"], profile)
        if not path.is_file():
            self.log(f"building a TensorRT engine for {info['path']} (profile {profile_tag(profile)}, fp16); "
                     f"the first build on this GPU may take several minutes; cached at {path}")
            start = time.monotonic()
            try:
                module = build_and_load(model, profile, path)
            except BackendUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001 - report the compiler's failure in one line
                raise EnhancerError(f"TensorRT build of {info['path']} failed: {_one_line(exc)}") from exc
            self.log(f"TensorRT engine built in {time.monotonic() - start:.0f} s (checked at the profile's "
                     "smallest and largest size)")
        else:
            self.log(f"loading cached TensorRT engine {path}")
            try:
                module = load_program(path, profile)
            except BackendUnavailableError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise EnhancerError(f"cannot load TensorRT engine {path} (delete it to rebuild): "
                                    f"{_one_line(exc)}") from exc
        return TensorRtRunner(module, profile, model.stride_multiple, self.log, info["guided_fit"])
