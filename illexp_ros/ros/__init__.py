"""The ROS 2 layer, the only one that imports rclpy, in three jobs:

* `node/`: the live node (`illexp_node`): parameters, QoS, diagnostics, image conversion, rate limit.
* `bags/`: the bag tool (`illexp_bag process | play | sheet`) on ROS 2 and ROS 1 bags via rosbags.
* `demo/`: `illexp_demo` with its generated sample data, and the end-to-end node benchmark (`illexp_bench --node`).
"""
