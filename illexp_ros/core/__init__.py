"""The method: networks, exposure maps, degradation, losses, metrics, baselines. No ROS, no file I/O."""

from illexp_ros.core.degradation import (
    ExposureParams,
    ExposureSampler,
    degrade,
    degrade_mixed,
    mixed_exposure_mask,
)
from illexp_ros.core.exposure import classify_exposure, exposure_map, exposure_statistics
from illexp_ros.core.networks import (
    ACAB,
    AttentionNet,
    EnhancementNet,
    IllExpNet,
    build_model,
    parameter_count,
)

__all__ = [
    "ACAB",
    "AttentionNet",
    "EnhancementNet",
    "ExposureParams",
    "ExposureSampler",
    "IllExpNet",
    "build_model",
    "classify_exposure",
    "degrade",
    "degrade_mixed",
    "exposure_map",
    "exposure_statistics",
    "mixed_exposure_mask",
    "parameter_count",
]
