"""What a ROS 2 workspace gives users: `colcon build` of this package in a temporary workspace, the install
space it writes, and the installed `illexp_node` (not the source tree's) started from another directory with the
installed parameters file, correcting a frame over DDS and loading its models from share/illexp_ros/models."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from dds_helpers import image_msg, stop_process
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from illexp_ros.ros.node.background_spin import BackgroundSpin

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
EXECUTABLES = ("illexp_node", "illexp_lifecycle_node", "illexp_stereo_node", "illexp_stereo_lifecycle_node",
               "illexp_bag", "illexp_export", "illexp_bench", "illexp_demo")
SHIPPED_MODELS = ("mixed.pt", "mixed_fast.pt", "under.pt", "under_fast.pt", "over.pt", "over_fast.pt")
NAMESPACE = "/colcon_ns"
IN_TOPIC = "/colcon_cam/image_raw"


def source_files() -> list[str]:
    """The package as a clone of it has it: the files git tracks, and new ones it does not ignore (so a
    developer's uncommitted file counts, but no build output, virtualenv or cache does)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True, timeout=30)
        files = [f for f in out.stdout.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        pytest.fail("test_colcon_install needs a git checkout (git ls-files lists the package's files)")
    return files


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / "illexp_ros"
    for name in source_files():
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    colcon = Path(sys.executable).with_name("colcon")
    assert colcon.is_file(), f"colcon is not installed beside {sys.executable} (requirements-dev.txt has it)"
    proc = subprocess.run([str(colcon), "build", "--base-paths", "src", "--packages-select", "illexp_ros"],
                          cwd=ws, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ws


def test_install_space_has_every_file_users_need(workspace):
    prefix = workspace / "install" / "illexp_ros"
    share = prefix / "share" / "illexp_ros"
    for rel in ("package.xml", "config/illexp.yaml", "config/illexp_stereo.yaml", "models/MODEL_CARD.md"):
        assert (share / rel).is_file(), f"missing from the install space: share/illexp_ros/{rel}"
    launches = sorted(p.name for p in (ROOT / "launch").glob("*.launch.py"))
    assert launches and sorted(p.name for p in (share / "launch").glob("*.launch.py")) == launches
    for model in SHIPPED_MODELS:
        installed = share / "models" / model
        assert installed.is_file() and installed.stat().st_size == (ROOT / "models" / model).stat().st_size, model
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "illexp_ros").is_file()
    for exe in EXECUTABLES:
        path = prefix / "lib" / "illexp_ros" / exe
        assert path.is_file() and os.access(path, os.X_OK), f"missing executable lib/illexp_ros/{exe}"


def sourced_env(workspace: Path) -> dict[str, str]:
    """The environment `source install/setup.bash` gives, on top of this one minus anything that would let the
    installed node find the source tree's package or models instead of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ILLEXP_MODELS_DIR", "AMENT_PREFIX_PATH")}
    out = subprocess.run(["bash", "-c", f"source {workspace / 'install' / 'setup.bash'} && env -0"], env=env,
                         capture_output=True, check=True, timeout=60)
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


def test_installed_package_is_the_one_imported(workspace, tmp_path):
    env = sourced_env(workspace)
    out = subprocess.run([sys.executable, "-c", "import illexp_ros; print(illexp_ros.__file__)"], env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert Path(out.stdout.strip()).is_relative_to(workspace / "install"), out.stdout


def test_launch_files_import_what_they_need_from_the_install_space_alone(workspace, tmp_path):
    """`ros2 launch` runs the launch files in the ROS Python, which has none of the virtualenv's packages: what
    they import of ours (illexp_ros.launch_arguments) must come from the install space and need nothing else."""
    env = sourced_env(workspace)
    code = ("import sys, illexp_ros.launch_arguments as a; "
            "assert not any(m.split('.')[0] in ('numpy', 'torch', 'cv2', 'rclpy') for m in sys.modules), "
            "sorted(sys.modules); print(a.__file__)")
    out = subprocess.run([sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(workspace / "install"), out.stdout


class FrameCollector:
    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("colcon_test_harness", context=self.context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.pub = self.node.create_publisher(Image, IN_TOPIC, qos)
        self.frames: list[Image] = []
        self.cond = threading.Condition()
        self.node.create_subscription(Image, f"{NAMESPACE}/corrected/image", self._on_frame, qos)
        self.spin = BackgroundSpin(self.node, self.context)

    def _on_frame(self, msg: Image) -> None:
        with self.cond:
            self.frames.append(msg)
            self.cond.notify_all()


def test_installed_node_corrects_a_frame_with_its_installed_models(workspace, tmp_path):
    prefix = workspace / "install" / "illexp_ros"
    params = prefix / "share" / "illexp_ros" / "config" / "illexp.yaml"
    node = subprocess.Popen(
        [str(prefix / "lib" / "illexp_ros" / "illexp_node"), "--ros-args", "--params-file", str(params),
         "-r", f"__ns:={NAMESPACE}", "-r", f"image:={IN_TOPIC}"],
        cwd=tmp_path, env={**sourced_env(workspace), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log: list[str] = []
    reader = threading.Thread(target=lambda: log.extend(node.stdout), daemon=True)
    reader.start()
    harness = FrameCollector()
    try:
        rng = np.random.default_rng(0)
        yy = np.linspace(0, 1, 120)[:, None, None]
        dark = (np.clip(yy * 0.25 + rng.uniform(0, 0.05, (120, 160, 3)), 0, 1) * 255).astype(np.uint8)
        msg = image_msg(dark, "bgr8", 0, frame_id="colcon_cam_optical")
        # Publish until a corrected frame comes back: the node needs a few seconds to start and discover.
        deadline = time.monotonic() + 60.0
        stamp_sec = 1000
        reply = None
        while reply is None and time.monotonic() < deadline and node.poll() is None:
            stamp_sec += 1
            msg.header.stamp.sec = stamp_sec
            harness.pub.publish(msg)
            with harness.cond:
                harness.cond.wait_for(lambda: harness.frames, timeout=0.5)
                reply = harness.frames[0] if harness.frames else None
        assert reply is not None, "no corrected frame from the installed node within 60 s:\n" + "".join(log)
        assert reply.header.frame_id == "colcon_cam_optical" and 1000 < reply.header.stamp.sec <= stamp_sec
        assert (reply.height, reply.width, reply.encoding) == (120, 160, "bgr8")
        out = np.frombuffer(reply.data, np.uint8).reshape(120, 160, 3)
        assert out.mean() > dark.mean() + 5, "the dark frame came back no brighter: not corrected"
    finally:
        harness.spin.stop()
        stop_process(node, timeout=15)
        reader.join(timeout=5)
    text = "".join(log)
    share_models = prefix / "share" / "illexp_ros" / "models"
    assert f"loaded {share_models}/" in text, text
