"""`illexp_demo --quick` end to end, as CI runs `make demo`: sample bag -> illexp_node process over DDS ->
summary, corrected.mcap and sheet.png."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from dds_helpers import wait_until_ended
from rosbags.rosbag2 import Reader

from illexp_ros.core.networks import IllExpNet
from illexp_ros.ros.bags.images import serialized_stamp_ns
from illexp_ros.ros.demo.demo import CORRECTED_TOPIC, MAP_TOPIC
from illexp_ros.runtime.model_io import models_dirs, save_model

pytestmark = pytest.mark.integration


def shipped_models_present() -> bool:
    return any(all((d / f"{n}.pt").is_file() for n in ("under", "over", "mixed")) for d in models_dirs())


@pytest.mark.timeout(240)
def test_quick_demo_runs_end_to_end(tmp_path: Path) -> None:
    args = []
    if not shipped_models_present():  # before training has shipped models/: a small random network
        model = save_model(tmp_path / "tiny.pt", IllExpNet(attention_width=8, widths=(8, 16, 32, 64)),
                           {"attention_width": 8, "widths": [8, 16, 32, 64]}, "tiny")
        args = ["--model", str(model)]
    out = tmp_path / "demo_out"
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.demo.demo", "--quick", "--out", str(out), *args],
                            capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stdout + result.stderr

    counts = re.search(r"frames in / out / dropped\s+(\d+) / (\d+) / (\d+)", result.stdout)
    assert counts, result.stdout
    frames_in, frames_out, dropped = map(int, counts.groups())
    assert frames_in == 20 and 1 <= frames_out <= 20 and dropped == frames_in - frames_out
    for label in ("latency p50 / p99 (ms)", "throughput (FPS)", "PSNR input (dB)", "PSNR output (dB)"):
        assert re.search(re.escape(label) + r"\s+\d+\.\d", result.stdout), label
    fps = float(re.search(r"throughput \(FPS\)\s+(\d+\.\d)", result.stdout).group(1))
    assert fps <= 15.0  # never above the 15 Hz it was fed (n frames over n intervals read 15.3)

    with Reader(out / "corrected.mcap") as reader:
        counts_by_topic = {c.topic: c.msgcount for c in reader.connections}
    assert counts_by_topic[CORRECTED_TOPIC] >= frames_out
    assert counts_by_topic[MAP_TOPIC] >= 1
    sheet = cv2.imread(str(out / "sheet.png"))
    assert sheet is not None and sheet.shape[0] > 400 and sheet.shape[1] > 1000


@pytest.mark.parametrize(("extra", "expected"), [
    (["--rate", "nan"], "illexp_demo: error: --rate must be a number > 0, got nan"),
    (["--out", "FILE"], "illexp_demo: error: cannot use FILE as the output folder: File exists"),
])
def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, extra, expected) -> None:
    from illexp_ros.ros.demo.demo import main

    in_the_way = tmp_path / "a_file"
    in_the_way.write_text("")
    extra = [str(in_the_way) if a == "FILE" else a for a in extra]
    args = ["--out", str(tmp_path / "out")] if "--out" not in extra else []
    assert main([*args, *extra]) == 2
    assert capsys.readouterr().err.strip() == expected.replace("FILE", str(in_the_way))


@pytest.mark.timeout(240)
def test_a_node_that_dies_during_the_replay_is_an_error_not_dropped_frames(tmp_path: Path) -> None:
    """The node process killed after the third frame of the replay: the demo says so and exits 2 (it counted the
    rest as dropped and exited 0)."""
    result = run_demo_with(tmp_path, """
        if len(sent) == 3:
            node.kill()
            node.wait()""")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("illexp_demo: error: illexp_node exited with status -9")


def run_demo_with(tmp_path: Path, on_frame: str) -> subprocess.CompletedProcess:
    """`illexp_demo --quick` (passthrough) in its own process, with `on_frame` (Python, indented 8 spaces) run after
    each replayed frame is published; it sees `node` (the node's Popen) and `sent` (the frames so far)."""
    script = f"""
import os, signal, subprocess, sys
import illexp_ros.ros.demo.demo as demo
started, real_popen, real_play = [], subprocess.Popen, demo.play_messages
def popen(*args, **kwargs):
    started.append(real_popen(*args, **kwargs))
    return started[-1]
def play(bag, topic, publish, rate, on_publish):
    sent = []
    def on(timestamp, data):
        on_publish(timestamp, data)
        sent.append(timestamp)
        node = started[0]{on_frame}
    return real_play(bag, topic, publish, rate=rate, on_publish=on)
demo.subprocess.Popen, demo.play_messages = popen, play
sys.exit(demo.main(["--quick", "--out", {str(tmp_path / "out")!r}, "--backend", "passthrough"]))
"""
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=200)


def test_two_demos_on_one_domain_run_apart(tmp_path: Path) -> None:
    """Two demos at once on one ROS domain: each gets back exactly its own frames (with shared topics each
    recorded the other's too: 99 corrected frames for 40 sent)."""
    procs = [subprocess.Popen([sys.executable, "-m", "illexp_ros.ros.demo.demo", "--quick", "--backend", "passthrough",
                               "--out", str(tmp_path / f"out{i}")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=200)
        assert proc.returncode == 0, out + err
        counts = re.search(r"frames in / out / dropped\s+(\d+) / (\d+) / (\d+)", out)
        assert counts and int(counts.group(2)) <= int(counts.group(1)) == 20, out
    for i in range(2):
        with Reader(tmp_path / f"out{i}" / "corrected.mcap") as reader:
            stamps = [serialized_stamp_ns(bytes(data)) for c, _, data in reader.messages()
                      if c.topic == CORRECTED_TOPIC]
        assert len(stamps) == len(set(stamps)) <= 20  # no header stamp twice: none of the other demo's frames


def test_the_node_ends_with_a_demo_killed_outright(tmp_path: Path) -> None:
    """SIGKILL (the OOM killer, a CI timeout) runs none of the demo's clean-up: the node it started used to run on,
    orphaned, on the domain; now the kernel ends it with its parent."""
    result = run_demo_with(tmp_path, """
        print(node.pid, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)""")
    assert result.returncode == -9, result.stdout + result.stderr
    node = int(result.stdout.split()[-1])
    ended = wait_until_ended(node, 20.0)
    if not ended:
        os.kill(node, signal.SIGKILL)  # leave no orphan to the tests that follow
    assert ended, "the demo's node outlived the demo by 20 s"


def test_the_benchmark_node_ends_with_a_benchmark_killed_outright() -> None:
    """`illexp_bench --node` / `--soak` start their node with start_logged: it must not outlive them either."""
    script = """
import os, signal, sys
from illexp_ros.ros.demo.node_bench import start_logged
proc = start_logged([sys.executable, "-c", "import time; time.sleep(120)"], dict(os.environ))
print(proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == -9, result.stdout + result.stderr
    child = int(result.stdout.split()[-1])
    ended = wait_until_ended(child, 20.0)
    if not ended:
        os.kill(child, signal.SIGKILL)
    assert ended, "the benchmark's node outlived it by 20 s"
