"""The console scripts `illexp_node`, `illexp_lifecycle_node`, `illexp_stereo_node` and
`illexp_stereo_lifecycle_node`.

A node takes seconds to start: importing rclpy and torch, then loading its models. A Ctrl-C or SIGTERM in the
imports used to end it with a long traceback (inside rclpy's pybind11 imports even a C++ abort). This module
imports nothing heavy, so a quiet handler is in place before those imports; `run_node` takes over before it
initialises ROS (a stop during the model load is one line too; once the node runs, rclpy's handlers end it)."""

from __future__ import annotations

import importlib
import os
import signal
import sys
import textwrap
from collections.abc import Callable
from types import FrameType

TOPICS = ("in: image (sensor_msgs/Image; image/compressed with input_transport: compressed), camera_info; "
          "out: corrected/image, corrected/image/compressed, corrected/camera_info, exposure_map, /diagnostics")
STEREO_TOPICS = ("in: left/image, right/image (sensor_msgs/Image; <image>/compressed with input_transport: "
                 "compressed), left/camera_info, right/camera_info; out: left/corrected/image, "
                 "right/corrected/image (+ /compressed), left/corrected/camera_info, right/corrected/camera_info, "
                 "left/exposure_map, right/exposure_map, /diagnostics")


def wants_help(argv: list[str]) -> bool:
    """-h / --help among the program's own arguments (those before --ros-args: ROS's are ROS's)."""
    args = argv[1:]
    if "--ros-args" in args:
        args = args[:args.index("--ros-args")]
    return any(a in ("-h", "--help") for a in args)


def print_help(program: str) -> int:
    """Usage, topics and every parameter with its default (a node would otherwise ignore --help and start);
    exit status 0, also when a pager or `head` closes the pipe early."""
    try:
        _write_help(program)
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 0


def _write_help(program: str) -> None:
    from illexp_ros.ros.node.parameters import PARAMETERS, STEREO_PARAMETERS

    stereo = program.startswith("illexp_stereo")
    remaps = ("[-r left/image:=TOPIC] [-r right/image:=TOPIC] [-r left/camera_info:=TOPIC] "
              "[-r right/camera_info:=TOPIC]" if stereo else "[-r image:=TOPIC] [-r camera_info:=TOPIC]")
    print(textwrap.fill(f"usage: {program} [--ros-args [--params-file FILE] {remaps} [-p NAME:=VALUE ...]]",
                        100, subsequent_indent="    ") + "\n")
    if stereo:
        print("Corrects a stereo camera's two views together (matched by stamp, one brightness level for both) "
              "and\nrepublishes each with its own header. Every topic below is there once under left/ and once "
              "under right/;\nmax_rate_hz counts pairs, auto mode classifies the left view and routes both, and "
              "each pair is scaled\nto one shared level.")
    else:
        print("Corrects badly exposed camera frames and republishes them with the same header.")
    if program.endswith("lifecycle_node"):
        node = "illexp_stereo_node" if stereo else "illexp_node"
        print(f"A managed node: `ros2 lifecycle set /{node} configure`, then `activate`.")
    print(textwrap.fill("topics: " + (STEREO_TOPICS if stereo else TOPICS), 100, subsequent_indent="  "))
    config = "illexp_stereo.yaml" if stereo else "illexp.yaml"
    print("\nparameters (RO: fixed at start-up; RW: `ros2 param set` at run time), defaults as the node declares "
          f"them;\nconfig/{config} (share/illexp_ros/config in an install) sets the recommended ones:")
    for name, spec in (STEREO_PARAMETERS if stereo else PARAMETERS).items():
        head = f"  {name} ({spec.default!r}, {'RO' if spec.read_only else 'RW'}): "
        print(textwrap.fill(spec.description, 100, initial_indent=head, subsequent_indent=" " * 6))


def stop_while_importing(program: str) -> None:
    """Until run_node takes over: SIGINT / SIGTERM end the process at once, with one line and exit status 0
    (stopped as asked, as a running node exits). Nothing is set up yet that would need tearing down."""
    def stop(signum: int, frame: FrameType | None) -> None:
        os.write(2, f"{program}: stopped during start-up\n".encode())
        os._exit(0)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def console_script(program: str) -> Callable[[], int]:
    """The console script `program`: --help without importing rclpy or torch, else the quiet stop handler, then
    the node module of the same name (illexp_ros/ros/node/<program>.py) and its main()."""
    def run() -> int:
        if wants_help(sys.argv):
            return print_help(program)
        stop_while_importing(program)
        return importlib.import_module(f"illexp_ros.ros.node.{program}").main()
    run.__name__ = run.__qualname__ = program
    return run


illexp_node = console_script("illexp_node")
illexp_lifecycle_node = console_script("illexp_lifecycle_node")
illexp_stereo_node = console_script("illexp_stereo_node")
illexp_stereo_lifecycle_node = console_script("illexp_stereo_lifecycle_node")
