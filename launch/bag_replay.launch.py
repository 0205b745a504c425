"""Replay a bag through illexp_node and record the corrected stream.

  ros2 launch illexp_ros bag_replay.launch.py bag:=drive_bag image:=/camera/image_raw out:=drive_corrected

`ros2 bag play` publishes reliable (matching the node's default qos); the recorder stores the corrected image
and camera_info topics. Without ros2cli, `illexp_bag` (README, "Bags") processes a bag offline instead.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    SetEnvironmentVariable,
    TimerAction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    ns = LaunchConfiguration("namespace")
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="bag to play (directory or .mcap / .db3)"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="image topic in the bag"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info"),
        DeclareLaunchArgument("namespace", default_value="illexp",
                              description="the corrected topics are /<namespace>/corrected/*"),
        DeclareLaunchArgument("out", default_value="corrected_bag", description="output bag directory"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("mode", default_value="", description="under | over | mixed | auto"),
        DeclareLaunchArgument("backend", default_value=""),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("illexp_ros"), "launch",
                                                                "illexp.launch.py"])),
            launch_arguments={"image": LaunchConfiguration("image"),
                              "camera_info": LaunchConfiguration("camera_info"),
                              "namespace": ns,
                              "mode": LaunchConfiguration("mode"),
                              "backend": LaunchConfiguration("backend")}.items(),
        ),
        ExecuteProcess(
            cmd=["ros2", "bag", "record", "-o", LaunchConfiguration("out"),
                 ["/", ns, "/corrected/image"], ["/", ns, "/corrected/camera_info"]],
            output="screen",
        ),
        # Give the node (model load) and the recorder time to start before the first frame is played.
        TimerAction(period=3.0, actions=[ExecuteProcess(
            cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
                 "--topics", LaunchConfiguration("image"), LaunchConfiguration("camera_info")],
            output="screen",
        )]),
    ])
