"""ament_python package definition: `colcon build` installs the library, the console scripts (under
lib/illexp_ros so `ros2 run` finds them) and launch/, config/, models/ under share/illexp_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "illexp_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/models", glob("models/*.pt") + glob("models/*.md")),
    ],
    package_data={PACKAGE: ["data/*.png", "data/*.md"]},
    include_package_data=True,
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="illexp_ros maintainers",
    maintainer_email="illexp-ros@example.org",
    description="Live ill-exposure correction for ROS 2 camera streams.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "illexp_node = illexp_ros.ros.node.console_scripts:illexp_node",
            "illexp_lifecycle_node = illexp_ros.ros.node.console_scripts:illexp_lifecycle_node",
            "illexp_stereo_node = illexp_ros.ros.node.console_scripts:illexp_stereo_node",
            "illexp_stereo_lifecycle_node = illexp_ros.ros.node.console_scripts:illexp_stereo_lifecycle_node",
            "illexp_bag = illexp_ros.ros.bags.tool:main",
            "illexp_export = illexp_ros.runtime.export:main",
            "illexp_bench = illexp_ros.bench_cli:main",
            "illexp_demo = illexp_ros.ros.demo.demo:main",
        ],
    },
)
