"""`illexp_stereo_node`: correct a stereo camera's two views together, so they keep one brightness level.

Two illexp_node instances on a stereo camera's left and right streams each pick their own level for their
view, and the views of one scene come back at levels up to 20 % apart (README, "Stereo pairs get different
levels"), which a direct (photometric) stereo or visual-odometry front end reads as a brighter eye. This node
matches the two views by header.stamp (ros/node/stereo_pairing.py), corrects both with one mode and, in auto
mode, the left view's route (Enhancer.enhance_views), scales both to their mean correction gain and smooths
that gain across pairs (runtime/stereo_level.py), then publishes each view with its own header.

Topics (each of illexp_node's under left/ and right/):
    in:  left/image, right/image (or <image>/compressed with input_transport: compressed), left/camera_info,
         right/camera_info
    out: left/corrected/image, right/corrected/image (+ /compressed), left/corrected/camera_info,
         right/corrected/camera_info, left/exposure_map, right/exposure_map, /diagnostics
Parameters: illexp_node's (same defaults, same run-time changes) and sync_tolerance_s, sync_queue_size.
`illexp_stereo_lifecycle_node` (illexp_stereo_lifecycle_node.py) is the same node as a managed node.
A pair is corrected as a unit: frames without a partner, and pairs replaced by a newer pair before the worker
got to them, are dropped and counted (diagnostics: unpaired, dropped). Latency counts from the moment the pair
was complete.

Run:  illexp_stereo_node --ros-args --params-file config/illexp_stereo.yaml \\
          -r left/image:=/stereo/left/image_raw -r right/image:=/stereo/right/image_raw \\
          -r left/camera_info:=/stereo/left/camera_info -r right/camera_info:=/stereo/right/camera_info
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

from sensor_msgs.msg import CompressedImage, Image

from illexp_ros.ros.node.illexp_node import (
    ERROR_THROTTLE_S,
    ExposureCorrectionMixin,
    IllExpNode,
    PendingFrame,
    run_node,
)
from illexp_ros.ros.node.image_conversion import ImageFormatError
from illexp_ros.ros.node.parameters import STEREO_PARAMETERS
from illexp_ros.ros.node.stereo_pairing import SIDES, StampPairer
from illexp_ros.runtime.stereo_level import stereo_gain_changes

NODE_NAME = "illexp_stereo_node"


@dataclass
class PendingPair:
    left: Image | CompressedImage
    right: Image | CompressedImage
    received: float  # time.monotonic() when the pair was complete
    frames = 2


class StereoCorrectionMixin(ExposureCorrectionMixin):
    """What the stereo node does differently from illexp_node (the pairing, the shared level), for its plain and
    its lifecycle form."""

    CAMERA_PREFIXES = tuple(f"{side}/" for side in SIDES)
    PARAMETER_SPECS = STEREO_PARAMETERS

    def _create_outputs(self, p: dict) -> None:
        super()._create_outputs(p)
        self.unpaired = 0  # a total, as the frame counters (a lifecycle node's reactivation keeps it)
        self._unpaired_reported = 0  # unpaired at the last diagnostics
        self.level_difference = 0.0  # stops between the views' own gains in the last pair, before sharing

    def _create_inputs(self, p: dict) -> None:
        self._pairer: StampPairer[Image | CompressedImage] = StampPairer(
            round(float(p["sync_tolerance_s"]) * 1e9), p["sync_queue_size"])
        super()._create_inputs(p)

    def _input_depth(self, p: dict) -> int:
        """Each view's subscription keeps sync_queue_size frames, not only the newest: with depth 1 a busy executor
        (the worker holding the GIL) let a view be overwritten before it was taken, which tore its pair, counted it
        `unpaired` and warned about stamps when the node was only loaded (measured, README "Stereo cameras"). The
        worker's one-slot mailbox still keeps only the newest pair, so the queue adds no latency."""
        return p["sync_queue_size"]

    def _destroy_inputs(self) -> bool:
        stopped = super()._destroy_inputs()
        waiting = self._pairer.clear()  # after the subscriptions are gone: nothing adds to it any more
        self.unpaired += waiting
        self._unpaired_reported += waiting  # given up by deactivation: no stamp problem to warn about
        self.stats.count("dropped", waiting)
        return stopped

    # --- executor thread -------------------------------------------------------------------------------
    def _on_image(self, msg: Image | CompressedImage, info: dict, camera: int = 0) -> None:
        now = time.monotonic()
        self.stats.count("received")
        self._count_transport_gap(info, camera, now)
        stamp = msg.header.stamp
        if not (stamp.sec or stamp.nanosec):
            self.stats.count("rejected")
            self.get_logger().error(f"a frame on {self.cameras[camera].input_topic} has no header.stamp: the "
                                    f"views of a pair are matched by stamp", throttle_duration_sec=ERROR_THROTTLE_S)
            return
        pairing = self._pairer.add(camera, stamp.sec * 1_000_000_000 + stamp.nanosec, msg)
        if pairing.unpaired:
            self.unpaired += pairing.unpaired
            self.stats.count("dropped", pairing.unpaired)
            self.get_logger().warning(
                f"frames without a partner of the same stamp are dropped ({self.unpaired} so far): do the two "
                f"streams share their stamps? (sync_tolerance_s {self._pairer.tolerance_ns / 1e9:g} s)",
                throttle_duration_sec=ERROR_THROTTLE_S)
        if pairing.pair is None:
            return
        if not self._rate_limit.accept(now):
            self.stats.count("dropped", 2)
            return
        self._put(PendingPair(*pairing.pair, now))

    def _more_diagnostics(self) -> dict:
        return {"unpaired": self.unpaired, "waiting_for_partner": self._pairer.waiting(),
                "sync_tolerance_s": f"{self._pairer.tolerance_ns / 1e9:g}",  # 0.015, not the 2-decimal 0.01
                "views_level_difference_stops": f"{self.level_difference:.4f}"}

    def _diagnostic_warnings(self) -> list[str]:
        """Frames without a partner in the last period: the likeliest stereo misconfiguration (free-running cameras
        with sync_tolerance_s 0) publishes nothing, and the status must not say OK."""
        unpaired, self._unpaired_reported = self.unpaired - self._unpaired_reported, self.unpaired
        if not unpaired:
            return []
        return [f"{unpaired} frames without a partner of the same stamp (sync_tolerance_s "
                f"{self._pairer.tolerance_ns / 1e9:g} s: do the two views share their stamps?)"]

    # --- worker thread ---------------------------------------------------------------------------------
    def _process(self, item: PendingFrame | PendingPair) -> None:
        decoded, bad = [], []
        for side, msg in zip(SIDES, (item.left, item.right)):
            try:
                decoded.append(self._decode(msg))
            except ImageFormatError as exc:
                bad.append(f"{side} view: {exc}")
        if bad:  # the pair is one unit: its readable view is dropped with the unreadable one
            self.stats.count("rejected", len(bad))
            self.stats.count("dropped", 2 - len(bad))
            self.get_logger().error(f"bad frame on {self.input_topic}: {'; '.join(bad)}",
                                    throttle_duration_sec=ERROR_THROTTLE_S)
            return
        # Each run-time setting read once: a change lands between pairs, never between the two views.
        strength, compensation, compression = self._strength, self._exposure_compensation, self._compression
        results = self._correct(decoded, strength)
        shared = stereo_gain_changes(self._level, [d.frame.pixels for d in decoded], [out for out, _ in results],
                                     item.received, self._segment(strength))
        self.level_difference = shared.spread
        built = []
        for side, d, (out, em), change in zip(SIDES, decoded, results, shared.changes):
            try:  # both views' messages before either is published: the pair goes out whole or not at all
                built.append(self._corrected_messages(d, out, em, change, compensation))
            except ImageFormatError as exc:
                raise ImageFormatError(f"{side} view: {exc}") from exc
        first_of_size = self._first_of_size(decoded)
        for camera, view in zip(self.cameras, built):  # both images first: neither waits for the other's extras
            self._publish_image(camera, view, item.received, first_of_size)
        for camera, view in zip(self.cameras, built):
            self._publish_extras(camera, view, compression)


class IllExpStereoNode(StereoCorrectionMixin, IllExpNode):
    """The stereo node: set up and running from construction on (StartupError / EnhancerError when it cannot)."""

    NAME = NODE_NAME


def main(argv: list[str] | None = None) -> int:
    return run_node(NODE_NAME, IllExpStereoNode, argv)


if __name__ == "__main__":
    sys.exit(main())
