"""`illexp_lifecycle_node`: `illexp_node` as a managed (lifecycle) node, for systems whose lifecycle manager
brings nodes up in order (nav2's lifecycle_manager, a launch file's state-change events) or switches a camera's
correction off without stopping the process.

Same parameters, topics and behaviour as `illexp_node`; what happens at each transition:

    configure   read and check the parameters, load the model(s), create the publishers (managed: they
                send nothing until activated). A missing or corrupt model, an unavailable backend or an
                invalid value fails the transition with one logged line; the node stays unconfigured and can
                be configured again (parameters may be changed in between).
    activate    subscribe to the input (and camera_info), start the worker and the diagnostics: frames flow.
    deactivate  unsubscribe and stop the worker (a frame waiting for it is dropped and counted); the
                models stay loaded, so activating again is immediate.
    cleanup     release the models and publishers: back to unconfigured.
    shutdown    whatever of the above is needed, from any state.

Run:  illexp_lifecycle_node --ros-args --params-file config/illexp.yaml -r image:=/camera/image_raw
      ros2 lifecycle set /illexp_node configure && ros2 lifecycle set /illexp_node activate
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable

from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions

from illexp_ros.ros.node.illexp_node import (
    JOIN_TIMEOUT_S,
    NODE_NAME,
    ExposureCorrectionMixin,
    StartupError,
    run_node,
)
from illexp_ros.ros.node.qos import QOS_OVERRIDES
from illexp_ros.runtime import EnhancerError


def logs_exceptions(transition: Callable) -> Callable:
    """rclpy turns an exception in a transition callback into on_error without saying what it was: say it."""
    @functools.wraps(transition)
    def logged(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return transition(self, state)
        except Exception as exc:
            self.get_logger().error(f"{transition.__name__} raised {type(exc).__name__}: {exc}")
            raise
    return logged


class IllExpLifecycleNode(ExposureCorrectionMixin, LifecycleNode):
    """The lifecycle form of IllExpNode (module docstring: what each transition does)."""

    NAME = NODE_NAME

    def __init__(self, **node_kwargs) -> None:
        super().__init__(self.NAME, **node_kwargs)
        self._declare_parameters()
        self._params: dict | None = None  # the values in force since configure; None while unconfigured
        self._active = False
        # Values set while unconfigured are checked too (configure installs the callback that applies them): an
        # invalid one is refused with its reason now, not found by the next configure.
        self.add_on_set_parameters_callback(self._refuse_invalid_values)
        try:  # say it now, not only when a lifecycle manager configures the node minutes later
            self._validated_parameters()
        except StartupError as exc:
            self.get_logger().error(f"{exc}: configure will fail unless it is changed first")
        self.get_logger().info(f"unconfigured: waiting for configure (ros2 lifecycle set "
                               f"{self.get_fully_qualified_name()} configure)")

    def _refuse_invalid_values(self, params: list[Parameter]) -> SetParametersResult:
        reasons = self._invalid_value_reasons(params)
        return SetParametersResult(successful=not reasons, reason="; ".join(reasons))

    def _make_publisher(self, msg_type: type, topic: str, qos: QoSProfile,
                        overrides: QoSOverridingOptions | None = QOS_OVERRIDES, **kwargs) -> LifecyclePublisher:
        """Managed: sends nothing until activate."""
        return self.create_lifecycle_publisher(msg_type, topic, qos, qos_overriding_options=overrides, **kwargs)

    def _drop_publisher(self, publisher: LifecyclePublisher) -> None:
        self.destroy_lifecycle_publisher(publisher)

    @logs_exceptions
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.enhancer = None
        try:
            p = self._validated_parameters()
            self._load(p)
            self._create_outputs(p)
        except KeyboardInterrupt:  # SIGINT / SIGTERM during the load (run_node): the process is stopping
            # stderr, not the logger: rclpy's signal handler has shut the context down, so rosout is gone.
            print(f"{self.get_name()}: stopped during configure; the model load was abandoned", file=sys.stderr)
            self._release_partial_load()
            raise
        except (StartupError, EnhancerError) as exc:
            self.get_logger().error(f"cannot configure: {exc}")
            self._release_partial_load()
            return TransitionCallbackReturn.FAILURE
        self._params = p
        self.get_logger().info(f"configured (backend {self.backend_name}, model {self.model_name}, "
                               f"mode {self.enhancer.mode}, fast {self.enhancer.fast})")
        return super().on_configure(state)

    def _release_partial_load(self) -> None:
        """Release what a configure that did not finish had loaded (preload failed after the first model, a stop)."""
        if self.enhancer is not None:
            self.enhancer.close()
            self.enhancer = None

    @logs_exceptions
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the publishers first: the first frame must go out
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        try:
            self._create_inputs(self._params)
        except StartupError as exc:
            self.get_logger().error(f"cannot activate: {exc}")
            super().on_deactivate(state)  # the publishers again silent: the node stays inactive
            return TransitionCallbackReturn.FAILURE
        self._active = True
        return result

    @logs_exceptions
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("deactivated: not subscribed; the models stay loaded")
        return super().on_deactivate(state)

    @logs_exceptions
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_cleanup(state)
        self._cleanup()
        self.get_logger().info("cleaned up: models and publishers released")
        return result

    @logs_exceptions
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.stop()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"a transition from {state.label} raised; releasing everything (unconfigured)")
        self.stop()
        return TransitionCallbackReturn.SUCCESS

    def _deactivate(self) -> None:
        if self._active:
            self._active = False  # first: a teardown that raises is not tried again
            if not self._destroy_inputs():
                self.get_logger().warning(f"the worker is still correcting a frame after {JOIN_TIMEOUT_S} s; "
                                          "it stops after that frame")

    def _cleanup(self, switcher_timeout: float = JOIN_TIMEOUT_S) -> None:
        if self._params is not None:
            self._params = None
            self._destroy_outputs(switcher_timeout)

    def stop(self) -> None:
        """Undo whatever state the node is in (shutdown transition, Ctrl-C / SIGTERM), waiting at most
        JOIN_TIMEOUT_S for the worker and the switcher together (IllExpNode.stop says why)."""
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        if self._params is not None:
            self._stop_switcher(timeout=None)
        self._deactivate()
        self._cleanup(max(0.0, deadline - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    return run_node("illexp_lifecycle_node", IllExpLifecycleNode, argv)


if __name__ == "__main__":
    sys.exit(main())
