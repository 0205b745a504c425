"""`illexp_stereo_lifecycle_node`: `illexp_stereo_node` as a managed (lifecycle) node.

Same name (illexp_stereo_node), parameters, topics and behaviour as illexp_stereo_node; the transitions are
illexp_lifecycle_node's (its module docstring): configure loads the model(s) and creates both views' publishers,
activate subscribes to both views (and their camera_info) and starts the worker, deactivate unsubscribes (frames
waiting for a partner or in the mailbox are dropped and counted), cleanup releases everything.

Run:  illexp_stereo_lifecycle_node --ros-args --params-file config/illexp_stereo.yaml \\
          -r left/image:=/stereo/left/image_raw -r right/image:=/stereo/right/image_raw
      ros2 lifecycle set /illexp_stereo_node configure && ros2 lifecycle set /illexp_stereo_node activate
"""

from __future__ import annotations

import sys

from illexp_ros.ros.node.illexp_lifecycle_node import IllExpLifecycleNode
from illexp_ros.ros.node.illexp_node import run_node
from illexp_ros.ros.node.illexp_stereo_node import NODE_NAME, StereoCorrectionMixin

PROGRAM = "illexp_stereo_lifecycle_node"


class IllExpStereoLifecycleNode(StereoCorrectionMixin, IllExpLifecycleNode):
    """The stereo node as a managed node (module docstring)."""

    NAME = NODE_NAME


def main(argv: list[str] | None = None) -> int:
    return run_node(PROGRAM, IllExpStereoLifecycleNode, argv)


if __name__ == "__main__":
    sys.exit(main())
