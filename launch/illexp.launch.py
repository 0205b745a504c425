"""Launch illexp_node on one camera stream.

  ros2 launch illexp_ros illexp.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info

Arguments left empty (model, mode, backend, fast, qos, strength, level_smoothing, exposure_compensation,
use_sim_time) keep the value from params_file (config/illexp.yaml by default). lifecycle:=true starts the managed
node (illexp_lifecycle_node) instead, configured and activated at launch unless autostart:=false (then a lifecycle
manager or `ros2 lifecycle set` does it). use_sim_time:=true runs the node on /clock (bag replay with
`ros2 bag play --clock`: its stamp ages and diagnostics then follow the bag's time). FASTDDS_BUILTIN_TRANSPORTS
defaults to LARGE_DATA for the node: with Fast DDS's default transports large frames are slow (reliable) or
mostly lost (best effort); see the README, "QoS and Fast DDS".
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
                       "strength": float, "level_smoothing": float, "exposure_compensation": float}


def launch_node(context):
    parameters = node_parameters(context, PARAMETER_ARGUMENTS)
    remappings = [("image", LaunchConfiguration("image")), ("camera_info", LaunchConfiguration("camera_info"))]
    if not flag("lifecycle", LaunchConfiguration("lifecycle").perform(context)):
        return [Node(package="illexp_ros", executable="illexp_node", name="illexp_node",
                     namespace=LaunchConfiguration("namespace"), parameters=parameters, remappings=remappings,
                     output="screen", emulate_tty=True)]
    node = LifecycleNode(package="illexp_ros", executable="illexp_lifecycle_node", name="illexp_node",
                         namespace=LaunchConfiguration("namespace"), parameters=parameters, remappings=remappings,
                         output="screen", emulate_tty=True)
    return autostarted(node, context)  # configured and activated at launch unless autostart:=false


def generate_launch_description() -> LaunchDescription:
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="input sensor_msgs/Image topic (its /compressed for compressed input)"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="CameraInfo republished unchanged on corrected/camera_info"),
        DeclareLaunchArgument("namespace", default_value="",
                              description="namespace of the node and of its corrected/* topics"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("illexp_ros"), "config",
                                                                  "illexp.yaml"]),
                              description="ROS 2 parameters file"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: the managed node illexp_lifecycle_node instead of illexp_node"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle:=true, configure and activate it at launch"),
        DeclareLaunchArgument("use_sim_time", default_value="",
                              description="true: the node's clock is /clock (bag replay with --clock); "
                                          "empty keeps the params file's value (false if unset)"),
        DeclareLaunchArgument("model", default_value="", description="default | under | over | mixed | a path"),
        DeclareLaunchArgument("mode", default_value="", description="under | over | mixed | auto"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | tensorrt | torch_cuda | onnxruntime | torch_cpu | passthrough"),
        DeclareLaunchArgument("fast", default_value="", description="true | false"),
        DeclareLaunchArgument("qos", default_value="", description="reliable | sensor_data"),
        DeclareLaunchArgument("strength", default_value="",
                              description="0.0 (input unchanged) .. 1.0 (the full correction)"),
        DeclareLaunchArgument("level_smoothing", default_value="",
                              description="0.0 (off) .. 0.99: steady brightness across frames"),
        DeclareLaunchArgument("exposure_compensation", default_value="",
                              description="-3.0 .. 3.0 stops: brighter (+) or darker (-) than corrected"),
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS",
                               EnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", default_value="LARGE_DATA")),
        OpaqueFunction(function=launch_node),
    ])
