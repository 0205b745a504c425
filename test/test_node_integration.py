"""illexp_node in its own process, over real DDS: headers, encodings, quality, bad input, overload,
parameter changes and shutdown.

One node process (raw input, torch_cpu, the trained mixed model when models/mixed.pt exists, else a tiny
random model) serves most tests; a second one (passthrough, compressed input) serves the compressed fuzz test.
Both start while the test process sets up, so their start-up overlaps.
"""

from __future__ import annotations

import array
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from dds_helpers import image_msg, param_value, stop_process, wait_on, wait_until_ended
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import SetParameters
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from shipped import shipped_model
from skimage import data as skdata

from illexp_ros.core import classify_exposure, degrade
from illexp_ros.core.metrics import psnr
from illexp_ros.ros.node.background_spin import BackgroundSpin
from illexp_ros.runtime.correction_strength import apply_strength
from illexp_ros.runtime.exposure_compensation import compensate_exposure

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
H, W = 240, 320
NODE_START_S = 30.0
REPLY_S = 10.0


def node_command(name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "illexp_ros.ros.node.illexp_node", "--ros-args", "--params-file",
            str(ROOT / "config" / "illexp.yaml"), "-r", f"__ns:=/{name}_ns",
            "-r", "image:=/cam/image_raw", "-r", "camera_info:=/cam/camera_info", *extra]


def start_node(name: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(node_command(name, *extra), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def reference_frame() -> np.ndarray:
    """A real photograph (skimage's chelsea, CC0), RGB, H x W."""
    return cv2.resize(skdata.chelsea(), (W, H), interpolation=cv2.INTER_AREA)


def under_exposed(rgb: np.ndarray) -> np.ndarray:
    return (degrade(rgb / 255.0, alpha=0.95, beta=0.55, gamma=1.4) * 255.0 + 0.5).astype(np.uint8)


def pixels_of(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, -1)


class Harness:
    """The test side: publishes camera frames, collects corrected frames and diagnostics."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("illexp_test_harness", context=self.context)
        reliable1 = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        deep = QoSProfile(depth=500, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "/cam/image_raw", reliable1)
        self.compressed_pub = self.node.create_publisher(CompressedImage, "/cam/image_raw/compressed",
                                                         reliable1)
        self.info_pub = self.node.create_publisher(CameraInfo, "/cam/camera_info", reliable1)
        self.lock = threading.Condition()
        self.frames: dict[str, list[tuple[float, Image]]] = {"main": [], "comp": []}
        self.infos: list[CameraInfo] = []
        self.diags: dict[str, list[dict[str, str]]] = {"main": [], "comp": []}
        for key, ns in (("main", "/illexp_main_ns"), ("comp", "/illexp_comp_ns")):
            self.node.create_subscription(Image, f"{ns}/corrected/image",
                                          lambda m, k=key: self._store(self.frames[k], (time.monotonic(), m)),
                                          deep)
        self.maps: list[Image] = []
        self.outputs = [  # the node outputs a test may wait for a first message of
            self.node.create_subscription(Image, "/illexp_main_ns/exposure_map",
                                          lambda m: self._store(self.maps, m), deep),
            self.node.create_subscription(CameraInfo, "/illexp_main_ns/corrected/camera_info",
                                          lambda m: self._store(self.infos, m), deep)]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, deep)
        self.param_client = self.node.create_client(SetParameters, "/illexp_main_ns/illexp_node/set_parameters")
        self.spin = BackgroundSpin(self.node, self.context)

    def _store(self, bucket: list, item) -> None:
        with self.lock:
            bucket.append(item)
            self.lock.notify_all()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            key = "main" if status.name.startswith("/illexp_main_ns/") else "comp" if \
                status.name.startswith("/illexp_comp_ns/") else None
            if key:
                self._store(self.diags[key], {kv.key: kv.value for kv in status.values})

    def wait_for(self, predicate, timeout: float, what: str):
        return wait_on(self.lock, predicate, timeout, what)

    def frame_with_stamp(self, key: str, stamp_ns: int, timeout: float = REPLY_S) -> Image:
        def find():
            for _, m in self.frames[key]:
                if m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp_ns:
                    return m
            return None
        return self.wait_for(find, timeout, f"a corrected frame with stamp {stamp_ns} from {key}")

    def settled_counters(self, key: str, timeout: float = 15.0, until=None) -> dict[str, int]:
        """Counters from two consecutive diagnostics messages that agree (nothing in flight) and, with
        `until`, satisfy it. Two agreeing messages are not enough when nothing follows a burst: the burst's
        last frame may still be on its way (a lost fragment waits for Fast DDS's next heartbeat, 3 s), and a
        frame lost at the end of a burst only counts as a gap once a later one arrives."""
        names = ("received", "published", "dropped", "dropped_in_transport", "rejected", "failed")

        def settled():
            d = self.diags[key]
            if len(d) >= 2 and all(d[-1][n] == d[-2][n] for n in names):
                counters = {n: int(d[-1][n]) for n in names}
                if until is None or until(counters):
                    return counters | {"_index": len(d)}
            return None
        start = len(self.diags[key])
        self.wait_for(lambda: len(self.diags[key]) >= start + 2, timeout, f"diagnostics from {key}")
        return self.wait_for(settled, timeout, f"settled diagnostics from {key}")

    def close(self) -> None:
        self.spin.stop()


@pytest.fixture(scope="module")
def nodes():
    main = start_node("illexp_main", "-p", f"model:={shipped_model('mixed')}", "-p", "backend:=torch_cpu")
    comp = start_node("illexp_comp", "-p", "backend:=passthrough", "-p", "input_transport:=compressed")
    harness = Harness()
    try:
        for key, proc, pub in (("main", main, harness.image_pub), ("comp", comp, harness.compressed_pub)):
            harness.wait_for(lambda p=pub, pr=proc: p.get_subscription_count() > 0 or pr.poll() is not None,
                             NODE_START_S, f"the {key} node to subscribe")
            assert proc.poll() is None, f"{key} node exited: {proc.stdout.read()}"
        # Every link matched before a test runs, so that a test run alone (-k, --lf) can send one frame and wait
        # for it: a frame published before the node's publisher matched the harness is never delivered.
        send_until_answered(harness, "main", lambda s: image_msg(under_exposed(reference_frame()), "rgb8", s),
                            harness.image_pub.publish)
        send_until_answered(harness, "comp", lambda s: compressed_msg(under_exposed(reference_frame()), s),
                            harness.compressed_pub.publish)
        harness.wait_for(lambda: all(sub.get_publisher_count() for sub in harness.outputs), NODE_START_S,
                         "the nodes' exposure map and camera_info to match")
        harness.wait_for(lambda: harness.diags["main"] and harness.diags["comp"], NODE_START_S,
                         "diagnostics from both nodes")
        yield harness, {"main": main, "comp": comp}
    finally:
        for proc in (main, comp):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        harness.close()


def compressed_msg(bgr: np.ndarray, stamp: int, payload: bytes | None = None) -> CompressedImage:
    """A CompressedImage of `bgr` as png (format says jpeg: decoders go by the bytes), or of `payload`."""
    msg = CompressedImage(format="jpeg")
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
    msg.header.frame_id = "cam_optical"
    msg.data = array.array("B", payload if payload is not None else cv2.imencode(".png", bgr)[1].tobytes())
    return msg


def send_until_answered(harness: Harness, key: str, make_msg, publish, tries: int = 40):
    """The first frames after discovery may be lost (and the model warms up): resend until one comes back."""
    for i in range(tries):
        stamp = time.time_ns() + i
        publish(make_msg(stamp))
        try:
            return harness.frame_with_stamp(key, stamp, timeout=1.0), stamp
        except AssertionError:
            continue
    raise AssertionError(f"no corrected frame from {key} after {tries} tries")


@pytest.mark.parametrize("encoding", ["bgr8", "rgb8"])
def test_corrected_frame_keeps_header_shape_and_encoding(nodes, encoding):
    harness, _ = nodes
    ref = reference_frame()
    dark = under_exposed(ref)
    pixels = dark[..., ::-1] if encoding == "bgr8" else dark
    out, stamp = send_until_answered(harness, "main", lambda s: image_msg(pixels, encoding, s),
                                     harness.image_pub.publish)
    assert out.header.frame_id == "cam_optical"
    assert out.header.stamp.sec * 1_000_000_000 + out.header.stamp.nanosec == stamp
    assert (out.height, out.width, out.encoding, out.step) == (H, W, encoding, W * 3)
    corrected = pixels_of(out)
    assert corrected.shape == (H, W, 3)
    assert not np.array_equal(corrected, pixels), "the node must change an under-exposed frame"
    corrected_rgb = corrected[..., ::-1] if encoding == "bgr8" else corrected
    assert psnr(corrected_rgb, ref) > psnr(dark, ref) + 1.0


def test_bayer_frame_comes_back_as_a_corrected_mosaic_of_the_same_pattern(nodes):
    """A machine-vision camera's raw bayer_rggb8: demosaiced for the network, published as bayer_rggb8 again
    (so image_proc's debayer downstream works as before), with the same header, and brighter where it was dark."""
    harness, _ = nodes
    ref = reference_frame()
    dark = under_exposed(ref)
    mosaic = np.empty((H, W), np.uint8)  # R G / G B, from the RGB frame
    mosaic[0::2, 0::2], mosaic[0::2, 1::2] = dark[0::2, 0::2, 0], dark[0::2, 1::2, 1]
    mosaic[1::2, 0::2], mosaic[1::2, 1::2] = dark[1::2, 0::2, 1], dark[1::2, 1::2, 2]
    out, stamp = send_until_answered(harness, "main", lambda s: image_msg(mosaic, "bayer_rggb8", s),
                                     harness.image_pub.publish)
    assert out.header.frame_id == "cam_optical"
    assert out.header.stamp.sec * 1_000_000_000 + out.header.stamp.nanosec == stamp
    assert (out.height, out.width, out.encoding, out.step) == (H, W, "bayer_rggb8", W)
    corrected = np.frombuffer(out.data, np.uint8).reshape(H, W)
    colour = cv2.cvtColor(corrected, cv2.COLOR_BayerRGGB2RGB)
    assert psnr(colour, ref) > psnr(cv2.cvtColor(mosaic, cv2.COLOR_BayerRGGB2RGB), ref) + 1.0


def test_camera_info_is_republished_unchanged(nodes):
    harness, _ = nodes
    info = CameraInfo(width=W, height=H, distortion_model="plumb_bob")
    info.header.frame_id = "cam_optical"
    info.k = [300.0, 0.0, 160.0, 0.0, 300.0, 120.0, 0.0, 0.0, 1.0]
    harness.wait_for(lambda: harness.info_pub.get_subscription_count() > 0, REPLY_S, "camera_info subscriber")
    deadline = time.monotonic() + REPLY_S  # the first messages after discovery may be lost: until one is back
    while not harness.infos and time.monotonic() < deadline:
        harness.info_pub.publish(info)
        time.sleep(0.1)
    got = harness.wait_for(lambda: harness.infos and harness.infos[-1], REPLY_S, "corrected/camera_info")
    assert got.header.frame_id == "cam_optical" and list(got.k) == list(info.k) and got.width == W


def malformed_images(count: int) -> list[Image]:
    good = under_exposed(reference_frame())
    makers = [
        lambda: image_msg(good, "32FC1", 1),                                # unsupported encoding
        lambda: image_msg(good, "", 2),                                      # no encoding at all
        lambda: Image(height=0, width=W, encoding="bgr8", step=W * 3),       # zero height
        lambda: Image(height=H, width=0, encoding="bgr8", step=0),           # zero width
    ]

    def short():
        m = image_msg(good, "bgr8", 3)
        m.data = array.array("B", bytes(len(m.data) // 2))                  # data shorter than step*height
        return m

    def small_step():
        m = image_msg(good, "bgr8", 4)
        m.step = W * 3 - 1                                                   # step < width*channels
        return m

    def odd_yuv():
        m = image_msg(np.zeros((4, 5, 2), np.uint8), "yuv422_yuy2", 5)       # YUYV needs an even width
        return m

    makers += [short, small_step, odd_yuv]
    return [makers[i % len(makers)]() for i in range(count)]


def test_fuzzed_input_never_kills_the_node(nodes):
    harness, procs = nodes
    before = harness.settled_counters("main")
    bad = malformed_images(56)
    for msg in bad:
        harness.image_pub.publish(msg)
        time.sleep(0.003)
    good = under_exposed(reference_frame())
    stamp = time.time_ns()
    harness.image_pub.publish(image_msg(good, "bgr8", stamp))
    out = harness.frame_with_stamp("main", stamp)
    assert pixels_of(out).shape == (H, W, 3)
    assert procs["main"].poll() is None
    after = harness.settled_counters("main")
    delta = {k: after[k] - before[k] for k in before if not k.startswith("_")}
    assert delta["published"] == 1
    assert delta["rejected"] >= 1
    # Every bad frame is either rejected or dropped by the newest-frame policy, none is published.
    assert delta["rejected"] + delta["dropped"] == len(bad)


def test_compressed_frames_that_do_not_decode_are_rejected(nodes):
    harness, procs = nodes
    good = under_exposed(reference_frame())[..., ::-1]

    def compressed(stamp, payload=None):
        return compressed_msg(good, stamp, payload)

    send_until_answered(harness, "comp", compressed, harness.compressed_pub.publish)
    before = harness.settled_counters("comp")
    garbage = [b"", b"garbage", b"\xff\xd8\xff\xe0" + bytes(64), b"\x89PNG\r\n\x1a\n" + bytes(32)]
    for i in range(52):
        harness.compressed_pub.publish(compressed(i + 1, garbage[i % len(garbage)]))
        time.sleep(0.003)
    stamp = time.time_ns()
    harness.compressed_pub.publish(compressed(stamp))
    out = harness.frame_with_stamp("comp", stamp)
    assert out.encoding == "bgr8" and pixels_of(out).shape == (H, W, 3)
    np.testing.assert_array_equal(pixels_of(out), good)  # passthrough backend: the decoded frame itself
    assert procs["comp"].poll() is None
    after = harness.settled_counters("comp")
    assert after["rejected"] - before["rejected"] + after["dropped"] - before["dropped"] == 52


def test_overload_drops_newest_first_and_accounts_for_every_frame(nodes):
    harness, procs = nodes
    dark = under_exposed(reference_frame())
    # The node counts frames lost in transport from gaps in the publisher's sequence numbers, so it must have
    # seen this publisher before the burst (frames lost before a publisher's first delivered one count nowhere).
    send_until_answered(harness, "main", lambda s: image_msg(dark, "bgr8", s), harness.image_pub.publish)
    before = harness.settled_counters("main")
    with harness.lock:
        first = len(harness.frames["main"])
    base = time.time_ns()
    count = 200
    for i in range(count):
        harness.image_pub.publish(image_msg(dark, "bgr8", base + i))
    # The burst's last frame is the one a reliable publisher with depth 1 keeps until it is delivered, so
    # every frame is accounted for once it arrives; wait for it (a lost frame's stamp never comes).
    after = harness.settled_counters("main", timeout=30.0,
                                     until=lambda c: c["received"] + c["dropped_in_transport"]
                                     >= before["received"] + before["dropped_in_transport"] + count)
    delta = {k: after[k] - before[k] for k in before if not k.startswith("_")}
    with harness.lock:
        got = [m for _, m in harness.frames["main"][first:]]
    stamps = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec - base for m in got]
    assert all(0 <= s < count for s in stamps) and len(set(stamps)) == len(stamps)
    assert delta["rejected"] == 0 and delta["failed"] == 0
    assert delta["published"] == len(got) > 0
    # Every frame not published was counted as dropped (in the node or between the publisher and the node).
    assert delta["published"] + delta["dropped"] == count, delta
    assert stamps == sorted(stamps), "frames must never be reordered"
    d = harness.diags["main"][-1]
    p50, p99 = float(d["latency_p50_ms"]), float(d["latency_p99_ms"])
    print(f"overload: published {delta['published']}/{count}, dropped {delta['dropped']} "
          f"({delta['dropped_in_transport']} before reaching the node), latency p50 {p50:.1f} ms p99 {p99:.1f} ms")
    assert p99 <= 3.0 * p50, f"latency p99 {p99:.1f} ms is more than 3x the median {p50:.1f} ms"


def set_parameter(harness: Harness, name: str, value):
    assert harness.param_client.wait_for_service(timeout_sec=REPLY_S)
    request = SetParameters.Request(parameters=[ParameterMsg(name=name, value=param_value(value))])
    future = harness.param_client.call_async(request)
    harness.wait_for(future.done, REPLY_S, f"set_parameters {name}")
    return future.result().results[0]


def well_exposed_frame() -> np.ndarray:
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(70, 190, (H, W, 3), dtype=np.uint8), (5, 5), 0)
    assert classify_exposure(frame) == "well"
    return frame


def test_mode_change_takes_effect_on_the_next_frame_and_bad_values_are_refused(nodes):
    harness, _ = nodes
    frame = well_exposed_frame()
    try:
        result = set_parameter(harness, "mode", "auto")
        assert result.successful, result.reason
        stamp = time.time_ns()
        harness.image_pub.publish(image_msg(frame, "rgb8", stamp))
        out = pixels_of(harness.frame_with_stamp("main", stamp))
        np.testing.assert_array_equal(out, frame)  # auto leaves a well-exposed frame unchanged
        assert harness.wait_for(lambda: harness.diags["main"] and harness.diags["main"][-1]["mode"] == "auto",
                                REPLY_S, "mode auto in diagnostics")

        result = set_parameter(harness, "mode", "mixed")
        assert result.successful, result.reason
        stamp = time.time_ns()
        harness.image_pub.publish(image_msg(frame, "rgb8", stamp))
        assert not np.array_equal(pixels_of(harness.frame_with_stamp("main", stamp)), frame)

        assert set_parameter(harness, "publish_exposure_map", True).successful
        stamp = time.time_ns()
        harness.image_pub.publish(image_msg(under_exposed(reference_frame()), "bgr8", stamp))
        harness.frame_with_stamp("main", stamp)
        em = harness.wait_for(lambda: next((m for m in harness.maps if m.header.stamp.nanosec ==
                                            stamp % 1_000_000_000), None), REPLY_S, "an exposure map")
        assert (em.encoding, em.height, em.width, em.step) == ("mono8", H, W, W)
        assert set_parameter(harness, "publish_exposure_map", False).successful

        refused = set_parameter(harness, "mode", "sideways")
        assert not refused.successful and "mode must be one of" in refused.reason
        refused = set_parameter(harness, "max_rate_hz", -5.0)
        assert not refused.successful and "max_rate_hz" in refused.reason
        assert set_parameter(harness, "level_smoothing", 0.5).successful
        assert harness.wait_for(lambda: harness.diags["main"] and
                                harness.diags["main"][-1]["level_smoothing"] == "0.50", REPLY_S,
                                "level_smoothing 0.5 in diagnostics")
        refused = set_parameter(harness, "level_smoothing", 1.5)
        assert not refused.successful and "level_smoothing must be in" in refused.reason
        refused = set_parameter(harness, "backend", "passthrough")
        assert not refused.successful and "read-only" in refused.reason
    finally:
        set_parameter(harness, "mode", "mixed")
        set_parameter(harness, "level_smoothing", 0.9)


def test_exposure_compensation_scales_the_output_and_is_refused_out_of_range(nodes):
    """mode auto passes a well-exposed frame unchanged, so what comes back is the compensation alone: +1 stop is
    every value x 2^(1/2.2), rounded and clipped; shown in the diagnostics; back to the frame itself at 0."""
    harness, _ = nodes
    frame = well_exposed_frame()

    def roundtrip() -> np.ndarray:
        stamp = time.time_ns()
        harness.image_pub.publish(image_msg(frame, "rgb8", stamp))
        return pixels_of(harness.frame_with_stamp("main", stamp)).copy()

    try:
        assert set_parameter(harness, "mode", "auto").successful
        result = set_parameter(harness, "exposure_compensation", 1.0)
        assert result.successful, result.reason
        brighter = roundtrip()
        np.testing.assert_array_equal(brighter, compensate_exposure(frame.copy(), 1.0))
        assert brighter.mean() > 1.3 * frame.mean()
        assert harness.wait_for(lambda: harness.diags["main"] and
                                harness.diags["main"][-1]["exposure_compensation"] == "1.00", REPLY_S,
                                "exposure_compensation 1.0 in diagnostics")
        refused = set_parameter(harness, "exposure_compensation", 5.0)
        assert not refused.successful and "exposure_compensation must be in" in refused.reason
        assert set_parameter(harness, "exposure_compensation", 0.0).successful
        np.testing.assert_array_equal(roundtrip(), frame)
    finally:
        set_parameter(harness, "exposure_compensation", 0.0)
        set_parameter(harness, "mode", "mixed")


def test_strength_blends_the_correction_and_zero_turns_it_off(nodes):
    """mode mixed changes an under-exposed frame; strength 0.5 publishes the blend of input and correction,
    0 the input itself, bit-exact; shown in the diagnostics; out-of-range values refused. Level smoothing off, so
    each frame is what the network and the strength make of it."""
    harness, _ = nodes
    frame = under_exposed(reference_frame())

    def roundtrip() -> np.ndarray:
        stamp = time.time_ns()
        harness.image_pub.publish(image_msg(frame, "rgb8", stamp))
        return pixels_of(harness.frame_with_stamp("main", stamp)).copy()

    try:
        assert set_parameter(harness, "level_smoothing", 0.0).successful
        full = roundtrip()
        assert np.abs(full.astype(int) - frame).mean() > 10  # the network corrects this frame
        result = set_parameter(harness, "strength", 0.5)
        assert result.successful, result.reason
        half = roundtrip()
        assert np.abs(half.astype(int) - apply_strength(frame, full.copy(), 0.5)).max() <= 1
        assert set_parameter(harness, "strength", 0.0).successful
        np.testing.assert_array_equal(roundtrip(), frame)
        assert harness.wait_for(lambda: harness.diags["main"] and
                                harness.diags["main"][-1]["strength"] == "0.00", REPLY_S, "strength 0 in diagnostics")
        refused = set_parameter(harness, "strength", 1.5)
        assert not refused.successful and "strength must be in" in refused.reason
    finally:
        set_parameter(harness, "strength", 1.0)
        set_parameter(harness, "level_smoothing", 0.9)


def test_level_smoothing_steadies_a_pan_and_leaves_the_first_frame_alone(nodes):
    """A slow pan, under-exposed, through the node twice: level_smoothing 0 (each frame as the network corrects
    it) and 0.9 (the default). The frame-to-frame change of the correction's gain must shrink."""
    harness, _ = nodes
    wide = cv2.resize(skdata.chelsea(), (W + 60, H), interpolation=cv2.INTER_AREA)
    views = [under_exposed(np.ascontiguousarray(wide[:, 3 * i:3 * i + W])) for i in range(20)]

    def level(img: np.ndarray) -> float:
        return float(np.log2(img.mean() + 1.0))

    def gains(weight: float) -> tuple[np.ndarray, np.ndarray]:
        assert set_parameter(harness, "level_smoothing", weight).successful
        time.sleep(1.2)  # a pause restarts the average: runs do not see each other
        outs = []
        for view in views:
            stamp = time.time_ns()
            harness.image_pub.publish(image_msg(view, "rgb8", stamp))
            outs.append(pixels_of(harness.frame_with_stamp("main", stamp)).copy())
        return np.array([level(o) - level(v) for o, v in zip(outs, views, strict=True)]), outs[0]

    try:
        own, first_own = gains(0.0)
        steady, first_steady = gains(0.9)
    finally:
        set_parameter(harness, "level_smoothing", 0.9)
    own_flicker, steady_flicker = np.abs(np.diff(own)).mean(), np.abs(np.diff(steady)).mean()
    assert steady_flicker < 0.7 * own_flicker, (own_flicker, steady_flicker)
    assert np.abs(first_steady.astype(int) - first_own.astype(int)).max() <= 1  # to float rounding


def test_compressed_output_over_dds_is_lazy_and_follows_its_parameters(nodes):
    """corrected/image/compressed: nothing encoded while nobody listens; once subscribed, each corrected frame
    also arrives compressed with its header (jpeg close to the raw one, png equal), as image_transport names it."""
    harness, _ = nodes
    frame = under_exposed(reference_frame())

    def compressed_count() -> int:
        start = len(harness.diags["main"])
        harness.wait_for(lambda: len(harness.diags["main"]) > start, REPLY_S, "diagnostics from main")
        return int(harness.diags["main"][-1]["compressed_published"])

    before = compressed_count()
    send_until_answered(harness, "main", lambda s: image_msg(frame, "rgb8", s), harness.image_pub.publish)
    assert compressed_count() == before, "a frame was encoded with no subscriber"

    got: list[CompressedImage] = []
    deep = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    sub = harness.node.create_subscription(CompressedImage, "/illexp_main_ns/corrected/image/compressed",
                                           lambda m: harness._store(got, m), deep)

    def both(stamp_ns: int) -> tuple[np.ndarray, CompressedImage]:
        raw = harness.frame_with_stamp("main", stamp_ns)
        comp = harness.wait_for(lambda: next((m for m in got if m.header.stamp.sec * 1_000_000_000 +
                                              m.header.stamp.nanosec == stamp_ns), None), REPLY_S,
                                "a compressed frame with that stamp")
        return pixels_of(raw), comp

    try:
        for _ in range(40):  # until the node's publisher has matched the new subscriber
            _, stamp = send_until_answered(harness, "main", lambda s: image_msg(frame, "rgb8", s),
                                           harness.image_pub.publish)
            if any(m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp for m in got):
                break
            time.sleep(0.2)
        raw, comp = both(stamp)
        assert comp.format == "rgb8; jpeg compressed bgr8" and comp.header.frame_id == "cam_optical"
        decoded = cv2.imdecode(np.frombuffer(comp.data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
        assert psnr(decoded, raw) > 35.0

        assert set_parameter(harness, "compressed_format", "png").successful
        stamp = time.time_ns()
        harness.image_pub.publish(image_msg(frame, "rgb8", stamp))
        raw, comp = both(stamp)
        assert comp.format == "rgb8; png compressed bgr8"
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(comp.data, np.uint8), cv2.IMREAD_COLOR)[..., ::-1],
                                      raw)
        refused = set_parameter(harness, "jpeg_quality", 0)
        assert not refused.successful and "jpeg_quality" in refused.reason  # rclpy: out of its range
        assert compressed_count() > before
    finally:
        harness.node.destroy_subscription(sub)
        set_parameter(harness, "compressed_format", "jpeg")


def test_sigint_and_sigterm_exit_cleanly_within_3_s(nodes):
    harness, procs = nodes
    for key, sig in (("main", signal.SIGINT), ("comp", signal.SIGTERM)):
        proc = procs[key]
        assert proc.poll() is None
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{key} node did not exit within 3 s of {sig.name}")
        output = proc.stdout.read()
        assert code == 0, f"{key} node exited with {code} after {sig.name}:\n{output[-2000:]}"
        assert "Traceback" not in output, output[-2000:]


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (signal 15: bit 14 of SigCgt)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_while_the_console_script_imports_is_one_line():
    """The console script's first act is a handler for both signals; Python's imports of rclpy and torch take
    seconds after it. A Ctrl-C there: one line, exit 0 (was a KeyboardInterrupt traceback, or a C++ abort inside
    rclpy's pybind11 imports)."""
    script = "import sys; from illexp_ros.ros.node.console_scripts import illexp_node; sys.exit(illexp_node())"
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + NODE_START_S
        while not _catches_sigterm(proc.pid):  # the start-up handler is in place (or, before it, rclpy's)
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == 0, err
    assert err.splitlines() == ["illexp_node: stopped during start-up"] and out == ""


def test_ctrl_c_while_the_model_loads_is_one_line(tmp_path):
    """SIGINT while the node builds its ONNX export (an empty cache): one line, exit 0, no export child left. Was
    a traceback, or rclpy's handler shut the context down under the set-up: 'Failed to publish log message to
    rosout' lines and a QoS error, exit 2."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", ILLEXP_CACHE_DIR=str(tmp_path))
    proc = subprocess.Popen(node_command("illexp_stop", "-p", "backend:=onnxruntime"), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    try:
        for line in proc.stdout:  # the model file is read; its ONNX export (seconds) comes next
            lines.append(line.rstrip("\n"))
            if line.startswith("[INFO]") and "loaded " in line:
                break
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    lines += out.splitlines()
    assert proc.returncode == 0, "\n".join(lines)
    assert [line for line in lines if not line.startswith("[INFO]")] == ["illexp_node: stopped during start-up"]
    assert not any("correcting" in line for line in lines)  # it was stopped before it was ready
    assert not list(tmp_path.rglob("*.onnx")) and not list(tmp_path.rglob("*.tmp"))


def test_signals_repeated_while_the_node_tears_down_end_it_without_a_traceback():
    """A second SIGTERM / Ctrl-C while the node tears down (launch escalating, an impatient user) ends the process
    at once, as SIGTERM's default does: it raised KeyboardInterrupt inside destroy_node, a traceback."""
    proc = subprocess.Popen(node_command("illexp_repeat", "-p", "backend:=passthrough"), cwd=ROOT,
                            env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "correcting" in line:
                break
        for _ in range(100):  # over 0.2 s: the first ends the spin, the next ones land in the teardown
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.002)
        out, _ = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    output = "".join(lines) + out
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output


@pytest.mark.parametrize(("seconds", "report_every", "rss_line"), [
    ("2", "60", "node RSS: no report (the run was shorter than one period)"),
    ("5", "2", "a growth needs three"),  # two reports: minute 2 was also the last, "growth +0.0"
])
def test_a_short_soak_says_what_it_measured_and_no_nan(seconds, report_every, rss_line):
    """A soak of fewer than three reports printed "node RSS: minute 2 nan MB, ..." or a growth of +0.0 MB."""
    proc = subprocess.run([sys.executable, "-m", "illexp_ros.bench_cli", "--node", "--soak", seconds, "--backend",
                           "passthrough", "--size", "64x48", "--report-every", report_every], cwd=ROOT,
                          env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nan" not in proc.stdout.lower() and rss_line in proc.stdout, proc.stdout


def test_sigterm_to_the_soak_stops_its_node_too():
    """`kill` of `illexp_bench --node --soak` ends it as Ctrl-C does, node included (the node ran on as an orphan
    and the next soak counted its frames too)."""
    proc = subprocess.Popen([sys.executable, "-m", "illexp_ros.bench_cli", "--node", "--soak", "60", "--backend",
                             "passthrough", "--size", "64x48"], cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node_pid = None
    try:
        for line in proc.stdout:  # "soak: ... node pid N, ...": the node answers, the soak runs
            if line.startswith("soak:"):
                node_pid = int(line.split("node pid ")[1].split(",")[0])
                break
        assert node_pid is not None, proc.communicate()
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        stop_process(proc)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "illexp_bench --node --soak: interrupted", err
    ended = wait_until_ended(node_pid, 10.0)
    if not ended:
        os.kill(node_pid, signal.SIGKILL)
    assert ended, "the soak's node outlived it"


def test_missing_model_fails_at_start_with_one_line(tmp_path):
    proc = subprocess.run(node_command("illexp_fail", "-p", f"model:={tmp_path / 'nope.pt'}"), cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "nope.pt" in errors[0] and errors[0].startswith("illexp_node: error:"), \
        proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_params_file_that_is_not_there_is_one_line(tmp_path):
    """A relative config/illexp.yaml from a workspace root: rcl printed its parser's internals over two lines
    ("Couldn't parse params file ... at /project/src/parser.c:271") before our line."""
    proc = subprocess.run([sys.executable, "-m", "illexp_ros.ros.node.illexp_node", "--ros-args", "--params-file",
                           "config/illexp.yaml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["illexp_node: error: params file not found: config/illexp.yaml"]


@pytest.mark.parametrize(("override", "words"), [
    ("qos_overrides./cam/image_raw.subscription.reliability:=sometimes", "sometimes"),
    ("qos_overrides./illexp_qos_ns/corrected/image.publisher.depth:=0", "depth must be at least 1"),
])
def test_invalid_qos_override_fails_at_start_with_one_line(override, words):
    """ROS 2's qos_overrides parameters use the full topic name (here the remapped input). Only the error line on
    stderr: rclpy's own warning about a zero depth, which that line says better, is not printed."""
    proc = subprocess.run(node_command("illexp_qos", "-p", "backend:=passthrough", "-p", override),
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("[INFO]")]
    assert len(lines) == 1 and lines[0].startswith("illexp_node: error: QoS override:"), proc.stderr
    assert words in lines[0]


def test_qos_override_from_a_params_file_reaches_dds(tmp_path):
    """The README's nested form in a second params file; the subscription other processes see is best effort."""
    params = tmp_path / "qos.yaml"
    params.write_text("/**/illexp_node:\n  ros__parameters:\n    qos_overrides:\n      /cam/image_raw:\n"
                      "        subscription: {reliability: best_effort}\n")
    proc = subprocess.Popen(node_command("illexp_qos2", "-p", "backend:=passthrough", "--params-file", str(params)),
                            cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("qos_probe", context=context)
    try:
        deadline = time.monotonic() + NODE_START_S
        infos, outputs = [], []
        while not (infos and outputs) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)  # discovery brings the two endpoints in any order
            # other tests' nodes may subscribe to /cam/image_raw too: this node's only
            infos = [i for i in node.get_subscriptions_info_by_topic("/cam/image_raw")
                     if i.node_namespace == "/illexp_qos2_ns"]
            outputs = node.get_publishers_info_by_topic("/illexp_qos2_ns/corrected/image")
        assert infos and outputs, f"the node's endpoints were not discovered (exit code {proc.poll()})"
        assert [i.qos_profile.reliability for i in infos] == [ReliabilityPolicy.BEST_EFFORT]
        assert [i.qos_profile.reliability for i in outputs] == [ReliabilityPolicy.RELIABLE]  # `qos` as before
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        proc.terminate()
        proc.wait(10)
