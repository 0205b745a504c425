"""illexp_bench: latency of the Enhancer per backend, mode and frame size, next to two floors (a numpy copy of
the frame and OpenCV CLAHE on it), on realistic frames (scikit-image photos degraded with eq. 5, BGR like a
ROS camera), warm-up excluded.

    illexp_bench --backend onnxruntime,torch_cpu --mode mixed --both --sizes 640x480 --frames 50 --json out.json

JSON: {"results": [{"backend", "fast", "size", "median_ms", "p99_ms", "fps", "peak_mem_mb"}],
       "floors": [{"name", "size", "median_ms"}], "machine": {...}}
peak_mem_mb is the process's peak resident memory (CPU backends) or torch's peak GPU memory (GPU backends).
--model-config '{"attention_width": 8, ...}' benchmarks a network of that shape with random weights (speed
only), to size a fast model before training it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from illexp_ros.core.baselines import clahe
from illexp_ros.core.degradation import ExposureParams, degrade, degrade_mixed, mixed_exposure_mask
from illexp_ros.runtime.backends.base import MAX_THREADS
from illexp_ros.runtime.backends.tensorrt import parse_size
from illexp_ros.runtime.cpu_pipeline import STAGE_ORDER, stage_profile
from illexp_ros.runtime.enhancer import MODES, Enhancer
from illexp_ros.runtime.errors import EnhancerError, error_line

GPU_BACKENDS = ("torch_cuda", "tensorrt")
UNDER = ExposureParams(alpha=1.0, beta=0.35, gamma=1.6)
OVER = ExposureParams(alpha=1.0, beta=1.8, gamma=0.6)


def realistic_frames(width: int, height: int, mode: str, count: int = 3, seed: int = 0) -> list[np.ndarray]:
    """`count` BGR uint8 frames: scikit-image photos resized to width x height and ill-exposed per mode."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(count):
        ref = cv2.resize(photos[i % len(photos)], (width, height), interpolation=cv2.INTER_AREA)
        ref = ref.astype(np.float32) / 255.0
        kind = mode if mode != "auto" else ("under", "over", "mixed")[i % 3]
        if kind == "under":
            img = degrade(ref, UNDER.alpha, UNDER.beta, UNDER.gamma)
        elif kind == "over":
            img = degrade(ref, OVER.alpha, OVER.beta, OVER.gamma)
        else:
            img = degrade_mixed(ref, UNDER, OVER, mixed_exposure_mask(height, width, rng))
        frames.append(cv2.cvtColor((img * 255.0 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR))
    return frames


def time_calls(fn, frames: list[np.ndarray], n: int, warmup: int, progress: tqdm | None = None) -> np.ndarray:
    """Per-call latencies in ms of fn(frame) over n calls after `warmup` untimed ones, cycling the frames."""
    for i in range(warmup):
        fn(frames[i % len(frames)])
    times = np.empty(n)
    for i in range(n):
        frame = frames[i % len(frames)]
        start = time.perf_counter()
        fn(frame)
        times[i] = (time.perf_counter() - start) * 1000.0
        if progress is not None:
            progress.update(1)
    return times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads or "library default",
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
    }


def random_model_file(config: dict, directory: str) -> str:
    import torch

    from illexp_ros.core.networks import build_model
    from illexp_ros.runtime.model_io import save_model

    torch.manual_seed(0)
    path = Path(directory) / "random.pt"
    save_model(path, build_model(config), config, "random", {"note": "random weights, speed only"})
    return str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="illexp_bench", description=__doc__.split("\n\n")[0],
        epilog="illexp_bench --node [...] benchmarks the node over DDS end to end, illexp_bench --node --soak "
               "SECONDS runs it for a long time (their own options: illexp_bench --node --help).")
    p.add_argument("--backend", default="auto", help="backend or comma list (auto, tensorrt, torch_cuda, "
                                                     "onnxruntime, torch_cpu, passthrough)")
    p.add_argument("--mode", default="mixed", choices=MODES)
    p.add_argument("--fast", action="store_true", help="fast mode only")
    p.add_argument("--both", action="store_true", help="full and fast mode")
    p.add_argument("--sizes", default="640x480,1280x720,1920x1080", help="comma list of WIDTHxHEIGHT")
    p.add_argument("--frames", type=int, default=50, help="timed frames per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed frames first (buffers, graphs, caches)")
    p.add_argument("--model", default="default", help="shipped name, model file, or 'default'")
    p.add_argument("--model-config", default=None,
                   help="JSON IllExpNet kwargs: benchmark a random-weight network of that shape instead")
    p.add_argument("--internal-short-side", type=int, default=0, help="fast mode internal short side (0 = the "
                   "size the fast model was trained at, from its file; else the backend's default)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch / onnxruntime (0 = default)")
    p.add_argument("--no-floors", action="store_true", help="skip the numpy-copy and CLAHE floors")
    p.add_argument("--profile", action="store_true",
                   help="also time each stage of the CPU frame pipeline (onnxruntime, torch_cpu) and print a table")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.frames < 1 or args.warmup < 0:
        p.error("--frames must be >= 1 and --warmup >= 0")
    if not 0 <= args.threads <= MAX_THREADS:
        p.error(f"--threads must be in 0..{MAX_THREADS}, got {args.threads}")
    try:
        args.size_list = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        p.error(str(exc))
    if not args.size_list:
        p.error("--sizes is empty")
    if args.model_config is not None:
        try:
            args.model_config = json.loads(args.model_config)
        except json.JSONDecodeError as exc:
            p.error(f"--model-config is not JSON: {exc}")
        if not isinstance(args.model_config, dict):
            p.error(f"--model-config must be a JSON object of IllExpNet keyword arguments, got {args.model_config!r}")
    if args.json is not None and Path(args.json).is_dir():  # found now, not after minutes of benchmarking
        p.error(f"--json {args.json} is a folder: give the file to write")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    fast_modes = [False, True] if args.both else [args.fast]
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    results, floors = [], []
    total = len(backends) * len(fast_modes) * len(args.size_list) * args.frames
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=total, desc="illexp_bench", unit="frame") as bar:
        model = random_model_file(args.model_config, tmp) if args.model_config is not None else args.model
        for backend in backends:
            # built in the first mode it times: `--fast` loaded the paper-sized model first (start-up time, and
            # the process peak memory the fast rows report)
            enh = Enhancer.from_model(model, backend=backend, mode=args.mode, fast=fast_modes[0],
                                      internal_short_side=args.internal_short_side, threads=args.threads,
                                      logger=lambda msg: tqdm.write(f"[runtime] {msg}"))
            try:
                for fast in fast_modes:
                    enh.fast = fast
                    for h, w in args.size_list:
                        frames = realistic_frames(w, h, args.mode)
                        on_gpu = enh.backend_name in GPU_BACKENDS
                        if on_gpu:
                            import torch

                            torch.cuda.reset_peak_memory_stats()
                        with stage_profile() if args.profile else nullcontext({}) as stages:
                            times = time_calls(lambda f, e=enh: e.enhance(f, "bgr"), frames, args.frames,
                                               args.warmup, bar)
                        mem = (torch.cuda.max_memory_allocated() / 2**20) if on_gpu else peak_rss_mb()
                        result = {
                            "backend": enh.backend_name, "fast": fast, "size": f"{w}x{h}",
                            "median_ms": float(np.median(times)), "p99_ms": float(np.percentile(times, 99)),
                            "fps": float(1000.0 / times.mean()), "peak_mem_mb": float(mem)}
                        if stages:  # the warm-up calls are in the lists too: the median of the last `frames`
                            result["stages_ms"] = {k: float(np.median(v[-args.frames:])) for k, v in stages.items()}
                        results.append(result)
            finally:
                enh.close()
    if not args.no_floors:
        for h, w in args.size_list:
            frame = realistic_frames(w, h, args.mode, count=1)[0]
            for name, fn in (("numpy_copy", np.copy), ("opencv_clahe", clahe)):
                times = time_calls(fn, [frame], max(args.frames, 20), args.warmup)
                floors.append({"name": name, "size": f"{w}x{h}", "median_ms": float(np.median(times))})
    return {"results": results, "floors": floors, "machine": machine_info(args.threads)}


def stage_table(report: dict[str, Any]) -> str:
    """Median milliseconds per pipeline stage (`--profile`); `other` = the median frame time minus the stages
    (the Enhancer's checks, locking, colour-order handling)."""
    rows = [r for r in report["results"] if r.get("stages_ms")]
    if not rows:
        return ""
    names: list[str] = []
    for r in rows:
        names += [k for k in r["stages_ms"] if k not in names]
    names.sort(key=lambda n: STAGE_ORDER.index(n) if n in STAGE_ORDER else len(STAGE_ORDER))
    lines = ["| backend | fast | size | " + " | ".join(names) + " | other | total |",
             "|---|---|---|" + "---:|" * (len(names) + 2)]
    for r in rows:
        st = r["stages_ms"]
        other = r["median_ms"] - sum(st.values())
        cells = " | ".join(f"{st[n]:.2f}" if n in st else "-" for n in names)
        lines.append(f"| {r['backend']} | {'yes' if r['fast'] else 'no'} | {r['size']} | {cells} | {other:.2f} | "
                     f"{r['median_ms']:.2f} |")
    return "\n".join(lines)


def summary_table(report: dict[str, Any]) -> str:
    lines = ["| backend | fast | size | median ms | p99 ms | FPS | peak MB |", "|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        lines.append(f"| {r['backend']} | {'yes' if r['fast'] else 'no'} | {r['size']} | {r['median_ms']:.1f} | "
                     f"{r['p99_ms']:.1f} | {r['fps']:.1f} | {r['peak_mem_mb']:.0f} |")
    for f in report["floors"]:
        lines.append(f"| floor: {f['name']} | - | {f['size']} | {f['median_ms']:.2f} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        report = run(args)
    except (EnhancerError, ValueError, OSError) as exc:
        print(f"illexp_bench: error: {exc}", file=sys.stderr)
        return 2
    print(summary_table(report))
    if args.profile:
        print(stage_table(report) or "no stage profile: only the CPU backends (onnxruntime, torch_cpu) record one")
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=2))
        except OSError as exc:  # the tables above are printed: only the file is missing
            print(f"illexp_bench: error: cannot write {args.json}: {error_line(exc)}", file=sys.stderr)
            return 2
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
