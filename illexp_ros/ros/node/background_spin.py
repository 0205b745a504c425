"""Spin one rclpy node in a daemon thread, for tools and tests that publish from their main thread."""

from __future__ import annotations

import threading

import rclpy
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

SPIN_TIMEOUT_S = 0.25


class BackgroundSpin:
    """Starts spinning `node` at once; `stop()` shuts the context down, joins the thread, then destroys the node.

    That order matters: tearing a node down while another thread still waits in it aborts the process at exit
    ("terminate called without an active exception") with Fast DDS's default transports.
    """

    def __init__(self, node: Node, context: Context | None = None) -> None:
        self.node = node
        self.context = context
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            # Bounded waits, as run_node's (illexp_node.py): an unbounded one can miss the shutdown's wake-up.
            while self.executor.context.ok():
                self.executor.spin_once(timeout_sec=SPIN_TIMEOUT_S)
        except ExternalShutdownException:
            pass  # stop() shut the context down

    def stop(self) -> None:
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5.0)
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
