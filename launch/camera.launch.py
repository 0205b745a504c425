"""A USB camera chained into illexp_node: v4l2_camera (default) or usb_cam publishes /camera/image_raw and
/camera/camera_info; the corrected stream comes out on /camera/corrected/image.

  ros2 launch illexp_ros camera.launch.py video_device:=/dev/video0
  ros2 launch illexp_ros camera.launch.py driver:=usb_cam mode:=auto

Needs the driver package (apt install ros-kilted-v4l2-camera or ros-kilted-usb-cam). Both publish reliable by
default, which matches the node's default `qos: reliable`.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.conditions import LaunchConfigurationEquals
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    device = LaunchConfiguration("video_device")
    return LaunchDescription([
        DeclareLaunchArgument("driver", default_value="v4l2_camera", choices=["v4l2_camera", "usb_cam"],
                              description="camera driver package"),
        DeclareLaunchArgument("video_device", default_value="/dev/video0"),
        DeclareLaunchArgument("mode", default_value="", description="under | over | mixed | auto"),
        DeclareLaunchArgument("backend", default_value="", description="inference backend (empty: params file)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("illexp_ros"), "config",
                                                                  "illexp.yaml"])),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        Node(
            package="v4l2_camera", executable="v4l2_camera_node", name="camera", namespace="camera",
            condition=LaunchConfigurationEquals("driver", "v4l2_camera"),
            parameters=[{"video_device": device, "image_size": [640, 480], "use_sensor_data_qos": False}],
            output="screen",
        ),
        Node(
            package="usb_cam", executable="usb_cam_node_exe", name="camera", namespace="camera",
            condition=LaunchConfigurationEquals("driver", "usb_cam"),
            parameters=[{"video_device": device, "image_width": 640, "image_height": 480,
                         "pixel_format": "yuyv2rgb", "framerate": 30.0}],
            output="screen",
        ),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("illexp_ros"), "launch",
                                                                "illexp.launch.py"])),
            launch_arguments={
                "image": "/camera/image_raw",
                "camera_info": "/camera/camera_info",
                "namespace": "camera",
                "params_file": LaunchConfiguration("params_file"),
                "mode": LaunchConfiguration("mode"),
                "backend": LaunchConfiguration("backend"),
            }.items(),
        ),
    ])
