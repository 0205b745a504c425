"""onnxruntime: the model exported to ONNX (cached per model hash + opset) run by ONNX Runtime.

CPU execution provider always; the CUDA and TensorRT execution providers are put first when this
onnxruntime build has them (onnxruntime-gpu). Inputs and outputs are bound to numpy buffers (IOBinding), so
ONNX Runtime writes straight into memory the frame pipeline reuses.
"""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit
from illexp_ros.core.networks import IllExpNet
from illexp_ros.runtime.backends.base import Backend
from illexp_ros.runtime.cache import cache_dir
from illexp_ros.runtime.cpu_pipeline import MAX_CACHED_RESOLUTIONS, CpuPipeline
from illexp_ros.runtime.errors import EnhancerError
from illexp_ros.runtime.onnx_export import DEFAULT_OPSET, INPUT_NAME, OUTPUT_NAMES, cached_onnx, export_to_cache


class OrtRunner:
    def __init__(self, session: Any, stride_multiple: int, workers: int = 0, fit: GuidedFit = DEFAULT_FIT) -> None:
        self.session = session
        self._bindings: OrderedDict[tuple, tuple] = OrderedDict()
        self.pipeline = CpuPipeline(self._network, stride_multiple, workers, fit)

    def _network(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        key = (x.shape, x.ctypes.data)
        entry = self._bindings.get(key)
        if entry is None:
            out = np.empty(x.shape, np.float32)
            em = np.empty(x.shape, np.float32)
            binding = self.session.io_binding()
            shape = list(x.shape)
            binding.bind_input(INPUT_NAME, "cpu", 0, np.float32, shape, x.ctypes.data)
            binding.bind_output(OUTPUT_NAMES[0], "cpu", 0, np.float32, shape, out.ctypes.data)
            binding.bind_output(OUTPUT_NAMES[1], "cpu", 0, np.float32, shape, em.ctypes.data)
            entry = (binding, x, out, em)  # x kept referenced: the binding points into its memory
            self._bindings[key] = entry
            while len(self._bindings) > MAX_CACHED_RESOLUTIONS:  # as many as the pipeline has inputs
                self._bindings.popitem(last=False)
        else:
            self._bindings.move_to_end(key)
        binding, _, out, em = entry
        self.session.run_with_iobinding(binding)
        return out, em

    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
        return self.pipeline.run(frame, bgr, want_map, short_side)

    def close(self) -> None:
        self._bindings.clear()
        self.pipeline.clear()


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    default_short_side = 64  # see README "Benchmark": what reaches 60 FPS at 640x480 on a 2-core CPU

    @staticmethod
    def unavailable_reason() -> str | None:
        for package, pip_name in (("onnxruntime", "onnxruntime"), ("onnx", "onnx")):
            if importlib.util.find_spec(package) is None:
                return f"{package} is not installed (pip install {pip_name}; see requirements.txt)"
        return None

    def providers(self) -> list:
        import onnxruntime as ort

        available = ort.get_available_providers()
        chosen: list = []
        if "TensorrtExecutionProvider" in available:
            chosen.append(("TensorrtExecutionProvider", {
                "trt_fp16_enable": True, "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache_dir("ort_tensorrt"))}))
        if "CUDAExecutionProvider" in available:
            chosen.append("CUDAExecutionProvider")
        chosen.append("CPUExecutionProvider")
        return chosen

    def _session(self, path: Path) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if self.threads > 0:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        # ONNX Runtime's worker threads spin for a while after each run by default; between network runs the
        # frame pipeline's own OpenCV / numpy passes need those cores (measured: fast mode at 1280x720 on two
        # cores, see README "Benchmark").
        options.add_session_config_entry("session.force_spinning_stop", "1")
        return ort.InferenceSession(str(path), options, providers=self.providers())

    def load(self, model: IllExpNet | None, info: dict[str, Any]) -> OrtRunner:
        path, exported = cached_onnx(model, info["sha256"], DEFAULT_OPSET, source=info.get("path"))
        if exported:
            self.log(f"exported {info['path']} to ONNX (opset {DEFAULT_OPSET}): {path}")
        try:
            session = self._session(path)
        except Exception as first:  # noqa: BLE001 - a damaged cache entry: export again once
            self.log(f"cached ONNX file {path} did not load ({type(first).__name__}); exporting it again")
            export_to_cache(model, path, DEFAULT_OPSET)
            try:
                session = self._session(path)
            except Exception as exc:  # noqa: BLE001
                raise EnhancerError(f"onnxruntime cannot load the ONNX export {path} of {info['path']}: "
                                    f"{str(exc).splitlines()[0]}") from exc
        self.log(f"onnxruntime {info['name']}: providers {', '.join(session.get_providers())}")
        return OrtRunner(session, model.stride_multiple, self.threads, info["guided_fit"])
