"""`illexp_demo --quick` end to end, as CI runs `make demo`: sample bag -> illexp_node process over DDS ->
summary, corrected.mcap and sheet.png."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from rosbags.rosbag2 import Reader

from illexp_ros.core.networks import IllExpNet
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

    with Reader(out / "corrected.mcap") as reader:
        counts_by_topic = {c.topic: c.msgcount for c in reader.connections}
    assert counts_by_topic[CORRECTED_TOPIC] >= frames_out
    assert counts_by_topic[MAP_TOPIC] >= 1
    sheet = cv2.imread(str(out / "sheet.png"))
    assert sheet is not None and sheet.shape[0] > 400 and sheet.shape[1] > 1000
