"""Export an IllExpNet to ONNX (dynamic H and W) and keep exports in a cache keyed by model hash + opset.

The graph is IllExpNet.forward_aligned: input "input" N x 3 x H x W float RGB in [0, 1] with H and W multiples
of the model's stride (callers replicate-pad; the runtime does); outputs "output" (corrected) and
"exposure_map", same shape. The legacy TorchScript-based exporter is used (dynamo=False) because the dynamo
exporter needs the extra onnxscript package and gives nothing more for this plain conv net.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

from illexp_ros.core.networks import IllExpNet, fold_batchnorm
from illexp_ros.parent_death import parent_already_gone
from illexp_ros.runtime.cache import CACHE_ENV, cache_dir
from illexp_ros.runtime.errors import EnhancerError

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
    # The graph is the BatchNorm-folded network, as every backend runs it (idempotent on a folded one).
    wrapper = AlignedForward(fold_batchnorm(model)).eval()
    param = next(model.parameters())
    example = torch.rand(1, 3, *example_hw, dtype=param.dtype, device=param.device)
    if half:
        wrapper = wrapper.half()
        example = example.half()
    axes = {2: "height", 3: "width"}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer warnings
            torch.onnx.export(
                wrapper, (example,), str(tmp), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES), dynamic_axes={n: axes for n in (INPUT_NAME, *OUTPUT_NAMES)},
                do_constant_folding=True,
            )
        os.replace(tmp, path)
    finally:
        if tmp.is_file():  # a failed export or rename: no half-written file left beside the output
            tmp.unlink()
    return path


EXPORT_TIMEOUT_S = 600.0


def cached_onnx(model: IllExpNet, sha256: str, opset: int = DEFAULT_OPSET,
                source: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """(path of the cached ONNX export of a model file with this sha256, whether it was exported now).

    With `source` (the model file `model` was loaded from) a missing export is made in a child process at low
    priority: the export holds the GIL for tens of milliseconds at a time, which would stall the frames a
    running node keeps correcting meanwhile (a `mode` change loads models while the camera streams). The
    child exports exactly what this process would (load, fold BatchNorm, export); if it fails, the export is
    made here."""
    path = cache_dir("onnx") / f"{sha256[:20]}_opset{opset}.onnx"
    if path.is_file():
        return path, False
    remove_stale_temporaries(path)
    if source is not None and export_in_child(Path(source), path, opset):
        return path, True
    return export_to_cache(model, path, opset), True


def remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of `path` that a killed exporter left behind (SIGKILL, the OOM killer, the export
    timeout), so they do not pile up in the cache. The exporter writes its temporary file at the very end and
    renames it at once, so one older than EXPORT_TIMEOUT_S belongs to no export still running, whichever process
    (or container sharing the folder) made it; its pid alone could not say that across PID namespaces."""
    cutoff = time.time() - EXPORT_TIMEOUT_S
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                tmp.unlink()
        except OSError:  # removed meanwhile by another process, or not ours to remove: not this export's concern
            pass


def export_to_cache(model: IllExpNet, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """export_onnx into the cache; EnhancerError (naming the folder and CACHE_ENV) when it cannot be written."""
    try:
        return export_onnx(model, path, opset)
    except OSError as exc:
        raise EnhancerError(f"cannot write the ONNX export {path.name} to the cache folder {path.parent} "
                            f"({exc.strerror or exc}); set {CACHE_ENV} to a writable folder") from exc


def export_in_child(source: Path, path: Path, opset: int) -> bool:
    """Run `python -m illexp_ros.runtime.onnx_export SOURCE PATH` (nice 10, one thread); True if PATH is there.

    The child ends when this process does (see end_with_parent): a node stopped mid-export leaves no process
    behind to finish the export on its own."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-m", "illexp_ros.runtime.onnx_export", str(source), str(path),
                               "--opset", str(opset), "--parent-pid", str(os.getpid())], env=env,
                              capture_output=True, text=True, timeout=EXPORT_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and path.is_file()


def end_with_parent(parent_pid: int) -> None:
    """Exit (as on SIGTERM) once `parent_pid` is gone, so an export outlives no node.

    Linux: the kernel sends SIGTERM when the parent ends (illexp_ros/parent_death.py); the handler turns it into
    SystemExit so export_onnx's cleanup removes its temporary file. The parent check after prctl covers a parent
    that ended while this process was still importing torch. Elsewhere nothing is set up (the export finishes)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if parent_already_gone(parent_pid):
        sys.exit(143)


def main(argv: list[str] | None = None) -> int:
    """The child of export_in_child: MODEL_FILE OUT.onnx [--opset N]."""
    import argparse

    from illexp_ros.runtime.model_io import load_model

    p = argparse.ArgumentParser(description="export a model file to ONNX as the runtime runs it (BatchNorm folded)")
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process ends (export_in_child)")
    args = p.parse_args(argv)
    if args.parent_pid is not None:
        end_with_parent(args.parent_pid)
    try:
        os.nice(10)
    except OSError:
        pass
    torch.set_num_threads(1)
    model, _ = load_model(args.model)
    export_onnx(fold_batchnorm(model), args.out, args.opset)
    return 0


if __name__ == "__main__":
    sys.exit(main())
