"""`illexp_bench` entry point: `illexp_bench --node ...` is the end-to-end node benchmark and
`illexp_bench --node --soak SECONDS` the long-run soak (illexp_ros.ros.demo, need rclpy); anything else is the
Enhancer benchmark (illexp_ros.runtime). A separate dispatcher so the
runtime layer never imports the ROS layer.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--node" in argv:
        rest = [a for a in argv if a != "--node"]
        if any(a == "--soak" or a.startswith("--soak=") for a in rest):
            from illexp_ros.ros.demo.soak import main as soak_main

            return soak_main(rest)
        from illexp_ros.ros.demo.node_bench import main as node_main

        return node_main(rest)
    from illexp_ros.runtime.bench import main as runtime_main

    return runtime_main(argv)


if __name__ == "__main__":
    sys.exit(main())
