"""End-to-end latency of illexp_node: publish a frame -> receive its corrected frame, over real DDS.

The node runs in its own process (as in deployment); this process publishes one frame at a time and waits for
the corrected frame with the same stamp (ping-pong, so the number is latency, not throughput under overload).
`passthrough` is the floor: the ROS transport both ways plus conversion, with no network.

  python -m illexp_ros.ros.demo.node_bench --backends passthrough,auto --sizes 640x480,1280x720 --frames 30
  illexp_bench --node --backends auto --param strength:=0.0        # any node parameter, as `-p` on a ros2 run line
  illexp_bench --node --encoding bayer_rggb8                        # frames in any encoding the node reads
  illexp_bench --node --stereo                                      # illexp_stereo_node: a pair per ping
"""

from __future__ import annotations

import argparse
import array
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from illexp_ros.parent_death import ending_with_this_process
from illexp_ros.ros.interruption import interrupted_by_signals

ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 10.0


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        try:
            w, h = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"size {item!r} is not WIDTHxHEIGHT") from None
        if w <= 0 or h <= 0 or w % 2 or h % 2:
            raise argparse.ArgumentTypeError(f"size {item!r} must be positive and even")
        sizes.append((w, h))
    return sizes


def node_param(text: str) -> str:
    """NAME:=VALUE for one of the node's parameters (passed to it as `-p NAME:=VALUE`; the node checks VALUE)."""
    from illexp_ros.ros.node.parameters import STEREO_PARAMETERS

    name, sep, value = text.partition(":=")
    if not sep or not value:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:=VALUE")
    if name not in STEREO_PARAMETERS:  # illexp_node's and the stereo node's two (parse_args checks those)
        raise argparse.ArgumentTypeError(f"{name!r} is not a parameter of illexp_node "
                                         f"(one of {', '.join(STEREO_PARAMETERS)})")
    if name in ("backend", "qos"):
        raise argparse.ArgumentTypeError(f"set {name} with --{'backends' if name == 'backend' else name}")
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from illexp_ros.ros.node.image_conversion import SUPPORTED_ENCODINGS

    p = argparse.ArgumentParser(prog="illexp_bench --node", description=__doc__.split("\n\n")[0],
                                epilog="illexp_bench --node --soak SECONDS runs the node for a long time instead "
                                       "(its own options: illexp_bench --node --soak 1 --help).")
    p.add_argument("--backends", default="passthrough,auto", help="comma-separated node backends")
    p.add_argument("--sizes", type=parse_sizes, default=parse_sizes("640x480,1280x720"))
    p.add_argument("--frames", type=int, default=30, help="timed frames per size (after warm-up)")
    p.add_argument("--model", default="", help="node `model` parameter (empty: config/illexp.yaml)")
    p.add_argument("--fast", choices=("true", "false"), default="", help="node `fast` (empty: config)")
    p.add_argument("--qos", choices=("reliable", "sensor_data"), default="reliable")
    p.add_argument("--encoding", choices=SUPPORTED_ENCODINGS, default="bgr8", metavar="ENCODING",
                   help="encoding of the frames sent (and so of the corrected ones): "
                        f"{', '.join(SUPPORTED_ENCODINGS)}; a Bayer mosaic is a third of bgr8's bytes")
    p.add_argument("--transport", choices=("LARGE_DATA", "DEFAULT"), default="LARGE_DATA",
                   help="FASTDDS_BUILTIN_TRANSPORTS for both processes (DEFAULT: Fast DDS's own default)")
    p.add_argument("--param", type=node_param, action="append", default=[], metavar="NAME:=VALUE",
                   help="any other node parameter, e.g. strength:=0.0 or level_smoothing:=0.0 (repeatable; "
                        "applied after config/illexp.yaml and --model / --fast)")
    p.add_argument("--stereo", action="store_true",
                   help="time illexp_stereo_node (config/illexp_stereo.yaml): each ping is a left and a right frame "
                        "with one stamp, timed until both corrected views are back")
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error("--frames must be >= 1")
    from illexp_ros.ros.node.parameters import PARAMETERS

    stereo_only = [param for param in args.param if param.partition(":=")[0] not in PARAMETERS]
    if stereo_only and not args.stereo:
        p.error(f"--param {stereo_only[0]}: a parameter of illexp_stereo_node only (add --stereo)")
    return args


class Client:
    """Publishes frames on /bench/<view>image_raw and collects corrected frames by view and stamp; `views` are
    the node's camera prefixes ('' for illexp_node, 'left/' and 'right/' for the stereo node)."""

    def __init__(self, qos_name: str, views: tuple[str, ...] = ("",)) -> None:
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from illexp_ros.ros.node.background_spin import BackgroundSpin
        from illexp_ros.ros.node.qos import image_qos

        self.Image = Image
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("illexp_node_bench", context=self.context)
        self.pubs = [self.node.create_publisher(Image, f"/bench/{view}image_raw", image_qos(qos_name))
                     for view in views]
        receive_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if qos_name == "reliable"
                                 else ReliabilityPolicy.BEST_EFFORT)
        for i, view in enumerate(views):
            self.node.create_subscription(Image, f"/bench/{view}corrected/image",
                                          lambda msg, i=i: self._on_frame(i, msg), receive_qos)
        self.cond = threading.Condition()
        self.arrived: dict[tuple[int, int], float] = {}  # (view, stamp) -> arrival
        self.spin = BackgroundSpin(self.node, self.context)

    def _on_frame(self, view: int, msg) -> None:
        now = time.perf_counter()
        with self.cond:
            self.arrived[(view, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)] = now
            self.cond.notify_all()

    def ping(self, values: np.ndarray, encoding: str, stamp: int, timeout: float) -> float | None:
        """Publish one frame on every view (`values`: the message's rows in `encoding`, as
        image_conversion.frame_to_array gives them); seconds until the last view's corrected frame arrives, None
        on timeout."""
        msg = self.Image(height=values.shape[0], width=values.shape[1], encoding=encoding,
                         step=values.strides[0])
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        msg.header.frame_id = "bench"
        data = array.array("B")
        data.frombytes(values.reshape(-1).view(np.uint8))
        msg.data = data
        keys = [(view, stamp) for view in range(len(self.pubs))]
        sent = time.perf_counter()
        for pub in self.pubs:
            pub.publish(msg)
        with self.cond:
            arrived = self.cond.wait_for(lambda: all(key in self.arrived for key in keys), timeout)
            times = [self.arrived.pop(key, None) for key in keys]
        return max(times) - sent if arrived else None

    def close(self) -> None:
        self.spin.stop()


def node_config(name: str = "illexp.yaml") -> Path:
    """config/`name` of the source tree or of a colcon install's share folder (as the demo finds illexp.yaml)."""
    from illexp_ros.ros.demo.demo import config_file

    return config_file().with_name(name)


def model_argument(model: str) -> str:
    """A model file given relative to where the tool runs, made absolute (the node starts in the package root);
    a shipped name ('mixed', 'default') as it is."""
    return str(Path(model).resolve()) if Path(model).is_file() else model


def start_node(backend: str, args: argparse.Namespace, env: dict[str, str]) -> subprocess.Popen:
    module, config = ("illexp_stereo_node", "illexp_stereo.yaml") if args.stereo else ("illexp_node", "illexp.yaml")
    cmd = [sys.executable, "-m", f"illexp_ros.ros.node.{module}", "--ros-args", "--params-file",
           str(node_config(config)), "-r", "__ns:=/bench"]
    for view in bench_views(args):
        cmd += ["-r", f"{view}image:=/bench/{view}image_raw"]
    cmd += ["-p", f"backend:={backend}", "-p", f"qos:={args.qos}", "--log-level", "warn"]
    if args.model:
        cmd += ["-p", f"model:={model_argument(args.model)}"]
    if args.fast:
        cmd += ["-p", f"fast:={args.fast}"]
    for param in args.param:
        cmd += ["-p", param]
    return start_logged(cmd, env)


def bench_views(args: argparse.Namespace) -> tuple[str, ...]:
    return ("left/", "right/") if args.stereo else ("",)


def start_logged(cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """The node process with its output in a temporary file (node_output reads it), not a pipe: a pipe that
    nobody reads fills up (64 kB) and then blocks the node at its next log line, hours into a soak. The node
    ends with this process, even one killed outright (illexp_ros/parent_death.py)."""
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=ending_with_this_process())
    proc.log = log  # type: ignore[attr-defined]
    return proc


def node_output(proc: subprocess.Popen) -> str:
    log = proc.log  # type: ignore[attr-defined]
    log.flush()
    log.seek(0)
    return log.read()


def stop_node(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(2)  # SIGINT, as Ctrl-C
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return node_output(proc)


def warm_up(client: Client, proc: subprocess.Popen, values: np.ndarray, encoding: str) -> bool:
    """Resend until a corrected frame comes back: discovery, the model's first call, and (LARGE_DATA) the
    first ~1.5 s after discovery, when frames are lost."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if client.ping(values, encoding, time.time_ns(), 1.0) is not None:
            return True
    return False


def run(args: argparse.Namespace) -> list[dict]:
    env = dict(os.environ)
    if args.transport == "LARGE_DATA":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    else:
        env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    os.environ.clear()
    os.environ.update(env)  # this process's participant too (read when rclpy creates it)
    from illexp_ros.ros.node.image_conversion import frame_to_array

    rng = np.random.default_rng(0)
    frames = {size: frame_to_array(rng.integers(0, 90, (size[1], size[0], 3), dtype=np.uint8), "bgr", args.encoding)
              for size in args.sizes}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    client = Client(args.qos, bench_views(args))
    rows = []
    try:
        with tqdm(total=len(backends) * len(args.sizes) * args.frames, desc="illexp_bench --node",
                  unit="frame") as bar:
            for backend in backends:
                proc = start_node(backend, args, env)
                try:
                    for size, values in frames.items():
                        if not warm_up(client, proc, values, args.encoding):
                            raise RuntimeError(f"node with backend {backend} did not answer:\n"
                                               f"{stop_node(proc).strip()[-2000:]}")
                        times = []
                        for _ in range(args.frames):
                            if proc.poll() is not None:  # each frame would wait out its reply timeout
                                raise RuntimeError(f"node with backend {backend} exited (status {proc.returncode})"
                                                   f":\n{stop_node(proc).strip()[-2000:]}")
                            t = client.ping(values, args.encoding, time.time_ns(), REPLY_TIMEOUT_S)
                            if t is not None:
                                times.append(t * 1e3)
                            bar.update(1)
                        t = np.array(times) if times else np.array([np.nan])
                        rows.append({"backend": backend, "size": f"{size[0]}x{size[1]}", "frames": len(times),
                                     "lost": args.frames - len(times), "p50": np.percentile(t, 50),
                                     "p90": np.percentile(t, 90), "max": t.max()})
                finally:
                    stop_node(proc)
    finally:
        client.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with interrupted_by_signals():  # `kill` as Ctrl-C: run's finally stops the node (SIGTERM left it running)
            rows = run(args)
    except RuntimeError as exc:
        print(f"illexp_bench --node: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("illexp_bench --node: interrupted", file=sys.stderr)
        return 130
    params = f", {' '.join(args.param)}" if args.param else ""
    what = "illexp_stereo_node, a pair per ping, until both views are back" if args.stereo else "illexp_node"
    print(f"\n{what}: end-to-end latency publish -> corrected receive (ms), {args.encoding}, qos {args.qos}, "
          f"transport {args.transport}{params}, {os.cpu_count()} CPUs")
    print(f"{'backend':<14}{'size':>10}{'frames':>8}{'lost':>6}{'p50':>9}{'p90':>9}{'max':>9}")
    for r in rows:
        print(f"{r['backend']:<14}{r['size']:>10}{r['frames']:>8}{r['lost']:>6}{r['p50']:>9.1f}{r['p90']:>9.1f}"
              f"{r['max']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
