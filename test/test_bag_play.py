"""`illexp_bag play` publishes a bag's images over DDS, in order, byte for byte (a subscriber in this process
receives them raw and compares them with the bag)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from rosbags.rosbag2 import Reader

from illexp_ros.ros.demo.sample_data import IMAGE_TOPIC, write_sample_bag

pytestmark = pytest.mark.integration


def test_play_publishes_the_recorded_messages_in_order(tmp_path: Path) -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=6, size=(48, 64), fps=30.0)
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == IMAGE_TOPIC]
        expected = [bytes(d) for _, _, d in reader.messages(connections=conns)]

    context = Context()
    rclpy.init(context=context)
    received: list[bytes] = []
    try:
        node = rclpy.create_node("test_bag_play", context=context)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, "/replayed", received.append, qos, raw=True)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        proc = subprocess.Popen([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag),
                                 "--topic", IMAGE_TOPIC, "--out-topic", "/replayed", "--wait", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(received) < len(expected) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            if proc.poll() is not None and len(received) < len(expected):
                for _ in range(20):  # the last messages may still be in flight
                    executor.spin_once(timeout_sec=0.05)
                break
        out, err = proc.communicate(timeout=30)
    finally:
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, err
    assert f"published {len(expected)} messages on /replayed" in out
    assert received == expected


def test_play_rejects_a_bag_without_the_topic(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=1, size=(48, 64))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic", "/x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "topic /x not in bag" in lines[0]
