"""`illexp_bag play` publishes a bag's images over DDS, in order, byte for byte (a subscriber in this process
receives them raw and compares them with the bag)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from dds_helpers import image_msg, node_output, play_and_collect, stamp_of, stop_process, wait_on
from rosbags.rosbag2 import Reader

from illexp_ros.ros.bags.play import play_messages
from illexp_ros.ros.demo.sample_data import IMAGE_TOPIC, START_NS, write_sample_bag

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def test_play_publishes_the_recorded_messages_in_order(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=6, size=(48, 64), fps=30.0)
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == IMAGE_TOPIC]
        expected = [bytes(d) for _, _, d in reader.messages(connections=conns)]

    received, proc = play_and_collect(bag, IMAGE_TOPIC, "/replayed", len(expected), raw=True)
    assert proc.returncode == 0, proc.stderr
    assert f"published {len(expected)} messages on /replayed" in proc.stdout
    assert received == expected
    # A camera driver's history, not depth 1: a reliable writer drops what it has not yet delivered when its
    # history is full (under load 15-23 % of a stereo replay's frames never reached the node at depth 1, 1-8 % at
    # 5 or 10). The depth is not visible over DDS (discovery does not carry it): play says what rclpy made.
    from illexp_ros.ros.bags.play import PLAY_HISTORY_DEPTH

    assert PLAY_HISTORY_DEPTH >= 5 and f"; QoS reliable, keep-last {PLAY_HISTORY_DEPTH}" in proc.stdout, proc.stdout


def test_play_rejects_a_bag_without_the_topic(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=1, size=(48, 64))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic", "/x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "topic /x not in bag" in lines[0]


def test_play_clock_runs_on_bag_time_and_is_each_frames_stamp_when_it_goes_out(tmp_path: Path) -> None:
    """--clock: the bag's time, several times between two frames, never behind the frame being published
    and never ahead of it (a node with use_sim_time would otherwise see frames from its future or past)."""
    bag = tmp_path / "bag"
    frames = write_sample_bag(bag, frames=5, size=(16, 24), fps=10.0, with_reference=False)
    events: list[tuple[str, int]] = []
    count = play_messages(bag, IMAGE_TOPIC, lambda data: events.append(("frame", len(events))), rate=2.0,
                          on_clock=lambda t: events.append(("clock", t)), clock_hz=100.0)
    assert count == 5
    stamps = [f.stamp_ns for f in frames]
    clock = [t for kind, t in events if kind == "clock"]
    assert clock == sorted(clock) and clock[0] == stamps[0] and clock[-1] == stamps[-1]
    # At each frame, the last time published is that frame's own stamp.
    at_frames = [events[i - 1] for i, (kind, _) in enumerate(events) if kind == "frame"]
    assert at_frames == [("clock", t) for t in stamps]
    # 0.2 s of playing at 2x, ticks every 10 ms: well over one tick between two frames (50 ms apart).
    between = [t for t in clock if t not in stamps]
    assert len(between) >= 8, len(between)
    assert all(stamps[0] < t < stamps[-1] for t in between)


@pytest.mark.parametrize(("extra", "expected"), [
    (["--clock", "0"], "--clock: must be in (0, 1000] Hz, got 0"),
    (["--wait", "-5"], "--wait: must be a number of seconds >= 0, got -5"),  # taken for no wait
    (["--wait", "nan"], "--wait: must be a number of seconds >= 0, got nan"),
])
def test_play_rejects_a_bad_clock_rate_or_wait(tmp_path: Path, extra: list[str], expected: str) -> None:
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=1, size=(16, 24))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic",
                             IMAGE_TOPIC, *extra], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and expected in result.stderr, result.stderr


@pytest.mark.parametrize(("extra", "expected"), [
    (["--rate", "nan"], "--rate must be a number > 0, got nan"),
    (["--rate", "0", "--wait", "3"], "--rate must be a number > 0, got 0.0"),
    (["--out-topic", "bad name"], "--out-topic 'bad name' is not a valid ROS 2 topic name"),
    (["--out-topic", "/cam/"], "--out-topic '/cam/' is not a valid ROS 2 topic name: topic name must not end"),
    (["--out-topic", "clock", "--clock", "100"], "the images and the clock would both go out on /clock"),
])
def test_play_rejects_bad_arguments_in_one_line(tmp_path: Path, extra: list[str], expected: str) -> None:
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=1, size=(16, 24))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic",
                             IMAGE_TOPIC, *extra], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and expected in lines[0], result.stderr
    assert "no subscriber" not in result.stdout  # said before any DDS work (--rate came after --wait's wait)


def test_play_says_when_wait_found_no_subscriber(tmp_path: Path) -> None:
    """It said "after 0 s" for --wait 0.4, and "after S s" also for a topic the shared deadline left no time."""
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=1, size=(16, 24))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic",
                             IMAGE_TOPIC, "--out-topic", "/nobody_listens", "--wait", "0.4"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "no subscriber on /nobody_listens within --wait 0.4 s; playing anyway" in result.stdout, result.stdout
    assert "published 1 messages on /nobody_listens" in result.stdout


def test_play_refuses_a_topic_of_two_types(tmp_path: Path) -> None:
    """Image and CompressedImage on one topic: play made one Image publisher and sent the compressed messages'
    bytes through it as Image messages (garbage to every subscriber)."""
    import numpy as np
    from rosbags.rosbag2 import StoragePlugin, Writer

    from illexp_ros.ros.bags.images import COMPRESSED_TYPE, IMAGE_TYPE, TYPESTORE, make_compressed, make_image

    bag = tmp_path / "mixed"
    frame = np.zeros((8, 8, 3), np.uint8)
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        raw = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=TYPESTORE)
        coded = writer.add_connection(IMAGE_TOPIC, COMPRESSED_TYPE, typestore=TYPESTORE)
        writer.write(raw, 1, bytes(TYPESTORE.serialize_cdr(make_image(frame, "rgb", "rgb8", 1, "c"), IMAGE_TYPE)))
        writer.write(coded, 2, bytes(TYPESTORE.serialize_cdr(make_compressed(frame, "rgb", 2, "c"), COMPRESSED_TYPE)))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic",
                             IMAGE_TOPIC], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"{IMAGE_TOPIC} in {bag} carries messages of 2 types" in lines[0], lines[0]


def test_node_with_use_sim_time_follows_the_replayed_bag_clock(tmp_path: Path) -> None:
    """Replay testing as ROS 2 users do it (`ros2 bag play --clock` + `use_sim_time:=true`), here with
    `illexp_bag play --clock`: the node corrects the frames and its diagnostics and stamp ages run on the bag's
    time (2023), not the wall clock, so stamp_age is the real age of each frame during the replay."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from illexp_ros.ros.node.background_spin import BackgroundSpin

    bag = tmp_path / "bag"
    frames = write_sample_bag(bag, frames=90, size=(48, 64), fps=15.0, with_reference=False)  # 6 s
    end_ns = frames[-1].stamp_ns
    node = subprocess.Popen(
        [sys.executable, "-m", "illexp_ros.ros.node.illexp_node", "--ros-args", "--params-file",
         str(ROOT / "config" / "illexp.yaml"), "-r", "__ns:=/simtime", "-r", "image:=/replayed",
         "-p", "backend:=passthrough", "-p", "use_sim_time:=true"],
        cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    cond = threading.Condition()
    corrected: list = []
    diagnostics: list = []

    def store(bucket: list, msg) -> None:
        with cond:
            bucket.append(msg)
            cond.notify_all()
    try:
        harness = rclpy.create_node("simtime_harness", context=context)
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        harness.create_subscription(Image, "/simtime/corrected/image", lambda m: store(corrected, m), reliable)
        harness.create_subscription(
            DiagnosticArray, "/diagnostics",
            lambda m: store(diagnostics, m) if any(s.name.startswith("/simtime/") for s in m.status) else None,
            reliable)
        spin = BackgroundSpin(harness, context)
        # The node's time source (its /clock subscription) and diagnostics must be matched before the bag plays:
        # its timers only run while /clock advances.
        deadline = time.monotonic() + 60.0
        while not (harness.count_subscribers("/clock") and harness.count_publishers("/diagnostics")):
            assert time.monotonic() < deadline and node.poll() is None, "the node did not come up"
            time.sleep(0.1)
        play = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic",
                               IMAGE_TOPIC, "--out-topic", "/replayed", "--clock", "--wait", "60"],
                              capture_output=True, text=True, timeout=120)
        assert play.returncode == 0, play.stderr
        assert node.poll() is None, node.stdout.read()
        wait_on(cond, lambda: corrected and diagnostics, 20.0, "a corrected frame and diagnostics")
        spin.stop()
    finally:
        rclpy.try_shutdown(context=context)
        stop_process(node)
    assert {m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in corrected} <= \
        {f.stamp_ns for f in frames}
    stamps = [d.header.stamp.sec * 1_000_000_000 + d.header.stamp.nanosec for d in diagnostics]
    assert all(START_NS <= t <= end_ns + 1_000_000_000 for t in stamps), (stamps, START_NS, end_ns)
    ages = [float(kv.value) for d in diagnostics for s in d.status for kv in s.values
            if kv.key == "stamp_age_p50_ms"]
    assert ages and all(0.0 <= a < 1000.0 for a in ages), ages  # on the wall clock: three years


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_signals_end_a_looping_play_in_one_line(tmp_path: Path, sigint: str) -> None:
    """SIGINT while play publishes: 'interrupted', exit 130. Where SIGINT came in ignored (a script's background
    job) it stays ignored and play goes on; SIGTERM ends it the same way. (rclpy's own SIGINT handler shut the
    context down under the publisher in both cases: a traceback, exit 1.)"""
    import signal

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=4, size=(48, 64), fps=30.0)
    context = Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("test_bag_play_interrupt", context=context)
        received: list = []
        node.create_subscription(Image, "/replayed_loop", received.append,
                                 QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        disposition = signal.SIG_DFL if sigint == "default" else signal.SIG_IGN
        proc = subprocess.Popen([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic",
                                 IMAGE_TOPIC, "--out-topic", "/replayed_loop", "--loop"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, disposition))

        def spin_until(count: int) -> None:
            deadline = time.monotonic() + 60
            while len(received) < count:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "play stopped publishing"
                executor.spin_once(timeout_sec=0.1)

        try:
            spin_until(6)  # past the first loop: publishing, with rclpy initialised
            proc.send_signal(signal.SIGINT)
            if sigint == "ignored":
                spin_until(len(received) + 10)  # still publishing
                proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        finally:
            stop_process(proc)
    finally:
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["illexp_bag play: interrupted"]


def test_a_looping_play_keeps_the_recorded_pace_across_the_wrap(tmp_path: Path) -> None:
    """--loop: the next pass starts one mean message interval after the last message (it started at once: a
    one-message bag was published as fast as the loop ran, thousands of times a second)."""
    one = tmp_path / "one"
    write_sample_bag(one, frames=1, size=(8, 8), with_reference=False)
    times: list[float] = []
    start = time.monotonic()
    play_messages(one, IMAGE_TOPIC, lambda data: times.append(time.monotonic()), rate=4.0, loop=True,
                  should_stop=lambda: time.monotonic() - start > 1.1)
    assert 4 <= len(times) <= 6, len(times)  # 1 s between passes, at rate 4: every 0.25 s
    several = tmp_path / "several"
    write_sample_bag(several, frames=3, size=(8, 8), fps=10.0, with_reference=False)
    times.clear()
    start = time.monotonic()
    play_messages(several, IMAGE_TOPIC, lambda data: times.append(time.monotonic()), rate=1.0, loop=True,
                  should_stop=lambda: len(times) >= 6)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 5 and all(0.07 < g < 0.2 for g in gaps), gaps  # 0.1 s, the wrap included


def test_also_plays_further_topics_in_bag_order(tmp_path: Path) -> None:
    """--also: a stereo bag's right view goes out with the left one, in bag order; a topic that is not there is
    refused before anything is published."""
    from test_bag_process import stereo_bag

    from illexp_ros.ros.bags.source import BagError

    bag = tmp_path / "stereo"
    stereo_bag(bag, pairs=3)
    events: list[tuple[str, int]] = []
    count = play_messages(bag, "/stereo/left", lambda data: events.append(("left", len(data))), rate=100.0,
                          also=[("/stereo/right", lambda data: events.append(("right", len(data))))])
    assert count == 3 and [side for side, _ in events] == ["left", "right"] * 3
    with pytest.raises(BagError, match="topic /nowhere not in bag"):
        play_messages(bag, "/stereo/left", lambda data: None, also=[("/nowhere", lambda data: None)])
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic",
                             "/stereo/left", "--also", "/stereo/left:=/elsewhere"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        "illexp_bag play: error: --also /stereo/left: that topic is played already"], result.stderr


def test_the_loop_gap_is_the_images_interval_whatever_else_is_played(tmp_path: Path) -> None:
    """With --also (or --camera-info) the wrap gap was the mean interval of all messages: 0.044 s instead of 0.1 s
    with one more topic, shorter still with a 100 Hz one."""
    from test_bag_process import stereo_bag

    bag = tmp_path / "stereo"
    stereo_bag(bag, pairs=3)  # 10 Hz
    times: list[float] = []
    play_messages(bag, "/stereo/left", lambda data: times.append(time.monotonic()), loop=True,
                  also=[("/stereo/right", lambda data: None)], should_stop=lambda: len(times) >= 7)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert len(gaps) == 6 and all(0.08 < g < 0.15 for g in gaps), gaps


def test_also_keeps_a_recorded_durable_topic_durable(tmp_path: Path) -> None:
    """A topic recorded transient-local (/tf_static) was published volatile: tf2's listener, which subscribes
    transient-local, never matched it."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
    from rosbags.rosbag2 import StoragePlugin, Writer

    from illexp_ros.ros.bags.images import IMAGE_TYPE, TYPESTORE
    from illexp_ros.ros.bags.play import also_types

    never = QosTime(sec=0, nsec=0)

    def qos(durability: QosDurability) -> Qos:
        return Qos(history=QosHistory.KEEP_LAST, depth=1, reliability=QosReliability.RELIABLE,
                   durability=durability, deadline=never, lifespan=never, liveliness=QosLiveliness.AUTOMATIC,
                   liveliness_lease_duration=never, avoid_ros_namespace_conventions=False)
    bag = tmp_path / "durable"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        for topic, durability in (("/latched", QosDurability.TRANSIENT_LOCAL), ("/plain", QosDurability.VOLATILE)):
            writer.add_connection(topic, IMAGE_TYPE, typestore=TYPESTORE, offered_qos_profiles=[qos(durability)])
    assert also_types(bag, ["/latched", "/plain"]) == [(IMAGE_TYPE, True), (IMAGE_TYPE, False)]


def test_a_stereo_bag_replayed_through_the_stereo_node(tmp_path: Path) -> None:
    """`illexp_bag play --also` feeds both views of a stereo bag to illexp_stereo_node over DDS: every pair comes
    back, each view with its own header."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from test_bag_process import SIZE, stereo_bag

    bag = tmp_path / "stereo"
    stereo_bag(bag, pairs=5)
    ns = f"replay{os.getpid()}"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    node = subprocess.Popen(
        [sys.executable, "-m", "illexp_ros.ros.node.illexp_stereo_node", "--ros-args", "--params-file",
         str(ROOT / "config" / "illexp_stereo.yaml"), "-r", f"__ns:=/{ns}", "-p", "backend:=passthrough",
         "-r", f"left/image:=/{ns}_rig/left", "-r", f"right/image:=/{ns}_rig/right"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    got: dict[str, list] = {"left": [], "right": []}
    try:
        harness = rclpy.create_node("stereo_replay_harness", context=context)
        for side in got:
            harness.create_subscription(Image, f"/{ns}/{side}/corrected/image", got[side].append,
                                        QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))
        probes = {side: harness.create_publisher(Image, f"/{ns}_rig/{side}",
                                                 QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
                  for side in got}
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(harness)
        # play waits for its own subscriber (the node), not for the node's publishers to match this harness: on a
        # loaded machine all 5 pairs once went out before that (CI, 2026-11-29: none arrived). So a probe pair,
        # stamped before the bag's, goes through the node first, again until it comes back.
        pixels = np.zeros((*SIZE, 3), np.uint8)

        def came_back(stamp_ns: int) -> bool:
            return all(any(stamp_of(m) == stamp_ns for m in got[side]) for side in got)
        for probe_ns in range(1, 31):
            for side, publisher in probes.items():
                publisher.publish(image_msg(pixels, "rgb8", probe_ns, f"{side}_optical"))
            answered = time.monotonic() + 1.0
            while time.monotonic() < answered and not came_back(probe_ns):
                executor.spin_once(timeout_sec=0.05)
            if came_back(probe_ns):
                break
        else:
            raise AssertionError("no probe pair came back through the node\n" + node_output(node))
        bag_stamps = {1_000_000_000 + i * 100_000_000 for i in range(5)}
        play = subprocess.Popen(
            [sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic", "/stereo/left",
             "--out-topic", f"/{ns}_rig/left", "--also", f"/stereo/right:=/{ns}_rig/right", "--wait", "60"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def replayed() -> dict[str, list]:  # late probe replies left out
            return {side: [m for m in got[side] if stamp_of(m) in bag_stamps] for side in got}
        deadline = time.monotonic() + 60  # with the probes and the node's start, inside the 180 s test limit
        while time.monotonic() < deadline and min(map(len, replayed().values())) < 5:
            executor.spin_once(timeout_sec=0.1)
        out, err = play.communicate(timeout=30)
        got = replayed()
        assert play.returncode == 0, err
        assert "published 5 messages on" in out and f"and 5 on /{ns}_rig/right" in out, out
        if not len(got["left"]) == len(got["right"]) == 5:
            raise AssertionError(({k: [m.header.stamp.nanosec for m in v] for k, v in got.items()}, out, err,
                                  node_output(node)))
        for left, right in zip(got["left"], got["right"]):
            assert left.header.stamp == right.header.stamp
            assert (left.header.frame_id, right.header.frame_id) == ("left_optical", "right_optical")
    finally:
        rclpy.try_shutdown(context=context)
        stop_process(node)
