"""`illexp_bag`: process, replay and inspect ROS 2 bags (sqlite3 or mcap) and ROS 1 bags, without rosbag2.

  illexp_bag process IN OUT --topic /cam/image_raw   # OUT = IN + corrected frames on /cam/image_raw/corrected
                                                     # (IN may be a ROS 1 .bag: OUT is its ROS 2 conversion)
                                                     # (--compressed jpeg: also .../corrected/compressed)
                                                     # (--right-topic /right/image_raw: --topic's left view
                                                     #  and this right one corrected together, one level)
  illexp_bag play IN --topic /cam/image_raw           # publish the images live at their recorded pace
                                                     # (--clock: and the bag's time on /clock)
  illexp_bag sheet IN --topic /cam/image_raw --out sheet.png   # before / after / exposure-map contact sheet

Errors a user can cause print one line and exit with status 2; Ctrl-C exits with 130 and leaves no output.
This module imports neither rclpy (`play` does, and `process` for rclpy's topic-name rules, lazily) nor the
runtime (loaded once the bag checks out).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from illexp_ros.ros.bags.play import DEFAULT_CLOCK_HZ
from illexp_ros.ros.bags.source import BagError
from illexp_ros.ros.interruption import interrupted_by_signals

BACKENDS = ("auto", "tensorrt", "torch_cuda", "onnxruntime", "torch_cpu", "passthrough")
MODES = ("under", "over", "mixed", "auto")
# The node's defaults and ranges (ros/node/parameters.py, runtime/level_smoothing.py, exposure_compensation.py and
# correction_strength.py; a test keeps them equal). Not imported: this module must not load the runtime (torch)
# before the bag has been checked.
DEFAULT_STRENGTH = 1.0
DEFAULT_LEVEL_SMOOTHING = 0.9
MAX_LEVEL_SMOOTHING = 0.99
MAX_EXPOSURE_COMPENSATION = 3.0
# The node's corrected/image/compressed defaults (ros/node/image_conversion.py; a test keeps them equal; ranges
# are checked by process_bag).
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 3


def smoothing_weight(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= MAX_LEVEL_SMOOTHING:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_LEVEL_SMOOTHING}], got {text}")
    return value


def compensation_stops(text: str) -> float:
    value = float(text)
    if not -MAX_EXPOSURE_COMPENSATION <= value <= MAX_EXPOSURE_COMPENSATION:
        raise argparse.ArgumentTypeError(f"must be in [-{MAX_EXPOSURE_COMPENSATION:g}, "
                                         f"{MAX_EXPOSURE_COMPENSATION:g}] stops, got {text}")
    return value


def clock_rate(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1000:
        raise argparse.ArgumentTypeError(f"must be in (0, 1000] Hz, got {text}")
    return value


def wait_seconds(text: str) -> float:
    """--wait: a finite number of seconds >= 0 (-5 and nan were taken for no wait, silently)."""
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def thread_count(text: str) -> int:
    """--threads: 0..MAX_THREADS, the node's `threads` range."""
    from illexp_ros.runtime.backends.base import MAX_THREADS  # here: --help stays free of torch

    value = non_negative_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_THREADS}, got {text}")
    return value


def correction_strength(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (shipped models, picked per mode), a shipped name or a model file")
    p.add_argument("--mode", default="mixed", choices=MODES,
                   help="under | over | mixed (default) | auto (route each frame by its exposure; "
                        "well-exposed frames pass unchanged)")
    # On by default, as in the node (config/illexp.yaml): the same correction, and ~50x faster on a CPU than the
    # paper-sized network at full resolution.
    p.add_argument("--fast", action=argparse.BooleanOptionalAction, default=True,
                   help="run the network at reduced resolution and apply the correction at full resolution "
                        "(default, as the node); --no-fast runs the paper-sized network at full resolution")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default auto)")
    p.add_argument("--threads", type=thread_count, default=0, metavar="N",
                   help="cap the CPU backends' threads, as the node's threads parameter (default 0: the "
                        "libraries' own, all cores)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="illexp_bag", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("process", help="copy a bag, adding a corrected Image for every image on --topic")
    p.add_argument("input", metavar="IN",
                   help="input bag: a ROS 2 bag (directory, or a single .mcap / .db3 file) or a ROS 1 .bag")
    p.add_argument("output", metavar="OUT", help="output bag directory (must not exist unless --force)")
    p.add_argument("--topic", required=True, help="Image or CompressedImage topic to correct")
    p.add_argument("--out-topic", help="topic of the corrected images (default: <topic>/corrected)")
    p.add_argument("--right-topic", metavar="TOPIC",
                   help="a stereo camera's right view (--topic is then the left one): both views corrected "
                        "together, at one level, as illexp_stereo_node does; each to <its topic>/corrected")
    p.add_argument("--sync-tolerance", type=float, default=None, metavar="S",
                   help="with --right-topic: largest header.stamp difference in seconds of a left and a right "
                        "view that make a pair, as the stereo node's sync_tolerance_s (default 0: identical)")
    p.add_argument("--sync-queue-size", type=int, default=None, metavar="N",
                   help="with --right-topic: frames of a view that wait for their partner, 1..100 (default 30: a "
                        "view logged up to 30 frames after the other still pairs)")
    p.add_argument("--out-suffix", default=None, metavar="NAME",
                   help="with --right-topic: each view's corrected frames go to <its topic>/NAME (default corrected)")
    p.add_argument("--storage", choices=("sqlite3", "mcap"),
                   help="storage of OUT (default: that of IN; mcap for a ROS 1 bag)")
    p.add_argument("--force", action="store_true", help="replace OUT if it is a bag (or an empty folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--strength", type=correction_strength, default=DEFAULT_STRENGTH, metavar="S",
                   help="how much of the correction to write, 0..1, as the node's strength parameter (default "
                        f"{DEFAULT_STRENGTH:g}: all of it; 0 = the input)")
    p.add_argument("--level-smoothing", type=smoothing_weight, default=DEFAULT_LEVEL_SMOOTHING, metavar="W",
                   help="steady brightness across frames as the node's level_smoothing parameter (default "
                        f"{DEFAULT_LEVEL_SMOOTHING}, the node's; 0 = each frame as the network corrects it)")
    p.add_argument("--exposure-compensation", type=compensation_stops, default=0.0, metavar="EV",
                   help="brighter (+) or darker (-) than corrected, in stops, as the node's exposure_compensation "
                        "parameter (default 0)")
    p.add_argument("--compressed", choices=("jpeg", "png"),
                   help="also write each corrected frame as a CompressedImage on <out topic>/compressed, "
                        "encoded as the node's corrected/image/compressed")
    p.add_argument("--jpeg-quality", type=int, default=DEFAULT_JPEG_QUALITY, metavar="Q",
                   help=f"JPEG quality of --compressed jpeg, 1..100 (default {DEFAULT_JPEG_QUALITY}, the node's)")
    p.add_argument("--png-level", type=int, default=DEFAULT_PNG_LEVEL, metavar="L",
                   help=f"PNG compression level of --compressed png, 0..9 (default {DEFAULT_PNG_LEVEL}, the node's)")
    _add_model_args(p)

    p = sub.add_parser("play", help="publish a bag's images over DDS at their recorded pace")
    p.add_argument("input", metavar="IN")
    p.add_argument("--topic", required=True, help="topic to publish from the bag")
    p.add_argument("--out-topic", help="publish under this name instead (default: the same topic)")
    p.add_argument("--camera-info", metavar="TOPIC",
                   help="also publish this sensor_msgs/CameraInfo topic of the bag, in order with the images")
    p.add_argument("--out-camera-info", metavar="NAME",
                   help="publish --camera-info under this name instead (default: the same topic)")
    p.add_argument("--also", action="append", default=[], metavar="TOPIC[:=NAME]",
                   help="also publish this topic of the bag (any type), in order with the images, on NAME if given; "
                        "repeatable (a stereo camera's other view and camera_info, /tf, ...)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="start over at the end until Ctrl-C")
    p.add_argument("--qos", choices=("reliable", "sensor_data"), default="reliable",
                   help="publisher QoS (default reliable: serves reliable and best-effort subscribers)")
    p.add_argument("--wait", type=wait_seconds, default=0.0, metavar="S",
                   help="wait up to S seconds in all for a subscriber on each topic played before starting")
    p.add_argument("--clock", type=clock_rate, nargs="?", const=DEFAULT_CLOCK_HZ, default=0.0, metavar="HZ",
                   help="also publish the bag's time on /clock, HZ times a second (default "
                        f"{DEFAULT_CLOCK_HZ:g}), for nodes run with use_sim_time:=true (as ros2 bag play --clock)")

    p = sub.add_parser("sheet", help="contact sheet: before / after / exposure map of sampled frames")
    p.add_argument("input", metavar="IN")
    p.add_argument("--topic", required=True)
    p.add_argument("--out", required=True, help="image file to write (.png or .jpg)")
    p.add_argument("--frames", type=int, default=6, help="number of frames (columns), default 6")
    p.add_argument("--strength", type=correction_strength, default=DEFAULT_STRENGTH, metavar="S",
                   help="how much of the correction the 'after' row shows, 0..1, as the node's strength parameter "
                        f"(default {DEFAULT_STRENGTH:g})")
    p.add_argument("--exposure-compensation", type=compensation_stops, default=0.0, metavar="EV",
                   help="the 'after' row brighter (+) or darker (-) than corrected, in stops, as the node's "
                        "exposure_compensation parameter (default 0)")
    _add_model_args(p)
    return parser


def enhancer_factory(args: argparse.Namespace) -> Callable[[], Any]:
    """Loading a model takes seconds: build the Enhancer only once the bag has been checked."""
    def make() -> Any:
        from illexp_ros.runtime import Enhancer

        return Enhancer.from_model(model=args.model, backend=args.backend, mode=args.mode, fast=args.fast,
                                   logger=lambda line: print(f"illexp_bag: {line}", flush=True),
                                   threads=args.threads)
    return make


def run(args: argparse.Namespace) -> int:
    if args.command == "process":
        from illexp_ros.ros.bags.process import process_bag

        stereo_only = [flag for flag, value in (("--sync-tolerance", args.sync_tolerance),
                                                ("--sync-queue-size", args.sync_queue_size),
                                                ("--out-suffix", args.out_suffix)) if value is not None]
        if stereo_only and args.right_topic is None:
            raise BagError(f"{stereo_only[0]} needs --right-topic (a stereo pair)")
        stereo = {name: value for name, value in (("sync_tolerance_s", args.sync_tolerance),
                                                   ("sync_queue_size", args.sync_queue_size),
                                                   ("out_suffix", args.out_suffix)) if value is not None}
        summary = process_bag(args.input, args.output, args.topic, enhancer_factory(args),
                              out_topic=args.out_topic, storage=args.storage, force=args.force,
                              progress=not args.no_progress, level_smoothing=args.level_smoothing,
                              strength=args.strength, exposure_compensation=args.exposure_compensation,
                              compressed=args.compressed, jpeg_quality=args.jpeg_quality,
                              png_level=args.png_level, right_topic=args.right_topic, **stereo)
        print(summary.line())
    elif args.command == "play":
        from illexp_ros.ros.bags.play import play_command

        if args.out_camera_info and not args.camera_info:
            raise BagError("--out-camera-info needs --camera-info")
        return play_command(args.input, args.topic, args.out_topic, args.rate, args.loop, args.qos, args.wait,
                            clock_hz=args.clock, camera_info=args.camera_info, out_camera_info=args.out_camera_info,
                            also=args.also)
    elif args.command == "sheet":
        from illexp_ros.ros.bags.sheet import sheet_command

        written = sheet_command(args.input, args.topic, args.out, args.frames, enhancer_factory(args),
                                strength=args.strength, exposure_compensation=args.exposure_compensation)
        print(f"wrote {written}")
    return 0


def user_error(exc: Exception) -> str | None:
    """The one line to print for an error the user can cause or fix, else None (a bug: let it raise).
    The runtime's and the image conversion's error types are looked up only if their modules were imported (an
    exception of theirs cannot exist otherwise): importing them here would load torch before the bag is checked."""
    if isinstance(exc, OSError):  # OUT not writable, a disk full, IN not readable
        return f"{exc.strerror}: {exc.filename}" if exc.strerror and exc.filename else str(exc)
    types: list[type] = [BagError]
    for module, name in (("illexp_ros.runtime.errors", "EnhancerError"),
                         ("illexp_ros.ros.node.image_conversion", "ImageFormatError")):
        if module in sys.modules:
            types.append(getattr(sys.modules[module], name))
    return str(exc) if isinstance(exc, tuple(types)) else None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # play initialises rclpy without its own handlers, which would shut the ROS context down under the publisher
    # whatever SIGINT's disposition (a traceback).
    try:
        with interrupted_by_signals():
            return run(args)
    except KeyboardInterrupt:
        left = "; no output left behind" if args.command == "process" else ""
        print(f"illexp_bag {args.command}: interrupted{left}", file=sys.stderr)
        return 130
    except Exception as exc:
        line = user_error(exc)
        if line is None:
            raise
        print(f"illexp_bag {args.command}: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
