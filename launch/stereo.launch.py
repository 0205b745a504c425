"""Launch illexp_stereo_node on a stereo camera's two streams (both views corrected together, at one level).

  ros2 launch illexp_ros stereo.launch.py left_image:=/stereo/left/image_raw right_image:=/stereo/right/image_raw \
      left_camera_info:=/stereo/left/camera_info right_camera_info:=/stereo/right/camera_info

The corrected views come out on <namespace>/left/corrected/image and <namespace>/right/corrected/image (and
their camera_info), for stereo_image_proc or a stereo VO front end. Arguments left empty keep the value from
params_file (config/illexp_stereo.yaml by default). sync_tolerance_s:=0.015 pairs frames of two free-running
cameras whose stamps differ (0: identical stamps only, as hardware-synchronised drivers give). lifecycle:=true
starts the managed form (illexp_stereo_lifecycle_node), configured and activated at launch unless autostart:=false,
as illexp.launch.py does. FASTDDS_BUILTIN_TRANSPORTS defaults to LARGE_DATA for the node, as in illexp.launch.py.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import EnvironmentVariable, LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from illexp_ros.launch_actions import autostarted, node_parameters
from illexp_ros.launch_arguments import flag

# Launch argument -> node parameter of the same name, with its type; empty argument = keep the params file.
PARAMETER_ARGUMENTS = {"model": str, "mode": str, "backend": str, "fast": bool, "qos": str,
                       "strength": float, "level_smoothing": float, "exposure_compensation": float,
                       "sync_tolerance_s": float}
TOPIC_ARGUMENTS = {"left_image": "left/image", "right_image": "right/image",
                   "left_camera_info": "left/camera_info", "right_camera_info": "right/camera_info"}


def launch_node(context):
    parameters = node_parameters(context, PARAMETER_ARGUMENTS)
    remappings = [(topic, LaunchConfiguration(argument)) for argument, topic in TOPIC_ARGUMENTS.items()]
    if not flag("lifecycle", LaunchConfiguration("lifecycle").perform(context)):
        return [Node(package="illexp_ros", executable="illexp_stereo_node", name="illexp_stereo_node",
                     namespace=LaunchConfiguration("namespace"), parameters=parameters, remappings=remappings,
                     output="screen", emulate_tty=True)]
    node = LifecycleNode(package="illexp_ros", executable="illexp_stereo_lifecycle_node", name="illexp_stereo_node",
                         namespace=LaunchConfiguration("namespace"), parameters=parameters, remappings=remappings,
                         output="screen", emulate_tty=True)
    return autostarted(node, context)  # configured and activated at launch unless autostart:=false


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("left_image", default_value="/stereo/left/image_raw",
                              description="left view, sensor_msgs/Image (its /compressed for compressed input)"),
        DeclareLaunchArgument("right_image", default_value="/stereo/right/image_raw",
                              description="right view, sensor_msgs/Image"),
        DeclareLaunchArgument("left_camera_info", default_value="/stereo/left/camera_info",
                              description="republished unchanged on left/corrected/camera_info"),
        DeclareLaunchArgument("right_camera_info", default_value="/stereo/right/camera_info",
                              description="republished unchanged on right/corrected/camera_info"),
        DeclareLaunchArgument("namespace", default_value="stereo",
                              description="namespace of the node and of its left/ and right/ outputs"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("illexp_ros"), "config",
                                                                  "illexp_stereo.yaml"]),
                              description="ROS 2 parameters file"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: the managed node illexp_stereo_lifecycle_node instead"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle:=true, configure and activate it at launch"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: the node's clock is /clock; empty keeps the params file's value"),
        DeclareLaunchArgument("model", default_value="", description="default | under | over | mixed | a path"),
        DeclareLaunchArgument("mode", default_value="",
                              description="under | over | mixed | auto (auto: both views on the left's route)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | tensorrt | torch_cuda | onnxruntime | torch_cpu | passthrough"),
        DeclareLaunchArgument("fast", default_value="", description="true | false"),
        DeclareLaunchArgument("qos", default_value="", description="reliable | sensor_data"),
        DeclareLaunchArgument("strength", default_value="", description="0.0 .. 1.0"),
        DeclareLaunchArgument("level_smoothing", default_value="", description="0.0 (off) .. 0.99"),
        DeclareLaunchArgument("exposure_compensation", default_value="", description="-3.0 .. 3.0 stops"),
        DeclareLaunchArgument("sync_tolerance_s", default_value="",
                              description="0.0 (identical stamps) .. 1.0 s between a pair's stamps"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        OpaqueFunction(function=launch_node),
    ])
