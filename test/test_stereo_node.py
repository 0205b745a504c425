"""illexp_stereo_node: matching views by stamp, one level for both views, one route for both, and the node over
real DDS with the shipped fast model on two views of a real photograph."""

import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
import yaml
from dds_helpers import image_msg, stamp_of, stop_process, wait_on
from rclpy.parameter import Parameter
from skimage import data as skdata
from test_node_units import info, own_node

from illexp_ros.core import degrade
from illexp_ros.ros.node.illexp_stereo_node import IllExpStereoNode, PendingPair
from illexp_ros.ros.node.parameters import PARAMETERS, STEREO_PARAMETERS, validate
from illexp_ros.ros.node.stereo_pairing import StampPairer
from illexp_ros.runtime import Enhancer
from illexp_ros.runtime.level_smoothing import LevelSmoother, frame_level
from illexp_ros.runtime.stereo_level import stereo_gain_changes

ROOT = Path(__file__).resolve().parents[1]
H, W, SHIFT = 240, 320, 64


def views(shift: int = SHIFT, beta: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """Left and right views (RGB, H x W) of one under-exposed photograph (skimage's astronaut, public domain):
    two windows `shift` px apart, as a stereo rig with that disparity at infinity sees them."""
    photo = cv2.resize(skdata.astronaut(), (W + shift, H + shift // 2), interpolation=cv2.INTER_AREA)
    dark = (degrade(photo / 255.0, alpha=0.95, beta=beta, gamma=1.4) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(dark[:H, shift:]), np.ascontiguousarray(dark[:H, :W])


def gain(frame_in: np.ndarray, frame_out: np.ndarray) -> float:
    return frame_level(frame_out) - frame_level(frame_in)


# --- pairing -------------------------------------------------------------------------------------------------
def test_exact_pairs_come_out_in_left_right_order_whichever_side_arrives_first():
    pairer = StampPairer()
    assert pairer.add(1, 100, "R1").pair is None and pairer.waiting() == 1
    assert pairer.add(0, 100, "L1").pair == ("L1", "R1")
    assert pairer.add(0, 200, "L2").pair is None
    result = pairer.add(1, 200, "R2")
    assert result.pair == ("L2", "R2") and result.unpaired == 0 and pairer.waiting() == 0
    assert pairer.add(0, 300, "L3").pair is None and pairer.add(1, 301, "R3").pair is None  # exact only


def test_a_frame_whose_partner_cannot_come_any_more_is_given_up_and_counted():
    pairer = StampPairer()
    pairer.add(0, 100, "L1")  # its right view was lost in transport
    pairer.add(0, 200, "L2")
    result = pairer.add(1, 200, "R2")
    assert result.pair == ("L2", "R2") and result.unpaired == 1 and pairer.waiting() == 0
    pairer.add(1, 300, "R3")
    pairer.add(1, 400, "R4")
    result = pairer.add(0, 400, "L4")  # R3 is older than the pair just made
    assert result.pair == ("L4", "R4") and result.unpaired == 1


def test_frames_out_of_order_are_paired_by_stamp():
    """Left frames 3 then 2, right 2 then 3: both pairs (the other side's frames were given up by position, so
    the frame stamped 3 was lost with nothing older than it paired)."""
    pairer = StampPairer()
    pairer.add(0, 300, "L3")
    pairer.add(0, 200, "L2")
    assert pairer.add(1, 200, "R2").pair == ("L2", "R2")
    result = pairer.add(1, 300, "R3")
    assert result.pair == ("L3", "R3") and result.unpaired == 0 and pairer.waiting() == 0


def test_the_queue_is_bounded_and_tolerance_picks_the_nearest_partner():
    pairer = StampPairer(queue_size=2)
    assert [pairer.add(0, t, t).unpaired for t in (1, 2, 3)] == [0, 0, 1]  # one side only: bounded
    assert pairer.waiting() == 2 and pairer.clear() == 2 and pairer.waiting() == 0
    pairer = StampPairer(tolerance_ns=10)
    pairer.add(1, 95, "R95")
    pairer.add(1, 103, "R103")
    assert pairer.add(0, 101, "L101").pair == ("L101", "R103")  # nearest, and R95 before it is given up
    assert pairer.add(0, 200, "L200").pair is None and pairer.add(1, 215, "R215").pair is None
    with pytest.raises(ValueError):
        StampPairer(tolerance_ns=-1)
    with pytest.raises(ValueError):
        StampPairer(queue_size=0)


# --- one level for both views ----------------------------------------------------------------------------------
def test_both_views_get_the_mean_gain_and_the_pair_is_smoothed_as_one_stream():
    rng = np.random.default_rng(0)
    left_in = rng.integers(20, 80, (40, 60, 3), dtype=np.uint8)
    right_in = rng.integers(20, 80, (40, 60, 3), dtype=np.uint8)
    left_out = cv2.convertScaleAbs(left_in, alpha=2.0)  # +1 stop
    right_out = cv2.convertScaleAbs(right_in, alpha=2.6)  # +1.38 stops
    before = gain(right_in, right_out) - gain(left_in, left_out)
    assert before > 0.3
    result = stereo_gain_changes(LevelSmoother(0.0), [left_in, right_in], [left_out, right_out])
    changes = result.changes
    assert result.spread == pytest.approx(before, abs=1e-9)
    shared = [cv2.convertScaleAbs(out, alpha=c) for out, c in zip((left_out, right_out), changes)]
    assert abs(gain(left_in, shared[0]) - gain(right_in, shared[1])) < 0.01
    # the shared gain is the mean of the two: neither view is the reference
    assert changes[0] > 1.0 > changes[1]
    assert math.log2(changes[0]) == pytest.approx(before / 2, abs=1e-6)
    # with smoothing, the pair's gain follows its average like a single stream's; the views still share it
    smoother = LevelSmoother(0.9)
    stereo_gain_changes(smoother, [left_in, right_in], [left_out, right_out], t=0.0)
    brighter = [cv2.convertScaleAbs(out, alpha=1.2) for out in (left_out, right_out)]
    changes = stereo_gain_changes(smoother, [left_in, right_in], brighter, t=0.033).changes
    assert changes[0] < 1.0 and changes[1] < 1.0  # the sudden extra 0.26 stop is smoothed away, on both views
    assert math.log2(changes[0] / changes[1]) == pytest.approx(before, abs=0.01)


def test_the_reported_spread_is_the_views_own_gains_before_sharing():
    """Read back from the factors, a difference under MIN_GAIN_CHANGE (their snapping to 1.0) was reported as 0."""
    left_in = np.full((16, 16, 3), 100, np.uint8)
    right_in = left_in.copy()
    right_in[:3, :] = 101  # 3 of 16 rows one level brighter: right's own gain ~0.0027 stops lower
    out = np.full((16, 16, 3), 200, np.uint8)
    own = abs(gain(left_in, out) - gain(right_in, out))
    shared = stereo_gain_changes(LevelSmoother(0.0), [left_in, right_in], [out, out.copy()])
    assert shared.changes == [1.0, 1.0] and own > 0.002 and shared.spread == pytest.approx(own, abs=1e-9)


def test_views_at_one_level_are_left_alone_and_bad_views_are_refused():
    frame = np.full((8, 8, 3), 60, np.uint8)
    out = np.full((8, 8, 3), 120, np.uint8)
    assert stereo_gain_changes(LevelSmoother(0.0), [frame, frame], [out, out]).changes == [1.0, 1.0]
    with pytest.raises(ValueError, match="as many"):
        stereo_gain_changes(LevelSmoother(0.0), [frame, frame], [out])
    with pytest.raises(ValueError, match="one shape"):
        stereo_gain_changes(LevelSmoother(0.0), [frame, frame], [out, out[:4]])


# --- one route for both views ----------------------------------------------------------------------------------
def test_auto_mode_routes_both_views_by_the_left_one():
    """A dark left view and a well-exposed right one: each on its own, auto would correct the left and leave the
    right untouched; as a pair, both take the left view's route (and the other way round, both are left alone)."""
    dark, _ = views()
    well = cv2.resize(skdata.astronaut(), (W, H), interpolation=cv2.INTER_AREA)
    with Enhancer.from_model("default", backend="torch_cpu", mode="auto", fast=True) as enh:
        assert np.array_equal(enh.enhance(well), well) and enh.last_route == "well-exposed"
        (out_dark, _), (out_well, _) = enh.enhance_views([dark, well], ["rgb", "rgb"])
        assert enh.last_route != "well-exposed"
        assert not np.array_equal(out_well, well) and not np.array_equal(out_dark, dark)
        (out_well, em), (out_dark, _) = enh.enhance_views([well, dark], ["rgb", "rgb"], want_map=True)
        assert enh.last_route == "well-exposed" and em.shape == (H, W)
        assert np.array_equal(out_well, well) and np.array_equal(out_dark, dark)
        with pytest.raises(ValueError, match="colour order per frame"):
            enh.enhance_views([dark, well], ["rgb"])


# --- the node in-process ---------------------------------------------------------------------------------------
def stereo_msgs(stamp_ns: int, left: np.ndarray, right: np.ndarray) -> tuple:
    return image_msg(left, "rgb8", stamp_ns, "left_optical"), image_msg(right, "rgb8", stamp_ns, "right_optical")


def test_stereo_parameters_are_validated_and_the_config_files_agree():
    assert "sync_tolerance_s must be in" in validate("sync_tolerance_s", 2.0, STEREO_PARAMETERS)
    assert "sync_queue_size must be in" in validate("sync_queue_size", 0, STEREO_PARAMETERS)
    assert validate("sync_queue_size", 5) == "unknown parameter 'sync_queue_size'"  # not illexp_node's
    mono = yaml.safe_load((ROOT / "config" / "illexp.yaml").read_text())["/**/illexp_node"]["ros__parameters"]
    stereo = yaml.safe_load((ROOT / "config" / "illexp_stereo.yaml").read_text())
    stereo = stereo["/**/illexp_stereo_node"]["ros__parameters"]
    assert set(stereo) <= set(STEREO_PARAMETERS)
    assert {"sync_tolerance_s", "sync_queue_size"} <= set(stereo)
    for name, value in stereo.items():
        assert validate(name, value, STEREO_PARAMETERS) is None, name
        if name in mono:
            assert value == mono[name], f"{name}: illexp_stereo.yaml says {value!r}, illexp.yaml {mono[name]!r}"
    # what illexp_stereo.yaml leaves out is the node's declared default, which is illexp.yaml's value
    for name in set(PARAMETERS) - set(stereo):
        assert PARAMETERS[name].default == mono[name], name


def published_to(n: IllExpStereoNode) -> tuple[threading.Condition, dict[int, list]]:
    """What the node publishes on each view's corrected/image, collected in-process."""
    cond, published = threading.Condition(), {0: [], 1: []}

    def keep(i, msg):
        with cond:
            published[i].append(msg)
            cond.notify_all()
    for i, camera in enumerate(n.cameras):
        camera.image_pub.publish = lambda msg, i=i: keep(i, msg)
    return cond, published


def test_the_node_pairs_views_and_publishes_both_at_one_level():
    with own_node(Parameter("model", value="mixed"), Parameter("fast", value=True),
                  Parameter("level_smoothing", value=0.0), node_class=IllExpStereoNode, backend="torch_cpu") as n:
        cond, published = published_to(n)
        assert [c.image_pub.topic_name for c in n.cameras] == ["/left/corrected/image", "/right/corrected/image"]
        left, right = views()
        msg_l, msg_r = stereo_msgs(5_000_000_001, left, right)
        n._on_image(msg_r, info(1, gid=2), camera=1)
        assert n._pairer.waiting() == 1 and not published[0]  # waits for its partner
        n._on_image(msg_l, info(1, gid=1), camera=0)
        wait_on(cond, lambda: published[0] and published[1], 30, "the corrected pair")
        out_l, out_r = (np.frombuffer(published[i][0].data, np.uint8).reshape(H, W, 3) for i in (0, 1))
        assert published[0][0].header.frame_id == "left_optical"
        assert published[1][0].header.frame_id == "right_optical"
        assert stamp_of(published[0][0]) == stamp_of(published[1][0]) == 5_000_000_001
        # each view on its own, as two illexp_node instances would correct them
        alone_l, alone_r = n.enhancer.enhance(left), n.enhancer.enhance(right)
        apart = abs(gain(left, alone_l) - gain(right, alone_r))
        assert apart > 0.02, f"the views' own corrections differ by only {apart:.4f} stops: no test of sharing"
        assert abs(gain(left, out_l) - gain(right, out_r)) < 0.004
        assert float(n._more_diagnostics()["views_level_difference_stops"]) == pytest.approx(apart, abs=0.0005)
        # a frame whose partner never came is counted as unpaired, a frame without a stamp is refused
        n._on_image(image_msg(left, "rgb8", 7_000_000_000), info(2, gid=1), camera=0)
        n._on_image(image_msg(left, "rgb8", 8_000_000_000), info(3, gid=1), camera=0)
        n._on_image(image_msg(right, "rgb8", 8_000_000_000), info(2, gid=2), camera=1)
        n._on_image(image_msg(right, "rgb8", 0), info(3, gid=2), camera=1)
        wait_on(cond, lambda: len(published[1]) == 2, 30, "the second pair")
        assert stamp_of(published[0][1]) == stamp_of(published[1][1]) == 8_000_000_000
        snap = n.stats.snapshot()
        assert n.unpaired == 1 and snap.rejected == 1 and snap.received == 6
        assert n._more_diagnostics()["unpaired"] == 1


def test_each_views_subscription_keeps_sync_queue_size_frames_and_the_rest_keep_one():
    """With depth 1 a busy executor let a view be overwritten before it was taken: its pair was torn, counted
    unpaired and warned about as a stamp problem (measured under overload: 87-127 of 600 frames unpaired at depth
    1, 5-48 at depth 5). The mono node keeps only the newest frame."""
    with own_node(Parameter("sync_queue_size", value=7), node_class=IllExpStereoNode) as n:
        assert [c.image_sub.qos_profile.depth for c in n.cameras] == [7, 7]
        assert [c.info_sub.qos_profile.depth for c in n.cameras if c.info_sub is not None] in ([], [1, 1])
        assert {pub.qos_profile.depth for c in n.cameras for pub in c.publishers() if pub is not None} == {1}
    with own_node() as n:
        assert n.cameras[0].image_sub.qos_profile.depth == 1


def test_a_bad_view_loses_its_pair_and_is_counted():
    with own_node(node_class=IllExpStereoNode) as n:
        cond, published = published_to(n)
        left, right = views()
        msg_l, msg_r = stereo_msgs(1, left, right)
        msg_r.encoding = "32FC1"
        n._put(PendingPair(msg_l, msg_r, time.monotonic()))
        wait_on(threading.Condition(), lambda: n.stats.snapshot().rejected, 10, "the pair rejected")
        snap = n.stats.snapshot()
        assert (snap.rejected, snap.dropped, snap.published) == (1, 1, 0) and not published[0]
        n._put(PendingPair(*stereo_msgs(2, left, right), time.monotonic()))  # the next pair goes through
        wait_on(cond, lambda: published[0] and published[1], 10, "the next pair")
        both_bad = stereo_msgs(3, left, right)
        for msg in both_bad:
            msg.encoding = "32FC1"
        n._put(PendingPair(*both_bad, time.monotonic()))
        wait_on(threading.Condition(), lambda: n.stats.snapshot().rejected == 3, 10, "both views rejected")
        assert n.stats.snapshot().dropped == 1


def test_both_images_go_out_before_either_views_extras_and_the_first_pair_is_not_timed():
    """The right view's corrected/image waited for the left view's exposure map and compressed image (82-96 ms
    of PNG encoding at 720p), and the first pair's right view was counted in the latency statistics with its
    one-off set-up cost."""
    with own_node(Parameter("publish_exposure_map", value=True), node_class=IllExpStereoNode) as n:
        order = []
        for side, camera in zip(("left", "right"), n.cameras):
            camera.image_pub.publish = lambda msg, side=side: order.append(f"{side} image")
            camera.map_pub.publish = lambda msg, side=side: order.append(f"{side} map")
            camera.compressed_pub.get_subscription_count = lambda: 1
            camera.compressed_pub.publish = lambda msg, side=side: order.append(f"{side} compressed")
        left, right = views()
        n._process(PendingPair(*stereo_msgs(1, left, right), time.monotonic()))
        assert order == ["left image", "right image", "left map", "left compressed", "right map",
                         "right compressed"]
        assert np.isnan(n.stats.snapshot().latency_p50_ms)  # neither view of the first pair of this size
        n._process(PendingPair(*stereo_msgs(2, left, right), time.monotonic()))
        assert n.stats.snapshot().latency_p50_ms >= 0.0


def test_diagnostics_warn_while_frames_find_no_partner():
    """Free-running cameras with sync_tolerance_s 0: nothing is paired, and /diagnostics said OK all along."""
    from diagnostic_msgs.msg import DiagnosticStatus

    from illexp_ros.ros.node.diagnostics import diagnostic_array

    with own_node(Parameter("sync_tolerance_s", value=0.015), node_class=IllExpStereoNode) as n:
        assert n._more_diagnostics()["sync_tolerance_s"] == "0.015"  # not "0.01" (2 decimals)
        left, right = views()
        for i in range(1, 8):  # the right view 20 ms after the left: outside the tolerance
            n._on_image(image_msg(left, "rgb8", i * 100_000_000), info(i, gid=1), camera=0)
            n._on_image(image_msg(right, "rgb8", i * 100_000_000 + 20_000_000), info(i, gid=2), camera=1)
        warnings = n._diagnostic_warnings()
        assert len(warnings) == 1 and f"{n.unpaired} frames without a partner" in warnings[0], warnings
        status = diagnostic_array(n.stats.snapshot(), "n", "cpu", n.input_topic, {}, rclpy.time.Time().to_msg(),
                                  warnings).status[0]
        assert status.level == DiagnosticStatus.WARN and "without a partner" in status.message
        assert n._diagnostic_warnings() == []  # none new since


def test_a_view_that_fails_on_the_way_out_takes_its_pair_with_it():
    """output_encoding yuv422 and a right view of odd width: the right view's message cannot be built. The left
    one was already published (half a pair), and the pair counted three times (2 frames: 1 published, 1
    rejected, 1 dropped)."""
    with own_node(Parameter("output_encoding", value="yuv422"), node_class=IllExpStereoNode) as n:
        cond, published = published_to(n)
        n._on_image(image_msg(np.full((8, 10, 3), 50, np.uint8), "rgb8", 1), info(1, 1), camera=0)
        n._on_image(image_msg(np.full((8, 9, 3), 50, np.uint8), "rgb8", 1), info(1, 2), camera=1)
        wait_on(threading.Condition(), lambda: n.stats.snapshot().rejected, 10, "the pair rejected")
        snap = n.stats.snapshot()
        assert (snap.received, snap.published, snap.rejected, snap.dropped) == (2, 0, 1, 1)
        assert not published[0] and not published[1]


def test_a_parameter_change_lands_between_pairs_not_between_views():
    """exposure_compensation set (on the executor thread) while the left view is being published: the right view
    came out at the new level, a stop from the left."""
    with own_node(node_class=IllExpStereoNode) as n:
        cond, published = published_to(n)
        left_publish = n.cameras[0].image_pub.publish

        def left_then_a_change(msg):
            left_publish(msg)
            assert n.set_parameters([Parameter("exposure_compensation", value=1.0)])[0].successful
        n.cameras[0].image_pub.publish = left_then_a_change
        frame = np.full((8, 10, 3), 60, np.uint8)
        n._process(PendingPair(image_msg(frame, "rgb8", 1), image_msg(frame, "rgb8", 1), time.monotonic()))
        levels = [frame_level(np.frombuffer(published[i][0].data, np.uint8).reshape(8, 10, 3)) for i in (0, 1)]
        assert abs(levels[0] - levels[1]) < 0.01, levels


def test_the_lifecycle_form_subscribes_to_both_views_only_while_active():
    from rclpy.lifecycle import TransitionCallbackReturn as R

    from illexp_ros.ros.node.illexp_stereo_lifecycle_node import IllExpStereoLifecycleNode

    views_in = {"/left/image", "/right/image", "/left/camera_info", "/right/camera_info"}
    with own_node(node_class=IllExpStereoLifecycleNode) as n:
        assert n.get_name() == "illexp_stereo_node" and not {s.topic_name for s in n.subscriptions}
        assert n.trigger_configure() == R.SUCCESS
        assert {"/left/corrected/image", "/right/corrected/image"} <= {p.topic_name for p in n.publishers}
        assert not {s.topic_name for s in n.subscriptions} & views_in
        assert n.trigger_activate() == R.SUCCESS
        assert {s.topic_name for s in n.subscriptions} >= views_in
        cond, published = published_to(n)
        left, right = views()
        n._on_image(image_msg(left, "rgb8", 1), info(1, gid=1), camera=0)
        n._on_image(image_msg(right, "rgb8", 1), info(1, gid=2), camera=1)
        wait_on(cond, lambda: published[0] and published[1], 10, "a pair while active")
        n._on_image(image_msg(left, "rgb8", 2), info(2, gid=1), camera=0)  # its partner never comes
        assert n.trigger_deactivate() == R.SUCCESS
        assert not {s.topic_name for s in n.subscriptions} & views_in
        assert n.unpaired == 1 and n.stats.snapshot().dropped == 1  # the waiting frame, given up and counted
        assert n.trigger_activate() == R.SUCCESS
        assert n._diagnostic_warnings() == []  # frames given up by deactivation are no stamp problem
        n._on_image(image_msg(left, "rgb8", 3), info(3, gid=1), camera=0)
        n._on_image(image_msg(right, "rgb8", 3), info(3, gid=2), camera=1)
        wait_on(cond, lambda: len(published[1]) == 2, 10, "a pair after reactivation")
        assert n.unpaired == 1  # a total across activations, as the frame counters
        assert n.trigger_deactivate() == R.SUCCESS and n.trigger_cleanup() == R.SUCCESS
        assert not {p.topic_name for p in n.publishers} & {"/left/corrected/image", "/right/corrected/image"}


@pytest.mark.parametrize("module", ["illexp_stereo_node", "illexp_stereo_lifecycle_node"])
def test_help_names_the_stereo_topics_and_parameters(module):
    proc = subprocess.run([sys.executable, "-m", f"illexp_ros.ros.node.{module}", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {module} ")
    assert "left/corrected/image" in proc.stdout and "sync_tolerance_s" in proc.stdout
    assert "config/illexp_stereo.yaml" in proc.stdout
    assert ("ros2 lifecycle set /illexp_stereo_node configure" in proc.stdout) == ("lifecycle" in module)


# --- over DDS ------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_stereo_node_over_dds_keeps_both_views_at_one_level():
    ns = f"stereo{os.getpid()}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "illexp_ros.ros.node.illexp_stereo_node", "--ros-args", "--params-file",
         str(ROOT / "config" / "illexp_stereo.yaml"), "-r", f"__ns:=/{ns}",
         "-r", f"left/image:=/{ns}_rig/left/image_raw", "-r", f"right/image:=/{ns}_rig/right/image_raw",
         "-p", "level_smoothing:=0.0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from illexp_ros.ros.node.background_spin import BackgroundSpin

        node = rclpy.create_node("stereo_test_harness", context=context)
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        pubs = [node.create_publisher(Image, f"/{ns}_rig/{side}/image_raw", QoSProfile(depth=1))
                for side in ("left", "right")]
        lock = threading.Condition()
        got: dict[str, dict[int, Image]] = {"left": {}, "right": {}}

        def store(side: str, msg: Image) -> None:
            with lock:
                got[side][stamp_of(msg)] = msg
                lock.notify_all()

        for side in ("left", "right"):
            node.create_subscription(Image, f"/{ns}/{side}/corrected/image", lambda m, s=side: store(s, m), qos)
        spin = BackgroundSpin(node, context)
        left, right = views()
        stamp = 1_000_000_000
        try:
            deadline = time.monotonic() + 60
            while True:  # until the node is up and discovered (early frames may be lost)
                stamp += 1
                for pub, frame, frame_id in ((pubs[0], left, "left_optical"), (pubs[1], right, "right_optical")):
                    pub.publish(image_msg(frame, "rgb8", stamp, frame_id))
                try:
                    wait_on(lock, lambda s=stamp: s in got["left"] and s in got["right"], 1.0, "a pair")
                    break
                except AssertionError:
                    assert proc.poll() is None, proc.stdout.read()
                    assert time.monotonic() < deadline, "no corrected pair within 60 s"
            out = {side: np.frombuffer(got[side][stamp].data, np.uint8).reshape(H, W, 3) for side in got}
            assert got["left"][stamp].header.frame_id == "left_optical"
            assert got["right"][stamp].header.frame_id == "right_optical"
            assert abs(gain(left, out["left"]) - gain(right, out["right"])) < 0.004
        finally:
            spin.stop()
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        stop_process(proc)


@pytest.mark.integration
@pytest.mark.parametrize("stereo", [False, True], ids=["illexp_node", "illexp_stereo_node"])
def test_node_bench_times_a_pair_until_both_views_are_back(stereo):
    extra = ["--stereo", "--param", "sync_queue_size:=3"] if stereo else []
    proc = subprocess.run([sys.executable, "-m", "illexp_ros.bench_cli", "--node", "--backends", "passthrough",
                           "--sizes", "64x48", "--frames", "3", *extra],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.startswith("passthrough")]
    assert rows and rows[0][1:4] == ["64x48", "3", "0"], proc.stdout
    assert ("illexp_stereo_node, a pair per ping" in proc.stdout) == stereo


def test_node_bench_refuses_a_stereo_parameter_without_stereo(capsys):
    from illexp_ros.ros.demo.node_bench import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--param", "sync_tolerance_s:=0.01"])
    assert "a parameter of illexp_stereo_node only (add --stereo)" in capsys.readouterr().err
    assert parse_args(["--stereo", "--param", "sync_tolerance_s:=0.01"]).stereo
