"""`illexp_node`: subscribe to a camera, correct every frame's exposure, republish with the same header.

Threads: the executor (main thread) runs the subscription callbacks, the parameter services and the
diagnostics timer; one worker thread decodes, corrects and publishes. The subscription callback only keeps
the newest frame in a one-slot mailbox, so under overload frames are dropped (and counted) instead of queued,
and latency stays flat.

Run:  illexp_node --ros-args --params-file config/illexp.yaml -r image:=/camera/image_raw
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from illexp_ros.ros.node.diagnostics import FrameStats, diagnostic_array, summary_line
from illexp_ros.ros.node.image_conversion import (
    ImageFormatError,
    array_to_image,
    compressed_to_frame,
    frame_to_image,
    image_to_frame,
)
from illexp_ros.ros.node.parameters import PARAMETERS, RUNTIME_PARAMETERS, validate
from illexp_ros.ros.node.qos import DIAGNOSTICS_QOS, image_qos
from illexp_ros.ros.node.rate_limit import RateLimiter
from illexp_ros.runtime import Enhancer, EnhancerError

NODE_NAME = "illexp_node"
DIAGNOSTICS_PERIOD_S = 1.0
LOG_PERIOD_S = 5.0
ERROR_THROTTLE_S = 5.0
JOIN_TIMEOUT_S = 1.5
SWITCH_INTERVAL_S = 0.0005


class StartupError(RuntimeError):
    """A parameter value the node cannot start with; the text says which and why."""


@dataclass
class PendingFrame:
    msg: Image | CompressedImage
    received: float  # time.monotonic() when the callback got it


class IllExpNode(Node):
    def __init__(self, **node_kwargs) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, spec.descriptor())
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        for name, value in p.items():
            reason = validate(name, value)
            if reason:
                raise StartupError(f"parameter {reason}")

        self.enhancer = Enhancer.from_model(
            model=p["model"], backend=p["backend"], mode=p["mode"], fast=p["fast"],
            internal_short_side=p["internal_short_side"], logger=self.get_logger().info)
        self.backend_name = self.enhancer.backend_name
        self.model_name = self.enhancer.model_name

        self._output_encoding: str = p["output_encoding"]
        self._publish_map: bool = p["publish_exposure_map"]
        self._rate_limit = RateLimiter(float(p["max_rate_hz"]))
        self.stats = FrameStats()
        self._last_seq: dict[bytes, int] = {}
        self._last_shape: tuple | None = None

        qos = image_qos(p["qos"])
        hint = "set `qos: sensor_data`" if p["qos"] == "reliable" else "publish with a compatible QoS"
        pub_events = PublisherEventCallbacks(incompatible_qos=self._on_incompatible_subscriber)
        self.image_pub = self.create_publisher(Image, "corrected/image", qos, event_callbacks=pub_events)
        self.map_pub = self.create_publisher(Image, "exposure_map", qos)
        if p["input_transport"] == "compressed":
            # image_transport convention: the compressed stream of base topic T is T/compressed.
            self.input_topic = self.resolve_topic_name("image") + "/compressed"
            msg_type = CompressedImage
        else:
            self.input_topic = self.resolve_topic_name("image")
            msg_type = Image
        sub_events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info: self.get_logger().warning(
                f"a publisher on {self.input_topic} offers an incompatible QoS (policy "
                f"{info.last_policy_kind}); no frames from it will arrive: {hint}"))
        self.image_sub = self.create_subscription(msg_type, self.input_topic, self._on_image, qos,
                                                  event_callbacks=sub_events)
        if p["republish_camera_info"]:
            self.info_pub = self.create_publisher(CameraInfo, "corrected/camera_info", qos)
            self.info_sub = self.create_subscription(CameraInfo, "camera_info", self.info_pub.publish, qos)

        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS)
        self._last_log = time.monotonic()
        self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics_timer)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._slot: PendingFrame | None = None
        self._slot_cond = threading.Condition()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="illexp_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"correcting {self.input_topic} -> {self.resolve_topic_name('corrected/image')} "
            f"(backend {self.backend_name}, model {self.model_name}, mode {p['mode']}, fast {p['fast']}, "
            f"qos {p['qos']})")

    # --- executor thread -------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage, info: dict) -> None:
        now = time.monotonic()
        self.stats.count("received")
        self._count_transport_gap(info)
        if not self._rate_limit.accept(now):
            self.stats.count("dropped")
            return
        with self._slot_cond:
            if self._slot is not None:
                self.stats.count("dropped")  # replaced before the worker got to it: never queue
            self._slot = PendingFrame(msg, now)
            self._slot_cond.notify()

    def _count_transport_gap(self, info: dict) -> None:
        """Frames the publisher sent that never reached this callback (DDS history overwritten, lost
        best-effort fragments) show up as gaps in that publisher's sequence numbers."""
        seq = info.get("publication_sequence_number") if isinstance(info, dict) else None
        gid = info.get("publisher_gid") if isinstance(info, dict) else None
        if not seq or seq >= 2**63 or gid is None:  # the RMW does not report it
            return
        key = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
        last = self._last_seq.get(key)
        self._last_seq[key] = seq
        if last is not None and seq > last + 1:
            self.stats.count("dropped_in_transport", seq - last - 1)

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate, then apply. The Enhancer's setters take its lock, so a change lands between two frames
        (never inside one) and the next frame uses it; a model that cannot be loaded refuses the change."""
        changes = [p for p in params if p.name in RUNTIME_PARAMETERS]  # rclpy refuses read-only ones itself
        reasons = [r for r in (validate(p.name, p.value) for p in changes) if r]
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        undo = []
        try:
            for param in changes:
                if param.name in ("mode", "fast"):
                    undo.append((param.name, getattr(self.enhancer, param.name)))
                    setattr(self.enhancer, param.name, param.value)
        except Exception as exc:  # noqa: BLE001 - e.g. ModelLoadError for a mode whose model is missing
            for name, value in reversed(undo):
                setattr(self.enhancer, name, value)
            return SetParametersResult(successful=False, reason=f"{param.name}={param.value!r}: {exc}")
        for param in changes:
            if param.name == "publish_exposure_map":
                self._publish_map = param.value
            elif param.name == "max_rate_hz":
                self._rate_limit.rate_hz = float(param.value)
            self.get_logger().info(f"{param.name} set to {param.value!r}")
        return SetParametersResult(successful=True)

    def _on_incompatible_subscriber(self, info) -> None:
        self.get_logger().warning(
            f"a subscriber of {self.resolve_topic_name('corrected/image')} asks for an incompatible QoS "
            f"(policy {info.last_policy_kind}); it gets no frames")

    def _on_diagnostics_timer(self) -> None:
        snap = self.stats.snapshot()
        extra = {"backend": self.backend_name, "model": self.enhancer.model_name, "mode": self.enhancer.mode,
                 "fast": self.enhancer.fast, "last_route": getattr(self.enhancer, "last_route", ""),
                 "input_topic": self.input_topic}
        self.diag_pub.publish(diagnostic_array(snap, f"{self.get_fully_qualified_name()}: exposure correction",
                                               self.backend_name, self.input_topic, extra,
                                               self.get_clock().now().to_msg()))
        now = time.monotonic()
        if now - self._last_log >= LOG_PERIOD_S and (snap.received_in_period or snap.problems_in_period):
            self._last_log = now
            self.get_logger().info(summary_line(snap, self.backend_name, self.enhancer.model_name))

    # --- worker thread ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            with self._slot_cond:
                if self._slot is None:
                    self._slot_cond.wait(timeout=0.1)
                item, self._slot = self._slot, None
            if item is None:
                continue
            try:
                self._process(item)
            except ImageFormatError as exc:
                self.stats.count("rejected")
                self.get_logger().error(f"bad frame on {self.input_topic}: {exc}",
                                        throttle_duration_sec=ERROR_THROTTLE_S)
            except Exception as exc:  # noqa: BLE001 - one bad frame must never stop the node
                if self._stop.is_set() or not self.context.ok():
                    return
                self.stats.count("failed")
                self.get_logger().error(
                    f"correcting a frame from {self.input_topic} failed: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=ERROR_THROTTLE_S)

    def _process(self, item: PendingFrame) -> None:
        msg = item.msg
        if isinstance(msg, CompressedImage):
            frame, encoding, bigendian = compressed_to_frame(msg), "bgr8", False
        else:
            frame, encoding, bigendian = image_to_frame(msg), msg.encoding, bool(msg.is_bigendian)
        encoding = self._output_encoding or encoding
        if self._publish_map:
            out, em = self.enhancer.enhance_with_map(frame.pixels, color_order=frame.color_order)
        else:
            out, em = self.enhancer.enhance(frame.pixels, color_order=frame.color_order), None
        self.image_pub.publish(frame_to_image(out, frame.color_order, encoding, msg.header,
                                              alpha=frame.alpha, bigendian=bigendian))
        done = time.monotonic()
        stamp = msg.header.stamp
        age = None
        if stamp.sec or stamp.nanosec:
            age = self.get_clock().now().nanoseconds * 1e-9 - (stamp.sec + stamp.nanosec * 1e-9)
        # The first frame of a new size carries one-off work (buffer allocation, kernel selection, lazy model
        # set-up); it is published and counted but kept out of the latency statistics.
        shape = (frame.pixels.shape, encoding)
        first_of_size, self._last_shape = shape != self._last_shape, shape
        self.stats.published(None if first_of_size else done - item.received, age)
        if em is not None:
            self.map_pub.publish(array_to_image(em, "mono8", msg.header))

    def stop(self) -> None:
        self._stop.set()
        with self._slot_cond:
            self._slot_cond.notify_all()
        self._worker.join(timeout=JOIN_TIMEOUT_S)
        if not self._worker.is_alive():
            self.enhancer.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv if argv is None else argv
    # The executor thread and the worker share the GIL; Python's default 5 ms switch interval would let a
    # busy executor (deserialising large frames) delay the worker by up to 5 ms per frame.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        rclpy.init(args=argv)
    except Exception as exc:  # noqa: BLE001 - e.g. an unreadable --params-file
        print(f"illexp_node: error: cannot initialise ROS: {str(exc).strip().splitlines()[0]}",
              file=sys.stderr)
        return 2
    try:
        node = IllExpNode()
    except (EnhancerError, StartupError, ParameterException, ValueError) as exc:
        print(f"illexp_node: error: {exc}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM: rclpy's handlers shut the context down; leave cleanly
    finally:
        node.stop()
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
