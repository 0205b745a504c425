"""QoS profiles for image topics: `reliable` (the default) or `sensor_data`, keep-last (depth 1 unless said).

Depth 1 everywhere: a live corrector only ever wants the newest frame; a deeper queue only adds latency. One
exception: the stereo node's image subscriptions keep `sync_queue_size` frames (illexp_stereo_node.py says why).

Why `reliable` is the default (measured with Fast DDS, the Kilted default RMW, 640x480 bgr8 at 30 Hz between
two processes):
* with Fast DDS's default transports a best-effort stream of large frames loses ~97% of them (every frame
  is split into many UDP fragments; losing one loses the frame), while reliable delivers all of them at
  ~12 ms (47 ms at 1080p);
* with FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA (set by our launch files) both are ~1-2 ms (8 ms at 1080p);
* the usual camera drivers (usb_cam, v4l2_camera, realsense2_camera) and `ros2 bag play` publish reliable by
  default; a reliable publisher also serves best-effort subscribers.
A reliable subscription does not connect to a best-effort publisher: the node then logs which topic and
says to set `qos: sensor_data`.

On top of `qos`, each image / camera_info publisher and subscription takes ROS 2's standard QoS override
parameters (history, depth, reliability), as image_pipeline's nodes do, e.g.
`qos_overrides./camera/image_raw.subscription.reliability: best_effort` or
`qos_overrides./corrected/image.publisher.depth: 5` (full topic names; read at start-up or configure).
"""

from __future__ import annotations

from collections.abc import Mapping

from rcl_interfaces.msg import SetParametersResult
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

QOS_NAMES = ("reliable", "sensor_data")


def image_qos(name: str, depth: int = 1) -> QoSProfile:
    """The QoS profile for image, camera_info and corrected topics; ValueError for an unknown name."""
    if name == "reliable":
        reliability = ReliabilityPolicy.RELIABLE
    elif name == "sensor_data":
        reliability = ReliabilityPolicy.BEST_EFFORT
    else:
        raise ValueError(f"qos must be one of {', '.join(QOS_NAMES)} (got {name!r})")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability,
                      durability=DurabilityPolicy.VOLATILE)


MAX_DEPTH = 2**31 - 1  # rclpy's C profile takes no more (a TypeError from its constructor, not a clear error)


def policy_name(kind: object) -> str:
    """An incompatible-QoS event's policy as a word (RELIABILITY), not rclpy's `rmw_qos_policy_kind_t.RMW_...`."""
    try:
        return QoSPolicyKind(int(kind)).name
    except (TypeError, ValueError):
        return str(kind)


def _check_overridden(qos: QoSProfile) -> SetParametersResult:
    """rclpy applies the overrides as given; a keep-last queue of depth 0 would hold nothing."""
    if qos.history == HistoryPolicy.KEEP_LAST and qos.depth < 1:
        return SetParametersResult(successful=False,
                                   reason=f"depth must be at least 1 with keep_last (got {qos.depth})")
    if qos.depth > MAX_DEPTH:
        return SetParametersResult(successful=False, reason=f"depth must be at most {MAX_DEPTH} (got {qos.depth})")
    return SetParametersResult(successful=True)


# The policies image_pipeline's nodes let users override; the node's defaults come from `qos`.
QOS_OVERRIDES = QoSOverridingOptions.with_default_policies(callback=_check_overridden)

FAST_DDS_RMWS = ("", "rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp")  # "": the default RMW (Fast DDS)


def large_data_note(environ: Mapping[str, str]) -> str | None:
    """A line for the start-up log when the environment asks for Fast DDS's LARGE_DATA transport (our launch files
    do) together with localhost-only discovery, which cancels it (measured on Kilted: 640x480 frames between two
    processes p50 ~27 ms instead of ~6, 1080p ~110-135 instead of ~27; README "QoS and Fast DDS"). None otherwise."""
    if environ.get("RMW_IMPLEMENTATION", "") not in FAST_DDS_RMWS:
        return None
    if not environ.get("FASTDDS_BUILTIN_TRANSPORTS", "").upper().startswith("LARGE_DATA"):
        return None
    discovery_range = environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if discovery_range.upper() == "LOCALHOST":
        setting = "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"
    elif not discovery_range and environ.get("ROS_LOCALHOST_ONLY") == "1":
        setting = "ROS_LOCALHOST_ONLY=1"
    else:
        return None
    return (f"FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA brings nothing with {setting} (localhost-only discovery): large "
            f"frames take the default transports' time (measured on Kilted: ~27 ms instead of ~6 per 640x480 frame); "
            f"README \"QoS and Fast DDS\"")


DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
