"""Loading models and running them on a backend behind one interface (frames in, frames out). No ROS here.

    from illexp_ros.runtime import Enhancer
    enh = Enhancer.from_model("default", backend="auto", mode="mixed", fast=False)
    out = enh.enhance(frame_bgr, color_order="bgr")
"""

from illexp_ros.runtime.backends import BACKEND_NAMES, available_backends
from illexp_ros.runtime.enhancer import MODES, Enhancer
from illexp_ros.runtime.errors import BackendUnavailableError, EnhancerError, ModelLoadError

__all__ = [
    "BACKEND_NAMES",
    "MODES",
    "BackendUnavailableError",
    "Enhancer",
    "EnhancerError",
    "ModelLoadError",
    "available_backends",
]
