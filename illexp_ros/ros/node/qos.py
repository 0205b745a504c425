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

DIAGNOSTICS_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
