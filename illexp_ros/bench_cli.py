"""`illexp_bench` entry point: `illexp_bench --node ...` is the end-to-end node benchmark (illexp_ros.ros,
needs rclpy); anything else is the Enhancer benchmark (illexp_ros.runtime). A separate dispatcher so the
runtime layer never imports the ROS layer.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--node" in argv:
        from illexp_ros.ros.demo.node_bench import main as node_main

        return node_main([a for a in argv if a != "--node"])
    from illexp_ros.runtime.bench import main as runtime_main

    return runtime_main(argv)


if __name__ == "__main__":
    sys.exit(main())
