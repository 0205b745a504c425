"""Backend registry. Modules are imported on demand so a missing optional package (torch_tensorrt,
onnxruntime) only matters when that backend is asked for."""

from __future__ import annotations

import importlib

from illexp_ros.runtime.backends.base import Backend, Logger, Runner

# Fastest first: what `auto` tries in order.
AUTO_ORDER = ("tensorrt", "torch_cuda", "onnxruntime", "torch_cpu")
BACKEND_NAMES = (*AUTO_ORDER, "passthrough")

_CLASSES = {
    "tensorrt": ("illexp_ros.runtime.backends.tensorrt", "TensorRtBackend"),
    "torch_cuda": ("illexp_ros.runtime.backends.torch_cuda", "TorchCudaBackend"),
    "onnxruntime": ("illexp_ros.runtime.backends.onnxruntime", "OnnxRuntimeBackend"),
    "torch_cpu": ("illexp_ros.runtime.backends.torch_cpu", "TorchCpuBackend"),
    "passthrough": ("illexp_ros.runtime.backends.passthrough", "PassthroughBackend"),
}


def backend_class(name: str) -> type[Backend]:
    if name not in _CLASSES:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKEND_NAMES)}")
    module, cls = _CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def unavailable_reason(name: str) -> str | None:
    """None when backend `name` can run here, else why not (naming what to install)."""
    return backend_class(name).unavailable_reason()


def available_backends() -> list[str]:
    """Backends that can run on this machine, fastest first (passthrough always last)."""
    return [name for name in BACKEND_NAMES if unavailable_reason(name) is None]


__all__ = ["AUTO_ORDER", "BACKEND_NAMES", "Backend", "Logger", "Runner", "available_backends", "backend_class",
           "unavailable_reason"]
