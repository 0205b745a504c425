"""illexp_export: write a model file as ONNX, TorchScript or a Torch-TensorRT program for other runtimes.

    illexp_export --model mixed --format onnx --out mixed.onnx
    illexp_export --model runs/mixed/best.pt --format tensorrt --fp16 --min 320x240 --opt 640x480 \
                  --max 1920x1088 --out mixed_trt.ep

Every format takes the aligned network (IllExpNet.forward_aligned): input N x 3 x H x W float RGB in [0, 1]
with H and W multiples of the model's stride (8 for the shipped models; replicate-pad the bottom/right and crop
the outputs), outputs (corrected, exposure_map) of the same shape. ONNX has dynamic H/W (opset >= 17) and is
checked with ONNX Runtime against torch after writing. TensorRT needs an NVIDIA GPU with CUDA and
torch_tensorrt >= 2.11, and builds for the GPU it runs on. Errors: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from illexp_ros.core.networks import fold_batchnorm
from illexp_ros.runtime.backends.tensorrt import DEFAULT_PROFILE, check_profile, parse_size, trt_unavailable_reason
from illexp_ros.runtime.errors import EnhancerError, error_line
from illexp_ros.runtime.model_io import load_model
from illexp_ros.runtime.onnx_export import DEFAULT_OPSET, INPUT_NAME, AlignedForward, export_onnx

FORMATS = ("onnx", "torchscript", "tensorrt")
MIN_OPSET = 17  # dynamic H/W as exported here
# The highest opset the exporter the runtime uses (dynamo=False) writes; torch keeps it in a private module.
MAX_OPSET = getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20)


class ExportError(Exception):
    """A user-facing failure: printed as one line, exit status 2."""


def _size_arg(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def verify_onnx(path: Path, model, hw: tuple[int, int]) -> float:
    """Run the ONNX file in ONNX Runtime and torch on one random input; the max |difference| of the outputs."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, *hw), dtype=np.float32)
    got = session.run(None, {INPUT_NAME: x})
    with torch.inference_mode():
        ref = model.forward_aligned(torch.from_numpy(x))
    return max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, ref))


def export(args: argparse.Namespace) -> str:
    model, info = load_model(args.model)
    model = fold_batchnorm(model)  # as the runtime runs it: no BatchNorm variance to overflow fp16
    multiple = model.stride_multiple
    if args.format == "tensorrt":
        try:
            profile = check_profile((args.min, args.opt, args.max), multiple)
        except ValueError as exc:
            raise ExportError(str(exc)) from exc
    else:  # dynamic H/W: only the example the graph is traced with (--opt) matters
        (h, w), profile = args.opt, (args.min, args.opt, args.max)
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise ExportError(f"--opt must be a positive multiple of {multiple} in both sizes, got {w}x{h}")
    if args.format == "onnx" and not MIN_OPSET <= args.opset <= MAX_OPSET:
        # checked here: torch's exporter prints its whole graph before it refuses an opset it lacks
        raise ExportError(f"--opset must be in {MIN_OPSET}..{MAX_OPSET} (torch's TorchScript-based ONNX exporter), "
                          f"got {args.opset}")
    out = Path(args.out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder: give the file to write")
    if out.exists() and out.resolve() == Path(info["path"]).resolve():
        raise ExportError(f"--out {out} is the model file itself: give another file to write")
    out.parent.mkdir(parents=True, exist_ok=True)
    opt_hw = profile[1]

    if args.format == "onnx":
        if args.fp16:
            raise ExportError("--fp16 is not offered for ONNX (ONNX Runtime's CPU provider has no fp16 convs); "
                              "export fp32 and let the TensorRT execution provider run it in fp16")
        try:
            export_onnx(model, out, args.opset, example_hw=opt_hw)
        except Exception as exc:  # noqa: BLE001 - the exporter's errors (an opset it lacks) have no common type
            raise ExportError(f"ONNX export failed: {error_line(exc)}") from exc
        diff = verify_onnx(out, model, (min(opt_hw[0], 64), min(opt_hw[1], 96)))
        return (f"wrote {out} (ONNX opset {args.opset}, dynamic H/W, multiples of {multiple}; "
                f"ONNX Runtime vs torch max |diff| {diff:.2e})")

    if args.format == "torchscript":
        device = "cpu"
        if args.fp16:
            if not torch.cuda.is_available():
                raise ExportError("--fp16 TorchScript needs a CUDA GPU (torch.cuda.is_available() is False)")
            device = "cuda"
        wrapper = AlignedForward(model).eval().to(device)
        example = torch.rand(1, 3, *opt_hw, device=device)
        if args.fp16:
            wrapper, example = wrapper.half(), example.half()
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format
            traced = torch.jit.trace(wrapper, (example,), check_trace=False)
            try:
                torch.jit.save(traced, str(out))
            except RuntimeError as exc:  # torch.jit.save reports an unwritable file as a RuntimeError
                raise ExportError(f"cannot write {out}: {error_line(exc)}") from exc
        return f"wrote {out} (TorchScript, {'fp16' if args.fp16 else 'fp32'}, H/W multiples of {multiple})"

    reason = trt_unavailable_reason()
    if reason:
        raise ExportError(f"--format tensorrt needs an NVIDIA GPU with CUDA and torch_tensorrt: {reason}")
    if not args.fp16:
        print("illexp_export: note: the TensorRT program is built in fp16 (the only precision the runtime uses)",
              file=sys.stderr)
    from illexp_ros.runtime.backends.tensorrt import build_engine, profile_tag

    try:
        build_engine(model, profile, out)
    except EnhancerError:
        raise  # already one line (a broken install, a failed check of the saved file); main() prints it
    except Exception as exc:  # noqa: BLE001 - compiler and TensorRT errors have no common type, and are long
        raise ExportError(f"TensorRT build failed: {error_line(exc)}") from exc
    return f"wrote {out} (Torch-TensorRT fp16, profile {profile_tag(profile)} W x H, for this GPU and TensorRT)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="illexp_export", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="mixed", help="shipped name (mixed, mixed_fast, under, under_fast, over, "
                   "over_fast) or a model file (default: mixed)")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--fp16", action="store_true", help="half precision (torchscript on CUDA, tensorrt)")
    (h0, w0), (h1, w1), (h2, w2) = DEFAULT_PROFILE
    p.add_argument("--min", type=_size_arg, default=(h0, w0), help=f"smallest WxH (default {w0}x{h0})")
    p.add_argument("--opt", type=_size_arg, default=(h1, w1), help=f"WxH to optimise for (default {w1}x{h1})")
    p.add_argument("--max", type=_size_arg, default=(h2, w2), help=f"largest WxH (default {w2}x{h2})")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset ({MIN_OPSET}..{MAX_OPSET})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(export(args))
    except (ExportError, EnhancerError) as exc:
        print(f"illexp_export: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --out in a folder that cannot be made or written
        print(f"illexp_export: error: cannot write {args.out}: {error_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
