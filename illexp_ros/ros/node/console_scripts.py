"""The console scripts `illexp_node` and `illexp_lifecycle_node`.

A node takes seconds to start: importing rclpy and torch, then loading its models. A Ctrl-C or SIGTERM in the
imports used to end it with a long traceback (inside rclpy's pybind11 imports even a C++ abort). This module
imports nothing heavy, so a quiet handler is in place before those imports; `run_node` takes over before it
initialises ROS (a stop during the model load is one line too; once the node runs, rclpy's handlers end it)."""

from __future__ import annotations

import os
import signal
from types import FrameType


def stop_while_importing(program: str) -> None:
    """Until run_node takes over: SIGINT / SIGTERM end the process at once, with one line and exit status 0
    (stopped as asked, as a running node exits). Nothing is set up yet that would need tearing down."""
    def stop(signum: int, frame: FrameType | None) -> None:
        os.write(2, f"{program}: stopped during start-up\n".encode())
        os._exit(0)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def illexp_node() -> int:
    stop_while_importing("illexp_node")
    from illexp_ros.ros.node.illexp_node import main

    return main()


def illexp_lifecycle_node() -> int:
    stop_while_importing("illexp_lifecycle_node")
    from illexp_ros.ros.node.illexp_lifecycle_node import main

    return main()
