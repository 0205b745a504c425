"""`illexp_demo` (what `make demo` runs): the whole pipeline on a generated sample bag, end to end over DDS.

1. writes the sample bag (illexp_ros.ros.demo.sample_data: a camera driving out of a tunnel) to OUT/sample_bag;
2. starts `illexp_node` as its own process with config/illexp.yaml (exposure map publishing on);
3. replays the bag's images into it at their recorded pace (bag_play) and records what comes back;
4. writes OUT/corrected.mcap (corrected images + exposure maps as received) and OUT/sheet.png, and prints
   frames in / out / dropped, end-to-end latency p50 / p99, FPS and mean PSNR of input and output against
   the clean frames.

Topics live under /illexp_demo_<pid> (recorded as /illexp_demo/...), the node as /illexp_demo_<pid>/illexp_node:
the demo never mixes with a real camera or node, or with another demo, on the same ROS domain.
Fast DDS: the node and the demo use localhost-only discovery unless ROS_AUTOMATIC_DISCOVERY_RANGE says otherwise
(so that the demo works on a machine without a network and stays off the one it has), and the LARGE_DATA
transport only with another range: localhost-only discovery cancels it (measured, README "QoS and Fast DDS"). The
latency printed is the localhost path's (p50 44 ms here, 21 with ROS_AUTOMATIC_DISCOVERY_RANGE=SUBNET, where
LARGE_DATA is used). With LARGE_DATA the first ~1.5 s after discovery can be lost, so the demo sends warm-up
frames until one comes back before it starts counting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from illexp_ros.core.metrics import psnr
from illexp_ros.parent_death import ending_with_this_process
from illexp_ros.ros.bags.images import (
    IMAGE_TYPE,
    TYPESTORE,
    deserialize,
    make_header,
    serialize,
    serialized_stamp_ns,
    stamp_ns,
)
from illexp_ros.ros.bags.images import message_to_frame as _decode
from illexp_ros.ros.bags.play import play_messages
from illexp_ros.ros.bags.sheet import colorize_map, evenly_spaced, render_sheet
from illexp_ros.ros.demo.sample_data import IMAGE_TOPIC, SampleFrame, write_sample_bag
from illexp_ros.ros.interruption import interrupted_by_signals

NAMESPACE = "/illexp_demo"
# The names in OUT/corrected.mcap. Live, the node and its topics run in a namespace of their own per demo
# process (live_topic): two demos on one domain, or a demo beside a real /illexp_node, never see each other.
INPUT_TOPIC = f"{NAMESPACE}/image_raw"
CORRECTED_TOPIC = f"{NAMESPACE}/corrected/image"
MAP_TOPIC = f"{NAMESPACE}/exposure_map"


def live_namespace() -> str:
    return f"{NAMESPACE}_{os.getpid()}"


def live_topic(recorded: str) -> str:
    """The topic the demo process uses live for a recorded name (/illexp_demo/x -> /illexp_demo_<pid>/x)."""
    return live_namespace() + recorded[len(NAMESPACE):]
FPS = 15.0
DISCOVERY_TIMEOUT_S = 120.0  # node start-up: importing torch and loading models on a slow 2-core machine
WARMUP_TIMEOUT_S = 90.0
DRAIN_IDLE_S = 3.0  # after the last frame: stop waiting once nothing has arrived for this long
SHEET_COLUMNS = 6


class DemoError(Exception):
    """Something that stops the demo; one line for the user."""


def log(text: str) -> None:
    print(f"[illexp_demo] {text}", flush=True)


def config_file() -> Path:
    """config/illexp.yaml of the source tree, else share/illexp_ros/config of a colcon install."""
    here = Path(__file__).resolve().parents[3] / "config" / "illexp.yaml"
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("illexp_ros")) / "config" / "illexp.yaml"
        if share.is_file():
            return share
    except Exception:  # noqa: BLE001 - not in a ROS workspace
        pass
    raise DemoError(f"cannot find config/illexp.yaml (looked in {here.parent})")


def node_command(config: Path, overrides: dict[str, str]) -> list[str]:
    exe = Path(sys.executable).parent / "illexp_node"
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "illexp_ros.ros.node.illexp_node"]
    cmd += ["--ros-args", "--params-file", str(config), "-r", f"__ns:={live_namespace()}",
            "-r", f"image:={live_topic(INPUT_TOPIC)}", "-r", f"corrected/image:={live_topic(CORRECTED_TOPIC)}",
            "-r", f"exposure_map:={live_topic(MAP_TOPIC)}",
            "-p", "publish_exposure_map:=true", "-p", "republish_camera_info:=false"]
    for name, value in overrides.items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd


@dataclass
class Recorder:
    """What the demo sent (stamp -> monotonic send time) and received (raw messages with receive times)."""

    sent: dict[int, float] = field(default_factory=dict)
    corrected: list[tuple[float, int, bytes]] = field(default_factory=list)  # (monotonic, unix ns, raw)
    stamps: set[int] = field(default_factory=set)  # header stamps of the corrected frames received
    maps: list[tuple[float, int, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_receive: float = 0.0

    def on_corrected(self, raw: bytes) -> None:
        with self.lock:
            self.last_receive = time.monotonic()
            self.corrected.append((self.last_receive, time.time_ns(), raw))
            self.stamps.add(serialized_stamp_ns(raw))

    def on_map(self, raw: bytes) -> None:
        with self.lock:
            self.maps.append((time.monotonic(), time.time_ns(), raw))

    def corrected_stamps(self) -> set[int]:
        with self.lock:
            return set(self.stamps)


def with_stamp(raw: bytes, stamp: int) -> bytes:
    """The same Image with another header stamp (warm-up frames must not be mistaken for bag frames)."""
    msg = deserialize(raw, IMAGE_TYPE)
    msg.header = make_header(stamp, msg.header.frame_id)
    return serialize(msg)


def first_message(bag: Path) -> bytes:
    from illexp_ros.ros.bags.source import checked_messages, image_connections, open_bag

    with open_bag(bag) as reader:
        conns = image_connections(reader, bag, IMAGE_TOPIC)
        for _, _, data in checked_messages(reader, bag, conns):
            return bytes(data)
    raise DemoError(f"sample bag {bag} has no frames")


def run_pipeline(bag: Path, frames: list[SampleFrame], node_cmd: list[str], node_log: Path, rate: float) -> Recorder:
    """Start the node, warm it up, replay the bag into it and collect what it publishes."""
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image

    from illexp_ros.ros.node.background_spin import BackgroundSpin
    from illexp_ros.ros.node.qos import image_qos

    rec = Recorder()
    with open(node_log, "w") as log_file:
        # the node ends with the demo, even one killed outright (illexp_ros/parent_death.py)
        node_proc = subprocess.Popen(node_cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                     preexec_fn=ending_with_this_process())
    # No rclpy signal handlers: they would shut the context down under the publisher (a traceback); main()'s
    # own end the demo through the finally below, which stops the node.
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    spin = None
    try:
        spin = BackgroundSpin(rclpy.create_node("illexp_demo"))
        node = spin.node
        publisher = node.create_publisher(Image, live_topic(INPUT_TOPIC), image_qos("reliable"))
        # Deep reliable history on our side: the recorder must not lose what the node published.
        record_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200,
                                reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        sub = node.create_subscription(Image, live_topic(CORRECTED_TOPIC), rec.on_corrected, record_qos, raw=True)
        map_sub = node.create_subscription(Image, live_topic(MAP_TOPIC), rec.on_map, record_qos, raw=True)

        log(f"started illexp_node (pid {node_proc.pid}, log {node_log}); waiting for it to connect")
        t0 = time.monotonic()
        while not (publisher.get_subscription_count() and sub.get_publisher_count()
                   and map_sub.get_publisher_count()):
            _check_node(node_proc, node_log)
            if time.monotonic() - t0 > DISCOVERY_TIMEOUT_S:
                raise DemoError(f"illexp_node did not connect within {DISCOVERY_TIMEOUT_S:.0f} s; see {node_log}")
            time.sleep(0.1)
        log(f"node connected after {time.monotonic() - t0:.1f} s; warming up")

        warm_raw, warm_stamp = first_message(bag), frames[0].stamp_ns - 1_000_000_000
        t1 = time.monotonic()
        while not rec.corrected or not rec.maps:
            _check_node(node_proc, node_log)
            if time.monotonic() - t1 > WARMUP_TIMEOUT_S:
                raise DemoError(f"no corrected frame came back within {WARMUP_TIMEOUT_S:.0f} s; see {node_log}")
            warm_stamp += 1
            publisher.publish(with_stamp(warm_raw, warm_stamp))
            time.sleep(0.2)
        time.sleep(0.5)  # let the last warm-up frames come back before counting
        with rec.lock:
            warmups = len(rec.corrected)
            rec.corrected.clear()
            rec.maps.clear()
            rec.stamps.clear()
        log(f"first corrected frame back after {time.monotonic() - t1:.1f} s ({warmups} warm-up frames); "
            f"replaying {len(frames)} frames at {FPS * rate:.0f} Hz")

        def on_publish(timestamp: int, data: bytes) -> None:
            rec.sent[timestamp] = time.monotonic()  # sample bag: bag timestamp == header stamp

        play_messages(bag, IMAGE_TOPIC, publisher.publish, rate=rate, on_publish=on_publish)
        done = time.monotonic()
        wanted = set(rec.sent)
        while time.monotonic() - max(done, rec.last_receive) < DRAIN_IDLE_S:
            if wanted <= rec.corrected_stamps():
                break
            time.sleep(0.1)
        time.sleep(0.2)  # the exposure map of the last frame follows its corrected image
        _check_node(node_proc, node_log)  # a node that died during the replay is not "dropped frames"
    finally:
        _stop_node(node_proc)
        if spin is not None:
            spin.stop()
        rclpy.try_shutdown()
    return rec


def _check_node(proc: subprocess.Popen, node_log: Path) -> None:
    if proc.poll() is not None:
        lines = [ln for ln in node_log.read_text(errors="replace").splitlines() if ln.strip()]
        raise DemoError(f"illexp_node exited with status {proc.returncode}: {lines[-1] if lines else ''}")


def _stop_node(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class DemoResult:
    frames_in: int
    frames_out: int
    latencies_ms: np.ndarray
    fps: float
    psnr_in_all: float
    psnr_in: float
    psnr_out: float
    by_stamp: dict[int, tuple[np.ndarray, np.ndarray | None]]  # stamp -> (corrected RGB, exposure map)


def analyse(rec: Recorder, frames: list[SampleFrame]) -> DemoResult:
    clean = {f.stamp_ns: f for f in frames}
    maps: dict[int, np.ndarray] = {}
    for _, _, raw in rec.maps:
        msg = deserialize(raw, IMAGE_TYPE)
        maps[stamp_ns(msg.header)] = np.asarray(msg.data, np.uint8).reshape(msg.height, msg.step)[:, :msg.width]
    by_stamp: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    latencies, receive_times = [], []
    for t_recv, _, raw in rec.corrected:
        msg = deserialize(raw, IMAGE_TYPE)
        stamp = stamp_ns(msg.header)
        if stamp not in clean or stamp in by_stamp or stamp not in rec.sent:
            continue
        frame = _decode(msg, IMAGE_TYPE)
        rgb = frame.pixels if frame.color_order == "rgb" else frame.pixels[..., ::-1]
        by_stamp[stamp] = (np.ascontiguousarray(rgb), maps.get(stamp))
        latencies.append((t_recv - rec.sent[stamp]) * 1e3)
        receive_times.append(t_recv)
    out_stamps = sorted(by_stamp)
    span = max(receive_times) - min(rec.sent.values()) if receive_times else 0.0
    return DemoResult(
        frames_in=len(rec.sent), frames_out=len(by_stamp), latencies_ms=np.asarray(latencies),
        fps=(len(by_stamp) - 1) / span if span > 0 else 0.0,  # n frames span n - 1 intervals
        psnr_in_all=float(np.mean([psnr(f.degraded, f.clean) for f in frames])),
        psnr_in=float(np.mean([psnr(clean[s].degraded, clean[s].clean) for s in out_stamps])) if out_stamps
        else float("nan"),
        psnr_out=float(np.mean([psnr(by_stamp[s][0], clean[s].clean) for s in out_stamps])) if out_stamps
        else float("nan"),
        by_stamp=by_stamp)


def write_recording(rec: Recorder, path: Path) -> Path:
    """The received corrected images and exposure maps, raw bytes at their receive time, as one .mcap file
    (a single-file bag: rosbags, illexp_bag and MCAP tools read it without a metadata.yaml)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from illexp_ros.ros.demo.sample_data import CAMERA_QOS

    stage = path.parent / f".{path.stem}.partial-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        bag_dir = stage / path.stem
        with Writer(bag_dir, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            conns = {name: writer.add_connection(name, IMAGE_TYPE, typestore=TYPESTORE,
                                                 offered_qos_profiles=[CAMERA_QOS])
                     for name in (CORRECTED_TOPIC, MAP_TOPIC)}
            merged = sorted([(ns, CORRECTED_TOPIC, raw) for _, ns, raw in rec.corrected]
                            + [(ns, MAP_TOPIC, raw) for _, ns, raw in rec.maps], key=lambda x: x[0])
            for ns, topic, raw in merged:
                writer.write(conns[topic], ns, raw)
        os.replace(bag_dir / f"{path.stem}.mcap", path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return path


def write_sheet(result: DemoResult, frames: list[SampleFrame], path: Path) -> Path:
    clean = {f.stamp_ns: f for f in frames}
    stamps = sorted(result.by_stamp)
    chosen = [stamps[i] for i in evenly_spaced(len(stamps), SHEET_COLUMNS)]
    blank = np.zeros_like(frames[0].clean)
    rows = [
        ("before", [clean[s].degraded for s in chosen]),
        ("after", [result.by_stamp[s][0] for s in chosen]),
        ("exposure map", [colorize_map(m) if (m := result.by_stamp[s][1]) is not None else blank
                          for s in chosen]),
        ("clean", [clean[s].clean for s in chosen]),
    ]
    t0 = frames[0].stamp_ns
    titles = [f"frame {clean[s].index}  t = {(s - t0) / 1e9:.1f} s" for s in chosen]
    return render_sheet(rows, path, titles)


def summary_table(result: DemoResult, seconds: float, rate: float = 1.0) -> str:
    lat = result.latencies_ms
    p50, p99 = (np.percentile(lat, 50), np.percentile(lat, 99)) if lat.size else (float("nan"),) * 2
    rows = [
        ("frames in / out / dropped", f"{result.frames_in} / {result.frames_out} / "
                                      f"{result.frames_in - result.frames_out}"),
        ("latency p50 / p99 (ms)", f"{p50:.1f} / {p99:.1f}  (publish -> corrected frame received)"),
        ("throughput (FPS)", f"{result.fps:.1f}  (input {FPS * rate:.0f} Hz)"),
        ("PSNR input (dB)", f"{result.psnr_in:.2f}  (all {result.frames_in} frames: {result.psnr_in_all:.2f})"),
        ("PSNR output (dB)", f"{result.psnr_out:.2f}  (over the {result.frames_out} frames that came back)"),
        ("total time (s)", f"{seconds:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="illexp_demo", description="Run the sample bag through illexp_node over "
                                "DDS and report frames, latency, FPS and PSNR.")
    p.add_argument("--out", default="demo_out", help="output directory (default demo_out)")
    p.add_argument("--quick", action="store_true", help="20 frames instead of 60 (CI)")
    p.add_argument("--frames", type=int, help="number of frames (default 60, 20 with --quick)")
    p.add_argument("--model", help="node parameter `model` (default: config/illexp.yaml's)")
    p.add_argument("--backend", help="node parameter `backend`")
    p.add_argument("--mode", help="node parameter `mode`")
    p.add_argument("--rate", type=float, default=1.0,
                   help=f"playback speed factor (default 1.0 = the recorded {FPS:.0f} Hz)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    start = time.monotonic()
    with interrupted_by_signals():  # Ctrl-C and `kill` alike: "interrupted", the node stopped
        return _run_demo(args, start)


def _run_demo(args: argparse.Namespace, start: float) -> int:
    # Set before rclpy creates its participant; the node process inherits them. LARGE_DATA only where it can help:
    # localhost-only discovery cancels it (README "QoS and Fast DDS"; the node would say so in node.log).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"].upper() != "LOCALHOST":
        os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    out = Path(args.out)
    n_frames = args.frames or (20 if args.quick else 60)
    overrides = {name: value for name in ("model", "backend", "mode") if (value := getattr(args, name))}
    try:
        if n_frames < 2:
            raise DemoError(f"--frames must be >= 2, got {n_frames}")
        if not 0 < args.rate < float("inf"):
            raise DemoError(f"--rate must be a number > 0, got {args.rate}")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file in the way, no permission
            raise DemoError(f"cannot use {out} as the output folder: {exc.strerror or exc}") from exc
        bag = out / "sample_bag"
        shutil.rmtree(bag, ignore_errors=True)
        log(f"writing the sample bag ({n_frames} frames, 640x480, dark tunnel -> bright exit) to {bag}")
        frames = write_sample_bag(bag, frames=n_frames, fps=FPS)
        rec = run_pipeline(bag, frames, node_command(config_file(), overrides), out / "node.log", args.rate)
        result = analyse(rec, frames)
        if result.frames_out == 0:
            raise DemoError(f"no corrected frame of the bag came back; see {out / 'node.log'}")
        write_recording(rec, out / "corrected.mcap")
        write_sheet(result, frames, out / "sheet.png")
    except DemoError as exc:
        print(f"illexp_demo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("illexp_demo: interrupted", file=sys.stderr)
        return 130
    print(f"\nillexp_demo summary ({out}/corrected.mcap, {out}/sheet.png)")
    print(summary_table(result, time.monotonic() - start, args.rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())
