"""What the DDS tests share: Image messages from numpy, parameter values, waiting on a condition, stopping a node
process, and running `illexp_bag play` while a subscriber in this process collects what it publishes.

rclpy and the message packages are imported inside the functions, so importing this module needs no ROS."""

from __future__ import annotations

import array
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def image_msg(pixels: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "cam_optical") -> Any:
    """A sensor_msgs/Image of an H x W (x C) uint8 array, stamped stamp_ns."""
    from sensor_msgs.msg import Image

    msg = Image(height=pixels.shape[0], width=pixels.shape[1], encoding=encoding,
                step=pixels.shape[1] * (pixels.shape[2] if pixels.ndim == 3 else 1))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.data = array.array("B", np.ascontiguousarray(pixels).tobytes())
    return msg


def stamp_of(msg: Any) -> int:
    """header.stamp in nanoseconds."""
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def param_value(value: bool | int | float | str) -> Any:
    """An rcl_interfaces ParameterValue of the parameter types the node has (bool, integer, double, string)."""
    from rcl_interfaces.msg import ParameterType, ParameterValue

    if isinstance(value, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    if isinstance(value, int):
        return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
    if isinstance(value, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)


def wait_on(cond: threading.Condition, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """predicate()'s first truthy value, re-checked whenever `cond` is notified (at least every 0.1 s);
    AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with cond:
        while True:
            result = predicate()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
            cond.wait(min(left, 0.1))


def process_running(pid: int) -> bool:
    """Whether pid is a live process (Linux /proc; a zombie that nobody reaps here counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_until_ended(pid: int, timeout: float) -> bool:
    """True once pid is no longer running (see process_running), False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while process_running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def node_output(proc: subprocess.Popen) -> str:
    """Stop a node started with stdout=PIPE (stderr merged, text=True) and return what it printed: for a
    failure message, so that a lost frame says where it was lost."""
    stop_process(proc)
    return "node output:\n" + (proc.stdout.read() if proc.stdout else "")


def play_and_collect(bag: Path, topic: str, out_topic: str, expected: int, raw: bool = False,
                     timeout: float = 60.0, camera_info: tuple[str, str, list] | None = None
                     ) -> tuple[list, subprocess.CompletedProcess]:
    """Run `illexp_bag play BAG --topic TOPIC --out-topic OUT_TOPIC` and collect what arrives on OUT_TOPIC
    (sensor_msgs/Image; serialized bytes with raw=True) until `expected` messages came or play exited.
    camera_info = (bag topic, out topic, a list): also play that CameraInfo topic (--camera-info,
    --out-camera-info) and collect its messages into the list. Returns (messages, the finished play process
    with its stdout / stderr)."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    context = Context()
    rclpy.init(context=context)
    received: list = []
    try:
        node = rclpy.create_node("test_bag_play", context=context)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, out_topic, received.append, qos, raw=raw)
        extra = []
        if camera_info is not None:
            node.create_subscription(CameraInfo, camera_info[1], camera_info[2].append, qos)
            extra = ["--camera-info", camera_info[0], "--out-camera-info", camera_info[1]]
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        cmd = [sys.executable, "-m", "illexp_ros.ros.bags.tool", "play", str(bag), "--topic", topic,
               "--out-topic", out_topic, "--wait", str(int(timeout)), *extra]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            if proc.poll() is not None:
                # It exits once its subscribers acknowledged everything: what is left is received, not yet
                # handled here.
                drained = time.monotonic() + 5.0
                while len(received) < expected and time.monotonic() < drained:
                    executor.spin_once(timeout_sec=0.05)
                for _ in range(10):
                    executor.spin_once(timeout_sec=0.02)
                break
        out, err = proc.communicate(timeout=30)
    finally:
        rclpy.try_shutdown(context=context)
    return received, subprocess.CompletedProcess(cmd, proc.returncode, out, err)
