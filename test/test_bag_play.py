"""`illexp_bag play` publishes a bag's images over DDS, in order, byte for byte (a subscriber in this process
receives them raw and compares them with the bag)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from dds_helpers import play_and_collect
from rosbags.rosbag2 import Reader

from illexp_ros.ros.demo.sample_data import IMAGE_TOPIC, write_sample_bag

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


def test_play_rejects_a_bag_without_the_topic(tmp_path: Path) -> None:
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=1, size=(48, 64))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic", "/x"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "topic /x not in bag" in lines[0]
