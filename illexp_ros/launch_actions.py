"""What the node launch files (launch/illexp.launch.py, launch/stereo.launch.py) share: the node's parameters from
the launch arguments, and configure-then-activate at launch for the managed node.

`launch`, `launch_ros` and `lifecycle_msgs` are imported inside the functions: this module is imported by the launch
files under `ros2 launch`, where they are installed, and read by the tests here, where they are not (its syntax tree
is checked in test/test_launch_files.py; its argument typing, launch_arguments.py, is run there)."""

from __future__ import annotations

from typing import Any

from illexp_ros.launch_arguments import flag, parameter_overrides, typed


def node_parameters(context: Any, kinds: dict[str, type]) -> list:
    """The node's `parameters`: the params_file argument, then each non-empty launch argument named in `kinds`
    typed as the node declares it, then use_sim_time if given (empty: whatever the params file says; a later
    entry here would override it)."""
    from launch.substitutions import LaunchConfiguration

    arguments = {name: LaunchConfiguration(name).perform(context) for name in kinds}
    parameters = [LaunchConfiguration("params_file"), parameter_overrides(arguments, kinds)]
    sim_time = LaunchConfiguration("use_sim_time").perform(context).strip()
    if sim_time:
        parameters.append({"use_sim_time": typed(sim_time, bool)})
    return parameters


def autostarted(node: Any, context: Any) -> list:
    """A launch_ros LifecycleNode and, unless the autostart argument is false, the events that configure it at
    launch and activate it once configured. Only after *configuring*: a later deactivate (by hand or a lifecycle
    manager) also ends in inactive and must stay there."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch.substitutions import LaunchConfiguration
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    if not flag("autostart", LaunchConfiguration("autostart").perform(context)):
        return [node]
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                            transition_id=Transition.TRANSITION_CONFIGURE))
    return [node, activate, configure]
