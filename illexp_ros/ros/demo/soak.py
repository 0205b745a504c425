"""`illexp_bench --node --soak SECONDS`: a long run of illexp_node at a camera's pace, for leaks and drift.

The node runs in its own process with config/illexp.yaml (as deployed); this process publishes 640x480 bgr8
frames at 30 Hz (a real photograph, under-exposed, a new stamp each) and receives the corrected frames. Once a
minute (--report-every) it prints a numbered line: the node's resident memory (RSS, from /proc), the
publish -> corrected-receive latency p50 / p99 of that period, and the node's counters from /diagnostics. At
the end: the RSS growth from the second period to the last, the latency over the whole run, and whether every
frame is accounted for: each frame sent either reached the node (and was published, dropped, rejected or
failed there) or was lost in transport before it.

  illexp_bench --node --soak 1800 [--rate 30] [--size 640x480] [--transport LARGE_DATA]
"""

from __future__ import annotations

import argparse
import array
import os
import subprocess
import sys
import threading
import time

import numpy as np

from illexp_ros.ros.demo.node_bench import (
    START_TIMEOUT_S,
    node_config,
    node_output,
    parse_sizes,
    start_logged,
)
from illexp_ros.ros.interruption import interrupted_by_signals

COUNTERS = ("received", "published", "dropped", "dropped_in_transport", "rejected", "failed")
REPORT_PERIOD_S = 60.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="illexp_bench --node --soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--soak", type=float, required=True, metavar="SECONDS", help="how long to stream")
    p.add_argument("--rate", type=float, default=30.0, help="frames per second published (default 30)")
    p.add_argument("--size", type=parse_sizes, default=parse_sizes("640x480"), help="WIDTHxHEIGHT")
    p.add_argument("--backend", default="", help="node `backend` (empty: config/illexp.yaml)")
    p.add_argument("--transport", choices=("LARGE_DATA", "DEFAULT"), default="LARGE_DATA",
                   help="FASTDDS_BUILTIN_TRANSPORTS for both processes")
    p.add_argument("--report-every", type=float, default=REPORT_PERIOD_S, help="seconds between report lines")
    args = p.parse_args(argv)
    if args.soak <= 0 or args.rate <= 0 or args.report_every <= 0:
        p.error("--soak, --rate and --report-every must be > 0")
    args.size = args.size[0]
    return args


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def frame(width: int, height: int) -> np.ndarray:
    import cv2
    from skimage import data as skdata

    from illexp_ros.core import degrade

    rgb = cv2.resize(skdata.coffee(), (width, height), interpolation=cv2.INTER_AREA)
    dark = (degrade(rgb / 255.0, alpha=0.95, beta=0.5, gamma=1.5) * 255.0 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(dark[..., ::-1])


class SoakClient:
    def __init__(self) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from illexp_ros.ros.node.background_spin import BackgroundSpin
        from illexp_ros.ros.node.qos import image_qos

        self.Image = Image
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("illexp_soak", context=self.context)
        self.pub = self.node.create_publisher(Image, "/soak/image_raw", image_qos("reliable"))
        deep = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(Image, "/soak/corrected/image", self._on_frame, deep)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, deep)
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}
        self.latencies: list[tuple[float, float]] = []  # (arrival time, latency s)
        self.returned = 0
        self.diag: dict[str, str] = {}
        self.spin = BackgroundSpin(self.node, self.context)

    def _on_frame(self, msg) -> None:
        now = time.perf_counter()
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        with self.lock:
            sent = self.sent.pop(stamp, None)
            self.returned += 1
            if sent is not None:
                self.latencies.append((now, now - sent))

    def _on_diag(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("/soak/"):
                with self.lock:
                    self.diag = {kv.key: kv.value for kv in status.values}

    def publish(self, pixels: np.ndarray, stamp: int) -> None:
        msg = self.Image(height=pixels.shape[0], width=pixels.shape[1], encoding="bgr8", step=pixels.shape[1] * 3)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        msg.header.frame_id = "soak"
        msg.data = array.array("B", pixels.tobytes())
        with self.lock:
            self.sent[stamp] = time.perf_counter()
        self.pub.publish(msg)

    def close(self) -> None:
        self.spin.stop()


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    a = np.array(values) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def run(args: argparse.Namespace) -> int:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.transport == "LARGE_DATA":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    else:
        env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    os.environ.clear()
    os.environ.update(env)
    cmd = [sys.executable, "-m", "illexp_ros.ros.node.illexp_node", "--ros-args", "--params-file",
           str(node_config()), "-r", "__ns:=/soak", "-r", "image:=/soak/image_raw", "--log-level", "warn"]
    if args.backend:
        cmd += ["-p", f"backend:={args.backend}"]
    proc = start_logged(cmd, env)
    client = SoakClient()
    pixels = frame(*args.size)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while client.returned == 0:  # discovery and warm-up, not part of the soak
            if time.monotonic() > deadline or proc.poll() is not None:
                print(f"illexp_bench --node --soak: the node did not answer:\n{node_output(proc)[-2000:]}",
                      file=sys.stderr)
                return 2
            client.publish(pixels, time.time_ns())
            time.sleep(0.1)
        time.sleep(1.0)
        with client.lock:  # the soak starts from here: earlier frames and their counts are set aside
            client.sent.clear()
            client.latencies.clear()
            base = {k: int(client.diag.get(k, 0)) for k in COUNTERS}
        print(f"soak: {args.size[0]}x{args.size[1]} bgr8 at {args.rate:g} Hz for {args.soak:g} s, transport "
              f"{args.transport}, node pid {proc.pid}, {os.cpu_count()} CPUs")
        print(f"{'#':>4}{'node RSS MB':>12}{'p50 ms':>8}{'p99 ms':>8}{'sent':>8}{'back':>8}{'published':>10}"
              f"{'dropped':>9}{'in transport':>13}{'rejected':>9}{'failed':>7}")
        period = 1.0 / args.rate
        t0 = next_frame = next_report = time.monotonic()
        next_report += args.report_every
        sent = 0
        rows = []
        start_returned = client.returned
        while time.monotonic() - t0 < args.soak and proc.poll() is None:
            client.publish(pixels, time.time_ns())
            sent += 1
            now = time.monotonic()
            if now >= next_report:
                next_report += args.report_every
                with client.lock:
                    window = [lat for t, lat in client.latencies]
                    client.latencies.clear()
                    counts = {k: int(client.diag.get(k, 0)) - base[k] for k in COUNTERS}
                    back = client.returned - start_returned
                p50, p99 = percentiles(window)
                rows.append({"minute": len(rows) + 1, "rss_mb": rss_mb(proc.pid), "p50": p50, "p99": p99,
                             "latencies": window})
                print(f"{len(rows):>4}{rows[-1]['rss_mb']:>12.1f}{p50:>8.1f}{p99:>8.1f}{sent:>8}{back:>8}"
                      f"{counts['published']:>10}{counts['dropped'] - counts['dropped_in_transport']:>9}"
                      f"{counts['dropped_in_transport']:>13}{counts['rejected']:>9}{counts['failed']:>7}",
                      flush=True)
            next_frame += period
            time.sleep(max(0.0, next_frame - time.monotonic()))
        if proc.poll() is not None:
            print(f"illexp_bench --node --soak: the node exited:\n{node_output(proc)[-2000:]}", file=sys.stderr)
            return 2
        time.sleep(3.0)  # the last frames and two diagnostics periods
        with client.lock:
            counts = {k: int(client.diag.get(k, 0)) - base[k] for k in COUNTERS}
            back = client.returned - start_returned
            last = [lat for t, lat in client.latencies]  # after the last report: part of the run's latency too
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(2)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    local_dropped = counts["dropped"] - counts["dropped_in_transport"]
    accounted_node = counts["received"] == counts["published"] + local_dropped + counts["rejected"] + counts["failed"]
    lost_before = sent - counts["received"] - counts["dropped_in_transport"]
    every = [lat for r in rows for lat in r["latencies"]] + last
    p50, p99 = percentiles(every)
    print(f"\nsummary: {sent} frames sent, {counts['received']} reached the node, {counts['published']} published, "
          f"{local_dropped} dropped in the node, {counts['dropped_in_transport']} lost in transport (counted by "
          f"the node), {counts['rejected']} rejected, {counts['failed']} failed, {back} corrected frames received")
    print(f"latency over the run: p50 {p50:.1f} ms, p99 {p99:.1f} ms (p99 / p50 = {p99 / p50:.2f})")
    if len(rows) >= 3:  # the growth from the second report (the first holds the start-up) to a later one
        print(f"node RSS: report 2 {rows[1]['rss_mb']:.1f} MB, last {rows[-1]['rss_mb']:.1f} MB, "
              f"growth {rows[-1]['rss_mb'] - rows[1]['rss_mb']:+.1f} MB")
    elif rows:
        print(f"node RSS: last {rows[-1]['rss_mb']:.1f} MB ({len(rows)} report(s): a growth needs three; run "
              "longer)")
    else:
        print("node RSS: no report (the run was shorter than one period)")
    print(f"every frame that reached the node accounted for: {'yes' if accounted_node else 'NO'}; "
          f"sent but neither received nor counted as lost in transport: {lost_before}")
    return 0 if accounted_node else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with interrupted_by_signals():  # `kill` as Ctrl-C: run's finally stops the node
            return run(args)
    except KeyboardInterrupt:  # the node was stopped in run's finally
        print("illexp_bench --node --soak: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
