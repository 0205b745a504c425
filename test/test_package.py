"""Package-level rules: the core does not pull in ROS, the packaging files agree with each other."""

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
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}
    assert root.find("export/build_type").text == "ament_python"


def test_console_scripts_resolve():
    import importlib
    import re

    text = (REPO / "setup.py").read_text()
    for script, module, func in re.findall(r'"(\w+) = ([\w.]+):(\w+)"', text):
        mod = importlib.import_module(module)
        assert callable(getattr(mod, func)), f"{script}: {module}.{func} missing"
