"""`illexp_bag` (tool.py): process, play and sheet on ROS 2 and ROS 1 bags, through rosbags."""
