"""`illexp_node`: subscribe to a camera, correct every frame's exposure, republish with the same header.

Threads: the executor (main thread) runs the subscription callbacks, the parameter services and the
diagnostics timer; one worker thread decodes, corrects and publishes. The subscription callback only keeps
the newest frame in a one-slot mailbox, so under overload frames are dropped (and counted) instead of queued,
and latency stays flat.

Run:  illexp_node --ros-args --params-file config/illexp.yaml -r image:=/camera/image_raw
"""

from __future__ import annotations

import functools
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import (
    InvalidParameterTypeException,
    InvalidParameterValueException,
    ParameterException,
    ParameterUninitializedException,
)
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import InvalidQosOverridesError, QoSOverridingOptions
from rclpy.signals import SignalHandlerOptions, install_signal_handlers
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from illexp_ros.ros.interruption import raise_interrupt
from illexp_ros.ros.node.background_spin import SPIN_TIMEOUT_S  # the longest wait before looking again
from illexp_ros.ros.node.console_scripts import print_help, wants_help
from illexp_ros.ros.node.diagnostics import FrameStats, diagnostic_array, summary_line
from illexp_ros.ros.node.image_conversion import (
    Frame,
    ImageFormatError,
    array_to_image,
    compressed_to_frame,
    frame_to_compressed,
    frame_to_image,
    image_to_frame,
)
from illexp_ros.ros.node.parameters import MODES, PARAMETERS, RUNTIME_PARAMETERS, ParameterSpec, validate
from illexp_ros.ros.node.qos import DIAGNOSTICS_QOS, QOS_OVERRIDES, image_qos, large_data_note, policy_name
from illexp_ros.ros.node.rate_limit import RateLimiter
from illexp_ros.runtime import Enhancer, EnhancerError
from illexp_ros.runtime.correction_strength import apply_strength
from illexp_ros.runtime.cpu_pipeline import MAX_CACHED_RESOLUTIONS
from illexp_ros.runtime.enhancer import CORRECTION_OFF, output_is_the_input
from illexp_ros.runtime.exposure_compensation import compensate_exposure, compensation_factor
from illexp_ros.runtime.level_smoothing import LevelSmoother

NODE_NAME = "illexp_node"
DIAGNOSTICS_PERIOD_S = 1.0
LOG_PERIOD_S = 5.0
ERROR_THROTTLE_S = 5.0
JOIN_TIMEOUT_S = 1.5
SWITCH_INTERVAL_S = 0.0005
MAX_TRACKED_PUBLISHERS = 32  # sequence-number state kept per publisher GID (publishers come and go)
PUBLISHER_COUNT_PERIOD_S = 1.0  # how long a topic's publisher count is reused (read only where no GID comes)
COMPRESSION_PARAMETERS = ("compressed_format", "jpeg_quality", "png_level")  # frame_to_compressed's order
# What rclpy raises for a QoS override it cannot apply: a value that is not a policy name (RuntimeError), one of
# the wrong type (ParameterException), one our check refuses (InvalidQosOverridesError).
QOS_ERRORS = (InvalidQosOverridesError, ParameterException, RuntimeError)
# rclpy warns (two lines on stderr) when an override makes a depth of 0, before the override check refuses it with
# the one line the node prints: that line says it.
warnings.filterwarnings("ignore", message="A zero depth with KEEP_LAST", category=UserWarning, module="rclpy.qos")


class StartupError(RuntimeError):
    """A parameter value the node cannot start with; the text says which and why."""


@dataclass
class PendingFrame:
    msg: Image | CompressedImage
    received: float  # time.monotonic() when the callback got it
    frames = 1  # what dropping it loses


@dataclass
class Camera:
    """One camera's topics, all under `prefix`: the plain node has one camera (prefix ''), the stereo node two
    ('left/', 'right/')."""
    prefix: str
    input_topic: str = ""
    image_pub: Publisher | None = None
    map_pub: Publisher | None = None
    compressed_pub: Publisher | None = None
    info_pub: Publisher | None = None
    image_sub: object = None
    info_sub: object = None

    def publishers(self) -> list[Publisher]:
        return [p for p in (self.image_pub, self.map_pub, self.compressed_pub, self.info_pub) if p is not None]


@dataclass
class CorrectedMessages:
    """One frame's outputs, built before any of them is published."""
    decoded: DecodedFrame
    image: Image  # corrected/image (the input message itself where nothing changed it)
    exposure_map: np.ndarray | None  # published as mono8 after corrected/image
    pixels: np.ndarray  # what corrected/image/compressed encodes


@dataclass
class DecodedFrame:
    """An input frame and what publishing its correction needs."""
    msg: Image | CompressedImage
    frame: Frame  # pixels (uint8 H x W x 3), colour order, alpha
    encoding: str  # of the output
    bigendian: bool


class ExposureCorrectionMixin:
    """Everything `illexp_node` does, in steps that the plain node runs at once and the lifecycle node
    (illexp_lifecycle_node.py) runs at its transitions: parameters are declared at construction; outputs
    (model, publishers, parameter changes, the switcher thread) are set up at configure; inputs (subscriptions,
    diagnostics timer, the worker thread) at activate. Needs rclpy's Node among the class's bases.
    CAMERA_PREFIXES names the cameras (one set of topics each); the stereo node (illexp_stereo_node.py) has two
    and replaces _on_image and _process with their pair-wise forms."""

    CAMERA_PREFIXES: tuple[str, ...] = ("",)
    PARAMETER_SPECS: dict[str, ParameterSpec] = PARAMETERS

    def _declare_parameters(self) -> None:
        """StartupError in the node's own words for a value its descriptor refuses (an integer out of range, a
        string for a number): rclpy's reads "Invalid parameter value (0) for parameter. Reason: ... Min: 1, ..."."""
        for name, spec in self.PARAMETER_SPECS.items():
            try:
                self.declare_parameter(name, spec.default, spec.descriptor())
            except (InvalidParameterTypeException, InvalidParameterValueException):
                override = self._parameter_overrides.get(name)  # rclpy keeps no public copy of the overrides
                reason = validate(name, override.value, self.PARAMETER_SPECS) if override is not None else None
                if reason is None:
                    raise
                raise StartupError(f"parameter {reason}") from None

    def _validated_parameters(self) -> dict:
        """The parameters' values; StartupError names the first invalid one."""
        p = {}
        for name in self.PARAMETER_SPECS:
            try:
                p[name] = self.get_parameter(name).value
            except ParameterUninitializedException:  # `threads: []` in a params file declares it without a value
                raise StartupError(f"parameter {name} has no value (an empty list?)") from None
        for name, value in p.items():
            reason = validate(name, value, self.PARAMETER_SPECS)
            if reason:
                raise StartupError(f"parameter {reason}")
        return p

    loading_models = False  # run_node abandons the load on SIGINT / SIGTERM while this is set

    def _load(self, p: dict) -> None:
        """The Enhancer (the model files of the configured mode; all of them with `preload`). EnhancerError on a
        missing or corrupt model, an unavailable backend; KeyboardInterrupt when stopped meanwhile (run_node)."""
        # Seconds on a CPU (ONNX exports), minutes for TensorRT engines: a stop must not wait for it. The
        # lifecycle node loads in its configure callback, after run_node's signal handlers took over.
        self.loading_models = True
        try:
            self.enhancer = Enhancer.from_model(
                model=p["model"], backend=p["backend"], mode=p["mode"], fast=p["fast"],
                internal_short_side=p["internal_short_side"], logger=self.get_logger().info, threads=p["threads"])
            if p["preload"]:
                # Everything a later `mode` / `fast` change can ask for, now: no loading while the camera runs.
                start = time.monotonic()
                for mode in MODES:
                    for fast in (False, True):
                        self.enhancer.prepare(mode, fast)
                self.get_logger().info(f"preloaded the models of every mode, fast and full "
                                       f"({time.monotonic() - start:.1f} s)")
        finally:
            self.loading_models = False
        self.backend_name = self.enhancer.backend_name
        self.model_name = self.enhancer.model_name

    def _make_publisher(self, msg_type: type, topic: str, qos: QoSProfile,
                        overrides: QoSOverridingOptions | None = QOS_OVERRIDES, **kwargs) -> Publisher:
        """A publisher of this node's kind (the lifecycle node's are managed), with QoS overrides."""
        return self.create_publisher(msg_type, topic, qos, qos_overriding_options=overrides, **kwargs)

    def _drop_publisher(self, publisher: Publisher) -> None:
        self.destroy_publisher(publisher)

    def _create_outputs(self, p: dict) -> None:
        """State, publishers, the parameter callback and the switcher thread. StartupError (and nothing
        created) on an invalid QoS override."""
        self._output_encoding: str = p["output_encoding"]
        self._publish_map: bool = p["publish_exposure_map"]
        self._rate_limit = RateLimiter(float(p["max_rate_hz"]))
        self._level = LevelSmoother(float(p["level_smoothing"]))  # used by the worker thread only
        self._exposure_compensation = float(p["exposure_compensation"])
        self._strength = float(p["strength"])
        self._last_route = ""  # which model made the last published frame; "off" when strength 0 published the input
        # One tuple, replaced whole, so the worker never sees half a change.
        self._compression = tuple(p[name] for name in COMPRESSION_PARAMETERS)
        self.compressed_published = 0
        self.stats = FrameStats()
        self._last_seq: dict[tuple[int, bytes | None], int] = {}  # (camera, publisher GID) -> last number
        self._publisher_counts: dict[int, tuple[float, int]] = {}  # camera -> (when read, publishers)
        # The (size, encoding)s seen lately, as many as the runtime keeps buffers for (least recent first).
        self._recent_shapes: OrderedDict[tuple, None] = OrderedDict()

        # A profile per entity: rclpy writes each one's overrides into the profile it is given.
        self.cameras = [Camera(prefix) for prefix in self.CAMERA_PREFIXES]
        self.diag_pub = None
        try:
            for camera in self.cameras:
                self._create_camera_outputs(camera, p)
        except QOS_ERRORS as exc:
            self._drop_publishers()
            raise StartupError(f"QoS override: {exc}") from exc
        self.diag_pub = self._make_publisher(DiagnosticArray, "/diagnostics", DIAGNOSTICS_QOS, overrides=None)
        for camera in self.cameras:
            image = self.resolve_topic_name(camera.prefix + "image")
            # image_transport convention: the compressed stream of base topic T is T/compressed.
            camera.input_topic = image + "/compressed" if p["input_transport"] == "compressed" else image
        self.input_topic = ", ".join(camera.input_topic for camera in self.cameras)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._slot: PendingFrame | None = None
        self._slot_cond = threading.Condition()
        # Each thread gets its own stop event: one that outlived its join (a long load or frame) must not take a
        # later configure's / activate's event for its own and run on beside the new thread.
        self._stop = threading.Event()  # the switcher's; the worker has its own (_worker_stop)
        self._wanted = (self.enhancer.mode, self.enhancer.fast)
        self._switch_cond = threading.Condition()
        self._switcher = threading.Thread(target=self._switch_loop, args=(self._stop,), name="illexp_switcher",
                                          daemon=True)
        self._switcher.start()

    def _create_camera_outputs(self, camera: Camera, p: dict) -> None:
        """One camera's publishers (QOS_ERRORS on an invalid QoS override)."""
        corrected = camera.prefix + "corrected/image"
        pub_events = PublisherEventCallbacks(
            incompatible_qos=lambda info: self._on_incompatible_subscriber(corrected, info))
        camera.image_pub = self._make_publisher(Image, corrected, image_qos(p["qos"]), event_callbacks=pub_events)
        camera.map_pub = self._make_publisher(Image, camera.prefix + "exposure_map", image_qos(p["qos"]))
        # image_transport convention, as for the input: the compressed stream of base topic T is T/compressed,
        # so it follows a remapped corrected/image.
        if p["publish_compressed"]:
            camera.compressed_pub = self._make_publisher(
                CompressedImage, self.resolve_topic_name(corrected) + "/compressed", image_qos(p["qos"]))
        if p["republish_camera_info"]:
            camera.info_pub = self._make_publisher(CameraInfo, camera.prefix + "corrected/camera_info",
                                                   image_qos(p["qos"]))

    def _create_inputs(self, p: dict) -> None:
        """Subscriptions, the diagnostics timer and the worker thread: frames flow from here on. StartupError
        (and nothing created) on an invalid QoS override."""
        hint = "set `qos: sensor_data`" if p["qos"] == "reliable" else "publish with a compatible QoS"
        msg_type = CompressedImage if p["input_transport"] == "compressed" else Image
        try:
            for index, camera in enumerate(self.cameras):
                sub_events = SubscriptionEventCallbacks(
                    incompatible_qos=lambda info, topic=camera.input_topic: self.get_logger().warning(
                        f"a publisher on {topic} offers an incompatible QoS (policy "
                        f"{policy_name(info.last_policy_kind)}); no frames from it will arrive: {hint}"))
                camera.image_sub = self.create_subscription(
                    msg_type, camera.input_topic, functools.partial(self._on_image, camera=index),
                    image_qos(p["qos"], self._input_depth(p)), event_callbacks=sub_events,
                    qos_overriding_options=QOS_OVERRIDES)
                if camera.info_pub is not None:
                    camera.info_sub = self.create_subscription(
                        CameraInfo, camera.prefix + "camera_info", camera.info_pub.publish, image_qos(p["qos"]),
                        qos_overriding_options=QOS_OVERRIDES)
        except QOS_ERRORS as exc:
            self._destroy_subscriptions()
            raise StartupError(f"QoS override: {exc}") from exc
        # Sequence gaps count frames lost on the way to a subscribed node: frames a camera sent while the
        # lifecycle node was inactive (not subscribed) are not such losses.
        self._last_seq.clear()
        self._publisher_counts.clear()
        # Rates count from now: the inactive time is no period of this stream (fps 5 for a 30 Hz camera after
        # a 6 s deactivation).
        self.stats.restart_period()
        self._worker_stop = threading.Event()
        self._worker = threading.Thread(target=self._work, args=(self._worker_stop,), name="illexp_worker",
                                        daemon=True)
        self._worker.start()
        self._last_log = time.monotonic()
        self._diagnostics_timer = self.create_timer(DIAGNOSTICS_PERIOD_S, self._on_diagnostics_timer)
        self.get_logger().info(
            f"correcting {self.input_topic} -> "
            f"{', '.join(self.resolve_topic_name(c.prefix + 'corrected/image') for c in self.cameras)} "
            f"(backend {self.backend_name}, model {self.model_name}, mode {self.enhancer.mode}, "
            f"fast {self.enhancer.fast}, qos {p['qos']}, level smoothing {self._level.weight})")
        note = large_data_note(os.environ)
        if note:
            self.get_logger().info(note)

    def _input_depth(self, p: dict) -> int:
        """How many frames an image subscription keeps until the executor takes them: the newest only."""
        return 1

    def _destroy_inputs(self) -> bool:
        """Undo _create_inputs: no more frames are taken; one waiting in the mailbox is dropped (and counted).
        True when the worker has stopped (it finishes the frame in hand first)."""
        self._destroy_subscriptions()
        self.destroy_timer(self._diagnostics_timer)
        self._worker_stop.set()
        with self._slot_cond:
            if self._slot is not None:
                self.stats.count("dropped", self._slot.frames)
                self._slot = None
            self._slot_cond.notify_all()
        self._worker.join(timeout=JOIN_TIMEOUT_S)
        return not self._worker.is_alive()

    def _destroy_subscriptions(self) -> None:
        for camera in self.cameras:
            for sub in (camera.image_sub, camera.info_sub):
                if sub is not None:
                    self.destroy_subscription(sub)
            camera.image_sub = camera.info_sub = None

    def _destroy_outputs(self, switcher_timeout: float = JOIN_TIMEOUT_S) -> None:
        """Undo _create_outputs (after _destroy_inputs): stop the switcher, release the models."""
        self._stop_switcher(switcher_timeout)
        self.remove_on_set_parameters_callback(self._on_set_parameters)  # bound methods compare equal
        self._drop_publishers()
        self.enhancer.close()

    def _drop_publishers(self) -> None:
        for camera in getattr(self, "cameras", ()):
            for publisher in camera.publishers():
                self._drop_publisher(publisher)
            camera.image_pub = camera.map_pub = camera.compressed_pub = camera.info_pub = None
        if getattr(self, "diag_pub", None) is not None:
            self._drop_publisher(self.diag_pub)
            self.diag_pub = None

    def _stop_switcher(self, timeout: float | None = JOIN_TIMEOUT_S) -> None:
        """Ask the switcher to stop (it takes no new work) and wait up to `timeout` s (None: do not wait) for a
        load in progress to end."""
        self._stop.set()
        with self._switch_cond:
            self._switch_cond.notify_all()
        if timeout is not None:
            self._switcher.join(timeout=timeout)

    # --- executor thread -------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage, info: dict, camera: int = 0) -> None:
        now = time.monotonic()
        self.stats.count("received")
        self._count_transport_gap(info, camera, now)
        if not self._rate_limit.accept(now):
            self.stats.count("dropped")
            return
        self._put(PendingFrame(msg, now))

    def _put(self, item: PendingFrame) -> None:
        """Into the worker's one-slot mailbox; what waited there is dropped and counted."""
        with self._slot_cond:
            if self._slot is not None:
                self.stats.count("dropped", self._slot.frames)  # replaced before the worker got to it: never queue
            self._slot = item
            self._slot_cond.notify()

    def _count_transport_gap(self, info: dict, camera: int, now: float) -> None:
        """Frames the publisher sent that never reached this callback (DDS history overwritten, lost
        best-effort fragments) show up as gaps in that publisher's sequence numbers."""
        seq = info.get("publication_sequence_number") if isinstance(info, dict) else None
        if not seq or seq >= 2**63:  # the RMW does not report it
            return
        gid = info.get("publisher_gid")
        if gid is not None:
            key = (camera, bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid))
        elif self._publisher_count(camera, now) == 1:
            # Jazzy's rclpy (7.x) passes no publisher GID: numbers stay comparable while one publisher feeds the
            # topic (a driver restarted in between only starts again at 1, which is no gap).
            key = (camera, None)
        else:  # several publishers' numbers interleave: no gap can be told from them
            self._last_seq.pop((camera, None), None)
            return
        last = self._last_seq.pop(key, None)
        self._last_seq[key] = seq  # most recent publisher last: a restarted camera driver is a new GID
        while len(self._last_seq) > MAX_TRACKED_PUBLISHERS:
            del self._last_seq[next(iter(self._last_seq))]
        if last is not None and seq <= last and gid is None:
            # Numbers going back with no GID: a restarted publisher, or a second one the cached count has not
            # seen yet (their numbers would then be compared with each other): read the graph again.
            self._publisher_counts.pop(camera, None)
        elif last is not None and seq > last + 1:
            self.stats.count("dropped_in_transport", seq - last - 1)

    def _publisher_count(self, camera: int, now: float) -> int:
        """Publishers on a camera's image topic, read from the ROS graph at most once per PUBLISHER_COUNT_PERIOD_S."""
        when, count = self._publisher_counts.get(camera, (-math.inf, 0))
        sub = self.cameras[camera].image_sub
        if now - when >= PUBLISHER_COUNT_PERIOD_S and sub is not None:
            count = self.count_publishers(sub.topic_name)
            self._publisher_counts[camera] = (now, count)
        return count

    def _invalid_value_reasons(self, params: list[Parameter]) -> list[str]:
        """Why each of the node's own parameters in `params` may not take its value (others are not ours)."""
        specs = self.PARAMETER_SPECS
        return [r for r in (validate(p.name, p.value, specs) for p in params if p.name in specs) if r]

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate, then apply. max_rate_hz and publish_exposure_map apply at once. mode and fast go to the
        switcher thread: whatever the new settings need is loaded there while frames keep being corrected with
        the settings in force, and the Enhancer switches between two frames once it is ready (no gap in the
        output). A model file that is missing refuses the change here; one that fails to load later is logged
        and the parameters are set back to the settings in force."""
        changes = [p for p in params if p.name in RUNTIME_PARAMETERS]  # rclpy refuses read-only ones itself
        reasons = self._invalid_value_reasons(changes)
        if reasons:
            return SetParametersResult(successful=False, reason="; ".join(reasons))
        with self._switch_cond:
            wanted = mode, fast = self._wanted
        for param in changes:
            if param.name == "mode":
                mode = param.value
            elif param.name == "fast":
                fast = param.value
        ready = True
        if (mode, fast) != wanted:  # only a switch looks at model files: those in use are loaded already
            try:
                ready = self.enhancer.is_ready(mode, fast)  # also checks that the model files exist
            except EnhancerError as exc:  # e.g. a mode whose model file is missing
                return SetParametersResult(successful=False, reason=f"mode={mode!r}, fast={fast!r}: {exc}")
        for param in changes:
            if param.name == "publish_exposure_map":
                self._publish_map = param.value
            elif param.name == "max_rate_hz":
                self._rate_limit.rate_hz = float(param.value)
            elif param.name == "level_smoothing":
                self._level.weight = float(param.value)  # one attribute: the worker reads it per frame
            elif param.name == "exposure_compensation":
                self._exposure_compensation = float(param.value)
            elif param.name == "strength":
                self._strength = float(param.value)
            elif param.name in COMPRESSION_PARAMETERS:
                values = list(self._compression)
                values[COMPRESSION_PARAMETERS.index(param.name)] = param.value
                self._compression = tuple(values)
            self.get_logger().info(f"{param.name} set to {param.value!r}")
        with self._switch_cond:
            if (mode, fast) != self._wanted:
                self._wanted = (mode, fast)
                if ready:  # nothing to load: switch now, the next frame uses it
                    self.enhancer.switch(mode, fast)
                else:
                    self._switch_cond.notify()
        return SetParametersResult(successful=True)

    # --- switcher thread -------------------------------------------------------------------------------
    def _switch_loop(self, stop: threading.Event) -> None:
        """Bring the Enhancer to the wanted (mode, fast): load off the frame path, then switch between frames.
        Requests that arrive while loading are coalesced: only the latest one is switched to."""
        while True:
            with self._switch_cond:
                while not stop.is_set() and self._wanted == (self.enhancer.mode, self.enhancer.fast):
                    self._switch_cond.wait(timeout=0.5)
                if stop.is_set():
                    return
                target = self._wanted
            mode, fast = target
            try:
                ready = self.enhancer.is_ready(mode, fast)
            except EnhancerError:
                ready = False  # the file went missing since: prepare() says so below
            if not ready:
                self.get_logger().info(f"loading what mode {mode}, fast {fast} needs; frames keep mode "
                                       f"{self.enhancer.mode}, fast {self.enhancer.fast} until it is ready")
            start = time.monotonic()
            try:
                self.enhancer.prepare(mode, fast)
                with self._switch_cond:
                    if self._wanted != target:
                        continue  # changed again while loading: go for the newer one
                    self.enhancer.switch(mode, fast)  # instant now: a few assignments between two frames
            except Exception as exc:  # noqa: BLE001 - a model that does not load must not stop the node
                if stop.is_set():
                    return
                self.get_logger().error(f"cannot switch to mode {mode}, fast {fast}: {type(exc).__name__}: {exc}; "
                                        f"keeping mode {self.enhancer.mode}, fast {self.enhancer.fast}")
                self._revert_parameters(target)
                continue
            if not ready:
                self.get_logger().info(f"now correcting with mode {mode}, fast {fast} (loaded in "
                                       f"{time.monotonic() - start:.1f} s)")

    def _revert_parameters(self, failed: tuple[str, bool]) -> None:
        """After a failed load: the settings in force become the wanted ones and the parameters again."""
        with self._switch_cond:
            if self._wanted != failed:
                return  # a newer request replaced it
            self._wanted = (self.enhancer.mode, self.enhancer.fast)
        try:
            self.set_parameters([Parameter("mode", value=self.enhancer.mode),
                                 Parameter("fast", value=self.enhancer.fast)])
        except Exception as exc:  # noqa: BLE001 - shutting down
            self.get_logger().warning(f"could not set mode / fast back: {exc}")

    def _on_incompatible_subscriber(self, topic: str, info) -> None:
        self.get_logger().warning(
            f"a subscriber of {self.resolve_topic_name(topic)} asks for an incompatible QoS "
            f"(policy {policy_name(info.last_policy_kind)}); it gets no frames")

    def _on_diagnostics_timer(self) -> None:
        snap = self.stats.snapshot()
        extra = {"backend": self.backend_name, "model": self.enhancer.model_name, "mode": self.enhancer.mode,
                 "fast": self.enhancer.fast, "last_route": self._last_route,
                 "input_topic": self.input_topic, "buffered_resolutions": self.enhancer.buffered_resolutions(),
                 "strength": self._strength, "level_smoothing": self._level.weight,
                 "exposure_compensation": self._exposure_compensation,
                 "compressed_published": self.compressed_published,
                 "level_gain_change": f"{self._level.last_gain_change:.4f}",  # ~1 +- 0.02: 2 decimals say nothing
                 **self._more_diagnostics()}
        self.diag_pub.publish(diagnostic_array(snap, f"{self.get_fully_qualified_name()}: exposure correction",
                                               self.backend_name, self.input_topic, extra,
                                               self.get_clock().now().to_msg(), self._diagnostic_warnings()))
        now = time.monotonic()
        if now - self._last_log >= LOG_PERIOD_S and (snap.received_in_period or snap.problems_in_period):
            self._last_log = now
            self.get_logger().info(summary_line(snap, self.backend_name, self.enhancer.model_name))

    def _more_diagnostics(self) -> dict:
        """Values a subclass adds to the diagnostics (the stereo node's pairing)."""
        return {}

    def _diagnostic_warnings(self) -> list[str]:
        """What a subclass has to warn about in this period (the stereo node: frames without a partner)."""
        return []

    # --- worker thread ---------------------------------------------------------------------------------
    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
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
                if item.frames > 1:
                    self.stats.count("dropped", item.frames - 1)  # a stereo pair's other view, lost with it
                self.get_logger().error(f"bad frame on {self.input_topic}: {exc}",
                                        throttle_duration_sec=ERROR_THROTTLE_S)
            except Exception as exc:  # noqa: BLE001 - one bad frame must never stop the node
                if stop.is_set() or not self.context.ok():
                    return
                self.stats.count("failed", item.frames)
                self.get_logger().error(
                    f"correcting a frame from {self.input_topic} failed: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=ERROR_THROTTLE_S)

    def _process(self, item: PendingFrame) -> None:
        decoded = self._decode(item.msg)
        # Each run-time setting read once: a change lands between frames.
        strength, compensation, compression = self._strength, self._exposure_compensation, self._compression
        (out, em), = self._correct([decoded], strength)
        # Steady brightness across frames; another mode, model, auto route or strength restarts the average (a
        # strength of 0 must publish the input itself at once, not fade towards it from the corrected gain).
        change = self._level.gain_change(decoded.frame.pixels, out, item.received, self._segment(strength))
        built = self._corrected_messages(decoded, out, em, change, compensation)
        self._publish_image(self.cameras[0], built, item.received, self._first_of_size([decoded]))
        self._publish_extras(self.cameras[0], built, compression)

    def _decode(self, msg: Image | CompressedImage) -> DecodedFrame:
        """ImageFormatError for a frame that cannot be read."""
        if isinstance(msg, CompressedImage):
            return DecodedFrame(msg, compressed_to_frame(msg), self._output_encoding or "bgr8", False)
        return DecodedFrame(msg, image_to_frame(msg), self._output_encoding or msg.encoding, bool(msg.is_bigendian))

    def _correct(self, decoded: list[DecodedFrame], strength: float) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Each frame's correction at `strength` and its exposure map (None unless published), all with one mode
        and route (the views of a stereo pair); sets _last_route."""
        if strength == 0.0 and not self._publish_map:  # correction off: none of the network's output is published
            results = [(d.frame.pixels.copy(), None) for d in decoded]
        else:
            results = self.enhancer.enhance_views([d.frame.pixels for d in decoded],
                                                  [d.frame.color_order for d in decoded], want_map=self._publish_map)
            results = [(apply_strength(d.frame.pixels, out, strength), em) for d, (out, em) in zip(decoded, results)]
        # the enhancer's route is that of its last call, which strength 0 skips (or, with the map on, discards)
        self._last_route = CORRECTION_OFF if strength == 0.0 else self.enhancer.last_route
        return results

    def _segment(self, strength: float) -> tuple:
        """What restarts level smoothing when it changes: another mode, model, auto route or strength."""
        return (self.enhancer.mode, self.enhancer.fast, self.enhancer.last_route, strength)

    def _corrected_messages(self, decoded: DecodedFrame, out: np.ndarray, em: np.ndarray | None, change: float,
                            compensation: float) -> CorrectedMessages:
        """One frame's outputs, scaled by `change` (level smoothing) and the exposure compensation, built but not
        yet published: what can fail (an output encoding the frame does not fit) fails before anything goes out,
        so a stereo pair is published whole or not at all."""
        msg, frame, encoding = decoded.msg, decoded.frame, decoded.encoding
        if (output_is_the_input(self._last_route, compensation_factor(compensation) * change)
                and isinstance(msg, Image) and encoding == msg.encoding):
            image = msg  # exactly as it came (a 12-bit camera's 4096 levels, not 16)
        else:
            # the user's preference on top of the smoothed level, both in one pass over the frame
            out = compensate_exposure(out, compensation, gain=change)
            image = frame_to_image(out, frame.color_order, encoding, msg.header, alpha=frame.alpha,
                                   bigendian=decoded.bigendian)
        return CorrectedMessages(decoded, image, em, out)

    def _first_of_size(self, decoded: list[DecodedFrame]) -> bool:
        """Whether these frames (one, or the views of a stereo pair) bring a size not seen lately; the sizes are
        recorded. Such frames carry one-off work (buffer allocation, kernel selection, lazy model set-up): they
        are published and counted but kept out of the latency statistics, both views of a pair alike. A size
        seen lately has its buffers still: a stream alternating two sizes has latencies too."""
        first = False
        for d in decoded:
            shape = (d.frame.pixels.shape, d.encoding)
            first = first or shape not in self._recent_shapes
            self._recent_shapes[shape] = None
            self._recent_shapes.move_to_end(shape)
        while len(self._recent_shapes) > MAX_CACHED_RESOLUTIONS:
            self._recent_shapes.popitem(last=False)
        return first

    def _publish_image(self, camera: Camera, built: CorrectedMessages, received: float,
                       first_of_size: bool) -> None:
        """Publish one frame's corrected/image on `camera`'s topics and count it."""
        camera.image_pub.publish(built.image)
        done = time.monotonic()
        stamp = built.decoded.msg.header.stamp
        age = None
        if stamp.sec or stamp.nanosec:
            age = self.get_clock().now().nanoseconds * 1e-9 - (stamp.sec + stamp.nanosec * 1e-9)
        self.stats.published(None if first_of_size else done - received, age)

    def _publish_extras(self, camera: Camera, built: CorrectedMessages, compression: tuple) -> None:
        """After corrected/image (of every view), so its latency does not pay for them: the exposure map and the
        compressed image (encoded only while someone listens, as image_transport does)."""
        msg, frame, encoding = built.decoded.msg, built.decoded.frame, built.decoded.encoding
        if built.exposure_map is not None:
            camera.map_pub.publish(array_to_image(built.exposure_map, "mono8", msg.header))
        if camera.compressed_pub is not None and camera.compressed_pub.get_subscription_count():
            self._publish_compressed(camera.compressed_pub, built.pixels, frame.color_order, encoding, msg.header,
                                     compression)

    def _publish_compressed(self, publisher: Publisher, out: np.ndarray, color_order: str, encoding: str,
                            header, compression: tuple) -> None:
        """The frame is already published and counted: a failure here is logged, not counted as a failed frame.
        `compression`: (format, jpeg quality, png level) as read for the frame."""
        fmt, quality, level = compression
        try:
            publisher.publish(frame_to_compressed(out, color_order, encoding, header, fmt, quality, level))
        except Exception as exc:  # noqa: BLE001 - the raw output must keep flowing
            self.get_logger().error(f"publishing {publisher.topic_name} failed: {type(exc).__name__}: "
                                    f"{exc}", throttle_duration_sec=ERROR_THROTTLE_S)
            return
        self.compressed_published += 1


class IllExpNode(ExposureCorrectionMixin, Node):
    """The node: set up and running from construction on (StartupError / EnhancerError when it cannot)."""

    NAME = NODE_NAME

    def __init__(self, **node_kwargs) -> None:
        super().__init__(self.NAME, **node_kwargs)
        self._declare_parameters()
        p = self._validated_parameters()
        self._load(p)
        self._create_outputs(p)
        self._create_inputs(p)

    def stop(self) -> None:
        """Stop taking frames and the threads (before destroy_node); the models are released once the worker
        has stopped."""
        # One JOIN_TIMEOUT_S for both threads, not one each: SIGTERM while a frame is corrected and a model is
        # exported (a first `mode` change) took 3.3-4.1 s to exit.
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        self._stop_switcher(timeout=None)
        worker_stopped = self._destroy_inputs()
        self._stop_switcher(timeout=max(0.0, deadline - time.monotonic()))
        if worker_stopped:
            self.enhancer.close()


def params_file_problems(argv: list[str]) -> list[str]:
    """What is wrong with the --params-file arguments among the ROS arguments of `argv` (rcl would print its
    parser's internals over several lines): a path to nothing or to a folder. A pipe, as from
    `<(envsubst < params.yaml)`, is something rcl reads."""
    problems, in_ros_args = [], False
    for arg, following in zip(argv, [*argv[1:], None]):
        if arg == "--ros-args":
            in_ros_args = True
        elif arg == "--":
            in_ros_args = False
        elif in_ros_args and arg == "--params-file" and following is not None:
            if not os.path.exists(following):
                problems.append(f"params file not found: {following}")
            elif os.path.isdir(following):
                problems.append(f"params file {following} is a folder")
    return problems


def run_node(program: str, make_node: Callable[[], Node], argv: list[str] | None = None) -> int:
    """Initialise ROS, build the node, spin until SIGINT / SIGTERM, tear down: the console scripts of
    illexp_node and illexp_lifecycle_node. Exit 2 with one line `<program>: error: ...` when it cannot start."""
    argv = sys.argv if argv is None else argv
    if wants_help(argv):  # `python -m illexp_ros.ros.node.illexp_node --help` too, not only the console script
        return print_help(program)
    # The executor thread and the worker share the GIL; Python's default 5 ms switch interval would let a
    # busy executor (deserialising large frames) delay the worker by up to 5 ms per frame.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # While the node is built (the models load: seconds), SIGINT / SIGTERM raise KeyboardInterrupt and nothing
    # else: rclpy's handlers would shut the context down first, and the set-up would go on to fail on it ("Failed
    # to publish log message to rosout", a QoS error, exit 2). Once it is built no signal raises any more (one
    # could land anywhere: in the executor's set-up, in destroy_node, each a traceback); it is recorded, and
    # rclpy's handlers, installed once the executor exists, also shut the context down: either ends the spin.
    in_main_thread = threading.current_thread() is threading.main_thread()
    stop_requested = threading.Event()
    if in_main_thread:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # replaces the console script's start-up one
        signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        problems = params_file_problems(argv)
        if problems:
            print(f"{program}: error: {problems[0]}", file=sys.stderr)
            return 2
        try:
            rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
        except Exception as exc:  # noqa: BLE001 - e.g. an unreadable --params-file
            print(f"{program}: error: cannot initialise ROS: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
            return 2
        try:
            node = make_node()
        except (EnhancerError, StartupError, ParameterException, ValueError) as exc:
            print(f"{program}: error: {exc}", file=sys.stderr)
            rclpy.try_shutdown()
            return 2
        if in_main_thread:
            def on_signal(signum: int, frame: object) -> None:
                stop_requested.set()
                if node.loading_models:  # a lifecycle configure: leave the load (run in this thread) at once
                    node.loading_models = False  # once: a second signal must not interrupt the teardown
                    raise KeyboardInterrupt
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, on_signal)
    except KeyboardInterrupt:  # stopped while starting: as asked, in one line (was a traceback)
        if in_main_thread:  # a repeated signal must not interrupt this either
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"{program}: stopped during start-up", file=sys.stderr)
        rclpy.try_shutdown()
        return 0
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    if in_main_thread:
        install_signal_handlers(SignalHandlerOptions.ALL)  # they shut the context down, then chain to the above
    try:
        # Bounded waits, not executor.spin(): its wait has no timeout, and now and then the wake-up of a SIGINT /
        # SIGTERM does not reach it, so a node with no timer due (the lifecycle node while unconfigured, inactive
        # or finalized) kept running until a second signal (seen in 1 of 6 to 6 of 12 tries here).
        while node.context.ok() and not stop_requested.is_set():
            executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM: rclpy's handlers shut the context down; leave cleanly
    finally:
        node.stop()
        executor.shutdown(timeout_sec=0.5)
        node.destroy_node()
        rclpy.try_shutdown()
        if in_main_thread:
            # Python puts the default handlers back at exit while torch still shuts down (hundreds of ms): a
            # second SIGTERM / SIGINT then killed the process (status -15 / -2 instead of 0). Ignored handlers
            # are left alone.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_node(NODE_NAME, IllExpNode, argv)


if __name__ == "__main__":
    sys.exit(main())
