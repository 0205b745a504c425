"""The node's parameters: names, defaults, descriptors, and validation of run-time changes.

illexp_stereo_node has all of them and STEREO_PARAMETERS' own two (read-only).

Read-only parameters (model, backend, threads, preload, qos, input_transport, internal_short_side,
output_encoding, publish_compressed, republish_camera_info) are fixed at start-up: changing them would mean
reloading the model or recreating topics. mode, fast, max_rate_hz, publish_exposure_map, strength, level_smoothing,
exposure_compensation and the compressed output's compressed_format, jpeg_quality and png_level can be changed
while running and are applied between frames (mode and fast once what they need is loaded, off the frame path).
"""

from __future__ import annotations

from dataclasses import dataclass

from rcl_interfaces.msg import IntegerRange, ParameterDescriptor

from illexp_ros.ros.node.image_conversion import (
    COMPRESSED_FORMATS,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_PNG_LEVEL,
    JPEG_QUALITY_RANGE,
    PNG_LEVEL_RANGE,
    SUPPORTED_ENCODINGS,
)
from illexp_ros.ros.node.qos import QOS_NAMES
from illexp_ros.ros.node.stereo_pairing import MAX_SYNC_QUEUE, MAX_SYNC_TOLERANCE_S
from illexp_ros.runtime.backends.base import MAX_THREADS
from illexp_ros.runtime.correction_strength import DEFAULT_STRENGTH
from illexp_ros.runtime.exposure_compensation import MAX_STOPS
from illexp_ros.runtime.level_smoothing import MAX_WEIGHT

MODES = ("under", "over", "mixed", "auto")
BACKENDS = ("auto", "tensorrt", "torch_cuda", "onnxruntime", "torch_cpu", "passthrough")
INPUT_TRANSPORTS = ("raw", "compressed")
MAX_RATE_HZ = 1000.0
MAX_SHORT_SIDE = 4096


@dataclass(frozen=True)
class ParameterSpec:
    default: object
    description: str
    read_only: bool
    choices: tuple[str, ...] = ()
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(description=self.description, read_only=self.read_only)
        if self.choices:
            d.additional_constraints = "one of: " + ", ".join(c or "''" for c in self.choices)
        if self.int_range:
            d.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=0)]
        if self.float_range:
            # dynamic typing so `ros2 param set ... max_rate_hz 10` (an integer) is accepted too; the range is
            # checked by validate_change.
            d.dynamic_typing = True
            d.additional_constraints = f"a number in [{self.float_range[0]}, {self.float_range[1]}]"
        return d


PARAMETERS: dict[str, ParameterSpec] = {
    "model": ParameterSpec(
        "default", "Model: 'default' (the shipped under / over / mixed models picked per mode), a shipped name "
        "(under, over, mixed, mixed_fast, under_fast, over_fast) or a path to a model file (used for every mode). "
        "In fast mode NAME_fast.pt beside the chosen file is used where there is one.", read_only=True),
    "mode": ParameterSpec(
        "mixed", "Which correction: under, over, mixed, or auto (classify each frame, leave well-exposed "
        "frames unchanged).", read_only=False, choices=MODES),
    "backend": ParameterSpec(
        "auto", "Inference backend; auto picks the fastest available. passthrough copies frames (measures "
        "the transport floor).", read_only=True, choices=BACKENDS),
    "fast": ParameterSpec(
        True, "Run the network at a reduced internal resolution and apply its correction at full "
        "resolution (guided upsampling). Much faster on CPU.", read_only=False),
    "threads": ParameterSpec(
        0, "CPU threads of the CPU backends (the network's and the fast path's full-resolution passes); "
        "0 = all cores. Leave cores to the rest of the robot with a lower value.",
        read_only=True, int_range=(0, MAX_THREADS)),
    "preload": ParameterSpec(
        False, "Load the models of every mode, fast and full, at start-up: a later mode / fast change then "
        "switches between two frames at once instead of after loading in the background.", read_only=True),
    "internal_short_side": ParameterSpec(
        0, "Short side in pixels of the network input in fast mode; 0 = the size the fast model was trained at "
        "(its file's meta), else the backend's default.",
        read_only=True, int_range=(0, MAX_SHORT_SIDE)),
    "qos": ParameterSpec(
        "reliable", "QoS of the image topics (keep-last 1): reliable or sensor_data (best effort).",
        read_only=True, choices=QOS_NAMES),
    "input_transport": ParameterSpec(
        "raw", "raw: subscribe sensor_msgs/Image on `image`; compressed: sensor_msgs/CompressedImage "
        "(jpeg/png) on `<image>/compressed`.", read_only=True, choices=INPUT_TRANSPORTS),
    "max_rate_hz": ParameterSpec(
        0.0, "Most frames per second to correct; extra frames are dropped and counted. 0 = unlimited.",
        read_only=False, float_range=(0.0, MAX_RATE_HZ)),
    "strength": ParameterSpec(
        DEFAULT_STRENGTH, "How much of the correction to publish, 0.0..1.0: output = input + strength x (corrected - "
        "input); 1 = the network's correction, 0 = the input unchanged (the network is then not run unless "
        "publish_exposure_map is on). Applied before level_smoothing (runtime/correction_strength.py).",
        read_only=False, float_range=(0.0, 1.0)),
    "level_smoothing": ParameterSpec(
        0.9, "Steady brightness: weight of the past in an exponential average of the correction's overall gain "
        "(per frame; 0 = off, each frame as the network corrects it). Follows camera exposure changes at once; "
        "a single frame is never changed (runtime/level_smoothing.py).",
        read_only=False, float_range=(0.0, MAX_WEIGHT)),
    "exposure_compensation": ParameterSpec(
        0.0, "Brightness preference for corrected/image, in stops (EV) relative to the level the network chose: "
        "+1 doubles linear light, -1 halves it; 0 = as corrected (runtime/exposure_compensation.py).",
        read_only=False, float_range=(-MAX_STOPS, MAX_STOPS)),
    "publish_exposure_map": ParameterSpec(
        False, "Also publish the attention network's exposure map (mono8) on `exposure_map`.",
        read_only=False),
    "output_encoding": ParameterSpec(
        "", "Encoding of corrected/image; '' = the input's encoding (bgr8 for compressed input).",
        read_only=True, choices=("", *SUPPORTED_ENCODINGS)),
    "publish_compressed": ParameterSpec(
        True, "Also offer the corrected frames as sensor_msgs/CompressedImage on `corrected/image/compressed` "
        "(the image_transport name); frames are encoded only while that topic has subscribers.",
        read_only=True),
    "compressed_format": ParameterSpec(
        "jpeg", "Format of corrected/image/compressed: jpeg or png.", read_only=False,
        choices=COMPRESSED_FORMATS),
    "jpeg_quality": ParameterSpec(
        DEFAULT_JPEG_QUALITY, "JPEG quality of corrected/image/compressed, 1..100 (image_transport's default).",
        read_only=False, int_range=JPEG_QUALITY_RANGE),
    "png_level": ParameterSpec(
        DEFAULT_PNG_LEVEL, "PNG compression level of corrected/image/compressed, 0..9 (image_transport's "
        "default); higher = smaller and slower.", read_only=False, int_range=PNG_LEVEL_RANGE),
    "republish_camera_info": ParameterSpec(
        True, "Republish `camera_info` unchanged on corrected/camera_info, so rectification downstream of "
        "the corrected image keeps working.", read_only=True),
}
RUNTIME_PARAMETERS = tuple(name for name, spec in PARAMETERS.items() if not spec.read_only)

# illexp_stereo_node's own, beside all of the above (illexp_stereo_node.py; ros/node/stereo_pairing.py).
STEREO_PARAMETERS: dict[str, ParameterSpec] = {
    **PARAMETERS,
    "sync_tolerance_s": ParameterSpec(
        0.0, "Largest difference in header.stamp, in seconds, between a left and a right frame that make a pair; "
        "0 = identical stamps only (hardware-synchronised stereo drivers stamp both views alike). Raise it, "
        "say to half a frame period, for two free-running cameras.",
        read_only=True, float_range=(0.0, MAX_SYNC_TOLERANCE_S)),
    "sync_queue_size": ParameterSpec(
        5, "Frames of each side kept waiting for their partner; older ones are dropped and counted as unpaired. "
        "Also each view's subscription depth, so a busy node does not tear pairs.",
        read_only=True, int_range=(1, MAX_SYNC_QUEUE)),
}


def validate(name: str, value: object, specs: dict[str, ParameterSpec] = PARAMETERS) -> str | None:
    """None if `value` is acceptable for parameter `name` (one of `specs`), else the reason it is not."""
    spec = specs.get(name)
    if spec is None:
        return f"unknown parameter {name!r}"
    if isinstance(spec.default, bool):
        return None if isinstance(value, bool) else f"{name} must be true or false (got {value!r})"
    if spec.float_range is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{name} must be a number (got {value!r})"
        low, high = spec.float_range
        if not low <= float(value) <= high:
            return f"{name} must be in [{low}, {high}] (got {value})"
        return None
    if isinstance(spec.default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{name} must be an integer (got {value!r})"
        if spec.int_range and not spec.int_range[0] <= value <= spec.int_range[1]:
            return f"{name} must be in [{spec.int_range[0]}, {spec.int_range[1]}] (got {value})"
        return None
    if not isinstance(value, str):
        return f"{name} must be a string (got {value!r})"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(repr(c) for c in spec.choices)} (got {value!r})"
    if name == "model" and not value.strip():
        return "model must not be empty"
    return None
