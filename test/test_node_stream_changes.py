"""illexp_node when the stream changes, in its own process over real DDS: a first `mode` switch while frames flow
at 30 Hz (no gap in the output while the new models load), a publisher restart, resolution and encoding
changes, clock jumps in the header stamps, and a storm of parameter changes. Each test ends with the node
alive, a good frame corrected and every frame that reached the node accounted for (published, dropped,
rejected or failed; frames lost before it are counted apart, as dropped_in_transport).

The node runs as configured by config/illexp.yaml (backend auto: ONNX Runtime here, the shipped models, fast
mode), so the first switch to `auto` really exports and loads the paper-sized under / over / mixed models.
"""

from __future__ import annotations

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
from dds_helpers import image_msg, param_value, stamp_of, stop_process, wait_on
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from skimage import data as skdata

from illexp_ros.core import degrade
from illexp_ros.ros.node.background_spin import BackgroundSpin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
NS = "/illexp_stream_ns"
IN_TOPIC = "/stream_cam/image_raw"
H, W = 480, 640
RATE_HZ = 30.0
MAX_GAP_S = 3 / RATE_HZ + 0.001  # three frame intervals
# While the first switch loads (three ONNX exports and sessions, 7-9 s on the 2-core VM) those threads compete with
# the frame path for two cores: measured longest gaps 67-117 ms (117 in a fresh clone's `make test`). A load on the
# frame path would stop the output for seconds; 250 ms (7.5 frames) tells the two apart without timing the CPU.
MAX_LOADING_GAP_S = 0.25
NODE_START_S = 60.0
COUNTERS = ("received", "published", "dropped", "dropped_in_transport", "rejected", "failed")


def photo(w: int = W, h: int = H) -> np.ndarray:
    """An under-exposed real photograph (scikit-image's coffee, CC0), RGB."""
    rgb = cv2.resize(skdata.coffee(), (w, h), interpolation=cv2.INTER_AREA)
    return (degrade(rgb / 255.0, alpha=0.95, beta=0.5, gamma=1.5) * 255.0 + 0.5).astype(np.uint8)


class Harness:
    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("illexp_stream_harness", context=self.context)
        self.qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, IN_TOPIC, self.qos)
        self.cond = threading.Condition()
        self.frames: list[tuple[float, Image]] = []
        self.maps: list[Image] = []
        self.diags: list[dict[str, str]] = []
        deep = QoSProfile(depth=500, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, f"{NS}/corrected/image",
                                      lambda m: self._store(self.frames, (time.monotonic(), m)), deep)
        self.node.create_subscription(Image, f"{NS}/exposure_map", lambda m: self._store(self.maps, m), deep)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, deep)
        self.set_client = self.node.create_client(SetParameters, f"{NS}/illexp_node/set_parameters")
        self.get_client = self.node.create_client(GetParameters, f"{NS}/illexp_node/get_parameters")
        self.spin = BackgroundSpin(self.node, self.context)

    def _store(self, bucket: list, item) -> None:
        with self.cond:
            bucket.append(item)
            self.cond.notify_all()

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NS}/"):
                self._store(self.diags, {kv.key: kv.value for kv in status.values})

    def wait_for(self, predicate, timeout: float, what: str):
        return wait_on(self.cond, predicate, timeout, what)

    def reply(self, stamp_ns: int, timeout: float = 10.0) -> Image:
        return self.wait_for(lambda: next((m for _, m in self.frames if stamp_of(m) == stamp_ns), None), timeout,
                             f"the corrected frame with stamp {stamp_ns}")

    def ping(self, pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "stream_cam") -> Image:
        self.pub.publish(image_msg(pixels, encoding, stamp_ns, frame_id))
        return self.reply(stamp_ns)

    def set_parameters(self, **values) -> list:
        assert self.set_client.wait_for_service(timeout_sec=10.0)
        request = SetParameters.Request(parameters=[ParameterMsg(name=k, value=param_value(v))
                                                    for k, v in values.items()])
        future = self.set_client.call_async(request)
        self.wait_for(future.done, 10.0, f"set_parameters {values}")
        return future.result().results

    def get_parameters(self, *names: str) -> list:
        assert self.get_client.wait_for_service(timeout_sec=10.0)
        future = self.get_client.call_async(GetParameters.Request(names=list(names)))
        self.wait_for(future.done, 10.0, f"get_parameters {names}")
        return future.result().values

    def latest_diag(self, after: int = 0) -> dict[str, str]:
        return self.wait_for(lambda: self.diags[-1] if len(self.diags) > after else None, 10.0, "diagnostics")

    def settled_counters(self, timeout: float = 20.0) -> dict[str, int]:
        """Counters of two consecutive diagnostics messages that agree (nothing in flight)."""
        start = len(self.diags)

        def settled():
            d = self.diags
            if len(d) >= start + 2 and all(d[-1][n] == d[-2][n] for n in COUNTERS):
                return {n: int(d[-1][n]) for n in COUNTERS}
            return None
        return self.wait_for(settled, timeout, "settled diagnostics")

    def close(self) -> None:
        self.spin.stop()


class Streamer:
    """Publishes frames at a fixed rate on a thread (the camera), with increasing stamps."""

    def __init__(self, harness: Harness, pixels: np.ndarray, encoding: str = "rgb8", rate_hz: float = RATE_HZ):
        self.harness, self.pixels, self.encoding, self.period = harness, pixels, encoding, 1.0 / rate_hz
        self.sent: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            stamp = time.time_ns()
            self.harness.pub.publish(image_msg(self.pixels, self.encoding, stamp))
            self.sent.append(stamp)
            next_t += self.period
            time.sleep(max(0.0, next_t - time.monotonic()))

    def __enter__(self) -> Streamer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def assert_accounted(harness: Harness) -> dict[str, int]:
    c = harness.settled_counters()
    local_dropped = c["dropped"] - c["dropped_in_transport"]
    assert c["received"] == c["published"] + local_dropped + c["rejected"] + c["failed"], c
    return c


def assert_alive_and_correcting(harness: Harness, proc: subprocess.Popen) -> None:
    assert proc.poll() is None, "the node exited"
    frame = photo()
    stamp = time.time_ns()
    out = np.frombuffer(harness.ping(frame, "rgb8", stamp).data, np.uint8).reshape(H, W, 3)
    assert out.mean() > frame.mean() + 5, "a dark frame came back no brighter"


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    # A fresh export cache: the first switch to auto really exports the paper-sized models to ONNX.
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               ILLEXP_CACHE_DIR=str(tmp_path_factory.mktemp("illexp_stream_cache")))
    proc = subprocess.Popen(
        [sys.executable, "-m", "illexp_ros.ros.node.illexp_node", "--ros-args", "--params-file",
         str(ROOT / "config" / "illexp.yaml"), "-r", f"__ns:={NS}", "-r", f"image:={IN_TOPIC}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True)
    reader.start()
    harness = Harness()
    try:
        harness.wait_for(lambda: harness.pub.get_subscription_count() > 0 or proc.poll() is not None,
                         NODE_START_S, "the node to subscribe")
        assert proc.poll() is None, "".join(log)
        frame = photo()
        for _ in range(100):  # the first frames after discovery may be lost: resend until one comes back
            stamp = time.time_ns()
            harness.pub.publish(image_msg(frame, "rgb8", stamp))
            try:
                harness.reply(stamp, timeout=0.5)
                break
            except AssertionError:
                continue
        else:
            raise AssertionError("no corrected frame after 100 tries:\n" + "".join(log))
        yield harness, proc, log
    finally:
        harness.close()
        stop_process(proc)
        reader.join(timeout=5)
        assert "Traceback" not in "".join(log), "".join(log)[-3000:]


def max_gap(times: list[float]) -> float:
    return float(np.max(np.diff(times))) if len(times) > 1 else float("inf")


def test_first_mode_switch_leaves_no_gap_in_the_output(stream):
    """mixed -> auto the first time: auto needs the paper-sized under / over / mixed models (exported to ONNX and
    loaded: seconds). Frames keep coming out with mode mixed meanwhile, then auto is in force; the switch back
    (nothing to load) is immediate. The gaps are measured from each request until 0.5 s after the new mode is
    in force (the steady output rate of a heavier mode is its own business, not the switch's)."""
    harness, proc, log = stream
    # The harness's first service call (discovery of the parameter services) is made before the stream starts:
    # it is the test's own start-up, not the node's switch.
    assert harness.get_parameters("mode")[0].string_value == "mixed"
    with Streamer(harness, photo()) as cam:
        time.sleep(2.0)
        t_switch = time.monotonic()
        (result,) = harness.set_parameters(mode="auto")
        assert result.successful, result.reason
        harness.wait_for(lambda: harness.diags and harness.diags[-1]["mode"] == "auto", 120.0, "mode auto in force")
        t_in_force = time.monotonic()
        time.sleep(1.5)
        t_back = time.monotonic()
        (back,) = harness.set_parameters(mode="mixed")  # a later switch: nothing to load
        assert back.successful
        harness.wait_for(lambda: harness.diags[-1]["mode"] == "mixed", 10.0, "mode mixed in force")
        t_back_in_force = time.monotonic()
        time.sleep(1.0)
    windows = {"first switch (loading)": (t_switch - 0.2, t_in_force + 0.5),
               "later switch": (t_back - 0.2, t_back_in_force + 0.5)}
    arrivals = [t for t, _ in harness.frames]
    gaps = {}
    where = {}
    for name, (a, b) in windows.items():
        times = [t for t in arrivals if a <= t <= b]
        gaps[name] = max_gap(times)
        where[name] = times[int(np.argmax(np.diff(times)))] - t_switch if len(times) > 1 else None
    print(f"first switch to auto: in force after {t_in_force - t_switch:.2f} s; {len(cam.sent)} frames sent; "
          + "; ".join(f"{k}: longest gap {gaps[k] * 1e3:.0f} ms at +{where[k]:.2f} s" for k in gaps))
    assert t_in_force - t_switch > 0.3, "nothing was loaded: the test did not exercise a first switch"
    limits = {"first switch (loading)": MAX_LOADING_GAP_S, "later switch": MAX_GAP_S}
    for name, gap in gaps.items():
        assert gap <= limits[name], f"{name}: the output stopped for {gap * 1e3:.0f} ms"
    assert any("now correcting with mode auto" in line for line in log)
    assert_accounted(harness)
    assert_alive_and_correcting(harness, proc)


def test_publisher_restart_is_not_counted_as_lost_frames(stream):
    harness, proc, _ = stream
    before = assert_accounted(harness)
    frame = photo()
    first = [harness.ping(frame, "rgb8", time.time_ns()) for _ in range(5)]
    harness.node.destroy_publisher(harness.pub)
    harness.pub = harness.node.create_publisher(Image, IN_TOPIC, harness.qos)  # new GID, sequence numbers restart
    harness.wait_for(lambda: harness.pub.get_subscription_count() > 0, 30.0, "the node to match the new publisher")
    second = []
    for _ in range(100):  # discovery of the new publisher: resend until frames come back
        stamp = time.time_ns()
        harness.pub.publish(image_msg(frame, "rgb8", stamp))
        try:
            second.append(harness.reply(stamp, timeout=0.5))
        except AssertionError:
            continue
        if len(second) == 5:
            break
    assert len(first) == 5 and len(second) == 5
    after = assert_accounted(harness)
    assert after["dropped_in_transport"] == before["dropped_in_transport"], (before, after)
    assert_alive_and_correcting(harness, proc)


def test_resolution_and_encoding_changes_mid_stream(stream):
    harness, proc, _ = stream
    rgb = photo()
    plan = [((640, 480), "bgr8"), ((1280, 720), "rgb8"), ((320, 240), "mono8"), ((640, 480), "bgr8")]
    for (w, h), encoding in plan:
        base = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        pixels = {"bgr8": base[..., ::-1], "rgb8": base, "mono8": cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)}[encoding]
        for _ in range(3):
            stamp = time.time_ns()
            out = harness.ping(pixels, encoding, stamp, frame_id=f"cam_{w}x{h}")
            assert (out.width, out.height, out.encoding) == (w, h, encoding)
            assert out.step == w * (1 if encoding == "mono8" else 3) and len(out.data) == out.step * h
            assert stamp_of(out) == stamp and out.header.frame_id == f"cam_{w}x{h}"
    # More resolutions than the runtime keeps buffers for: they stay bounded.
    for w, h in ((160, 120), (200, 150), (240, 180), (400, 300), (480, 360), (800, 600)):
        harness.ping(cv2.resize(rgb, (w, h)), "rgb8", time.time_ns())
    n = len(harness.diags)
    buffered = int(harness.latest_diag(after=n)["buffered_resolutions"])
    assert 1 <= buffered <= 4
    assert_accounted(harness)
    assert_alive_and_correcting(harness, proc)


def test_clock_jumps_in_header_stamps(stream):
    """A looping bag jumps back in time; a driver without a clock sends zero; another machine's clock may be
    ahead. Stamps are copied as they are and the diagnostics stay finite and non-negative."""
    harness, proc, _ = stream
    frame = photo()
    now = time.time_ns()
    stamps = [now, now - 3600 * 10**9, now + 1, 0, now + 86400 * 10**9, 10**9, now - 10**9]
    for stamp in stamps:
        out = harness.ping(frame, "rgb8", stamp)
        assert stamp_of(out) == stamp
    # A sender whose clock runs a day ahead, for more frames than the node's statistics window (256): its
    # stamps must not turn the reported age negative.
    ahead = time.time_ns() + 86400 * 10**9
    for i in range(300):
        harness.pub.publish(image_msg(frame, "rgb8", ahead + i))
        time.sleep(1 / 60)
    harness.reply(ahead + 299, timeout=20.0)
    n = len(harness.diags)
    diag = harness.latest_diag(after=n)
    for key in ("latency_p50_ms", "latency_p99_ms", "stamp_age_p50_ms", "fps_in", "fps_out"):
        if key in diag:
            value = float(diag[key])
            assert np.isfinite(value) and value >= 0.0, (key, diag[key])
    assert "nan" not in diag.values()
    assert_accounted(harness)
    assert_alive_and_correcting(harness, proc)


def test_parameter_storm_while_streaming(stream):
    harness, proc, log = stream
    rng = np.random.default_rng(0)
    with Streamer(harness, photo()):
        for _ in range(200):
            results = harness.set_parameters(
                mode=str(rng.choice(["under", "over", "mixed", "auto"])), fast=bool(rng.random() < 0.8),
                max_rate_hz=float(rng.choice([0.0, 5.0, 15.0, 30.0])), publish_exposure_map=bool(rng.random() < 0.5))
            assert all(r.successful for r in results), [r.reason for r in results]
        final = dict(mode="under", fast=True, max_rate_hz=15.0, publish_exposure_map=True)
        assert all(r.successful for r in harness.set_parameters(**final))
        harness.wait_for(lambda: harness.diags and harness.diags[-1]["mode"] == "under"
                         and harness.diags[-1]["fast"] == "True", 120.0, "the final mode / fast in force")
        maps_before, frames_before, t0 = len(harness.maps), len(harness.frames), time.monotonic()
        time.sleep(3.0)
        rate_out = (len(harness.frames) - frames_before) / (time.monotonic() - t0)
        maps_after = len(harness.maps)
    values = harness.get_parameters("mode", "fast", "max_rate_hz", "publish_exposure_map")
    assert (values[0].string_value, values[1].bool_value, values[2].double_value, values[3].bool_value) == (
        "under", True, 15.0, True)
    assert rate_out <= 15.0 * 1.2, f"max_rate_hz 15 in force, but {rate_out:.1f} frames/s came out"
    assert maps_after > maps_before, "publish_exposure_map true in force, but no maps came out"
    assert_accounted(harness)
    assert proc.poll() is None and "Traceback" not in "".join(log)
    harness.set_parameters(mode="mixed", fast=True, max_rate_hz=0.0, publish_exposure_map=False)
    harness.wait_for(lambda: harness.diags and harness.diags[-1]["mode"] == "mixed", 60.0, "mode mixed")
    assert_alive_and_correcting(harness, proc)
