"""Replay a bag through illexp_node and record the corrected stream.

  ros2 launch illexp_ros bag_replay.launch.py bag:=drive_bag image:=/camera/image_raw out:=drive_corrected

`ros2 bag play` publishes reliable (matching the node's default qos); the recorder stores the corrected image
and camera_info topics. With use_sim_time:=true (the default) the bag's time is the ROS time of the replay:
`ros2 bag play --clock`, the node on /clock, `ros2 bag record --use-sim-time`, so the node's stamp ages and the
recorded bag's timestamps are the original recording's. Without ros2cli, `illexp_bag` (README, "Bags")
processes a bag offline instead.
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    IncludeLaunchDescription,
    OpaqueFunction,
    SetEnvironmentVariable,
    TimerAction,
)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def bag_processes(context) -> list:
    """`ros2 bag record` of the corrected topics, and `ros2 bag play` of the bag once the node is up; with
    use_sim_time, the player publishes /clock and the recorder stamps with it."""
    sim_time = LaunchConfiguration("use_sim_time").perform(context).strip().lower() in ("true", "1", "yes", "on")
    ns = LaunchConfiguration("namespace").perform(context).strip("/")
    prefix = f"/{ns}" if ns else ""
    # --topics: positional topics are deprecated since Kilted (and removed after it).
    record = ["ros2", "bag", "record", "-o", LaunchConfiguration("out"),
              "--topics", f"{prefix}/corrected/image", f"{prefix}/corrected/camera_info"]
    play = ["ros2", "bag", "play", LaunchConfiguration("bag"), "--rate", LaunchConfiguration("rate"),
            "--topics", LaunchConfiguration("image"), LaunchConfiguration("camera_info")]
    if sim_time:
        record.append("--use-sim-time")
        play.append("--clock")
    return [
        ExecuteProcess(cmd=record, output="screen"),
        # Give the node (model load) and the recorder time to start before the first frame is played.
        TimerAction(period=3.0, actions=[ExecuteProcess(cmd=play, output="screen")]),
    ]


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
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="replay on the bag's time: play --clock, the node and the recorder on it"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("illexp_ros"), "launch",
                                                                "illexp.launch.py"])),
            launch_arguments={"image": LaunchConfiguration("image"),
                              "camera_info": LaunchConfiguration("camera_info"),
                              "namespace": ns,
                              "mode": LaunchConfiguration("mode"),
                              "backend": LaunchConfiguration("backend"),
                              "use_sim_time": LaunchConfiguration("use_sim_time")}.items(),
        ),
        OpaqueFunction(function=bag_processes),
    ])
