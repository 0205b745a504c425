"""illexp_ros: live correction of badly exposed camera frames (ROS 2 node, runtime, training)."""

import os
import sys

# The largest image OpenCV decodes in our processes: more than any camera a robot carries (a 61 MP sensor is
# 9504 x 6336, 60.2 Mpx), far below OpenCV's own 1 Gpx. Compression makes size cheap to claim: a 250 kB PNG of
# 16000 x 16000 decoded to 768 MB in ~3 s, before the correction's own buffers, enough to get a Jetson's node
# killed for memory; with the cap it is refused from its header in under a millisecond, whatever the format.
# OpenCV reads the variable once, when cv2 is first imported, so it is set here, before any module of ours
# imports cv2; a value already in the environment wins (a program that needs larger images sets its own).
MAX_DECODED_PIXELS = 8192 * 8192
if "cv2" not in sys.modules:
    os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_DECODED_PIXELS))
