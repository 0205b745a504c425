"""Package-level rules: the core does not pull in ROS, the packaging files agree with each other."""

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_core_does_not_import_rclpy():
    code = "import sys, illexp_ros.core; assert 'rclpy' not in sys.modules, 'rclpy imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_package_xml():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "illexp_ros"
    deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "python3-numpy", "python3-opencv", "python3-yaml"} <= deps
    # what the launch files import, so that rosdep brings in what `ros2 launch` needs
    launch_imports = set()
    # the launch files and what they import of ours at launch time (its imports of launch are inside functions)
    for launch_file in [*(REPO / "launch").glob("*.launch.py"), REPO / "illexp_ros" / "launch_actions.py"]:
        for node in ast.walk(ast.parse(launch_file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                launch_imports.add(node.module.split(".")[0])
            elif isinstance(node, ast.Import):
                launch_imports.update(alias.name.split(".")[0] for alias in node.names)
    ros_packages = launch_imports - set(sys.stdlib_module_names) - {"illexp_ros"}  # this package itself
    assert ros_packages == {"launch", "launch_ros", "lifecycle_msgs"}  # a new one: declare it below too
    assert ros_packages | {"ros2launch"} <= deps
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}
    assert root.find("export/build_type").text == "ament_python"


def test_console_scripts_resolve():
    import importlib
    import re

    text = (REPO / "setup.py").read_text()
    for script, module, func in re.findall(r'"(\w+) = ([\w.]+):(\w+)"', text):
        mod = importlib.import_module(module)
        assert callable(getattr(mod, func)), f"{script}: {module}.{func} missing"


def test_node_help_lists_the_parameters_and_starts_no_node():
    """`illexp_node --help` ignored the flag and started a node (it ran until stopped); now it prints the usage,
    the topics and every parameter with its default, and exits 0."""
    from illexp_ros.ros.node.console_scripts import wants_help
    from illexp_ros.ros.node.parameters import PARAMETERS, STEREO_PARAMETERS

    for program in ("illexp_node", "illexp_lifecycle_node", "illexp_stereo_node", "illexp_stereo_lifecycle_node"):
        script = (f"import sys; sys.argv = ['{program}', '--help']; "
                  f"from illexp_ros.ros.node.console_scripts import {program}; sys.exit({program}())")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith(f"usage: {program} "), result.stderr
        specs = STEREO_PARAMETERS if "stereo" in program else PARAMETERS
        assert all(f"  {name} (" in result.stdout for name in specs)
        assert "enhancer ready" not in result.stdout + result.stderr
        assert "rclpy" not in result.stderr
    assert wants_help(["illexp_node", "-h"]) and not wants_help(["illexp_node", "--ros-args", "-p", "--help"])
    # as the demo and the benchmarks start the node: python -m, through run_node
    for module in ("illexp_node", "illexp_lifecycle_node"):
        result = subprocess.run([sys.executable, "-m", f"illexp_ros.ros.node.{module}", "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.startswith(f"usage: {module} "), result.stderr


def test_a_params_file_that_is_a_pipe_is_not_called_missing(tmp_path):
    """`--params-file <(envsubst < params.yaml)` is a pipe, which rcl reads; only a path to nothing is missing."""
    import os

    from illexp_ros.ros.node.illexp_node import params_file_problems

    os.mkfifo(tmp_path / "fifo")
    argv = ["illexp_node", "--ros-args", "--params-file", str(tmp_path / "fifo"), "--params-file",
            str(tmp_path / "nope.yaml"), "--params-file", str(tmp_path)]
    assert params_file_problems(argv) == [f"params file not found: {tmp_path / 'nope.yaml'}",
                                          f"params file {tmp_path} is a folder"]
    assert params_file_problems(["illexp_node", "--params-file", "nope.yaml"]) == []  # not a ROS argument
