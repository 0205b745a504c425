"""Image messages as `rosbags` deserialises them (plain dataclasses, not rclpy messages) <-> numpy.

Bag processing runs without DDS and without rclpy; rosbags gives Image / CompressedImage as dataclasses with
the same fields as rclpy's messages. Decoding and encoding reuse the node's image_conversion (same encodings,
same conventions); this module only builds and (de)serialises the rosbags dataclasses.
Corrected frames are built with the ROS 2 Kilted type store (the distribution we target).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

from illexp_ros.ros.node.image_conversion import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_PNG_LEVEL,
    Frame,
    ImageFormatError,
    compressed_to_frame,
    encode_compressed,
    frame_to_array,
    image_to_frame,
    packed_step,
)

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
_Image = TYPESTORE.types[IMAGE_TYPE]
_CompressedImage = TYPESTORE.types[COMPRESSED_TYPE]
_Header = TYPESTORE.types["std_msgs/msg/Header"]
_Time = TYPESTORE.types["builtin_interfaces/msg/Time"]


def message_to_frame(msg: Any, msgtype: str) -> Frame:
    """A deserialised Image / CompressedImage -> the Enhancer's frame, via the node's own conversions
    (image_conversion reads only attributes that rosbags' dataclasses share with rclpy messages)."""
    if msgtype == COMPRESSED_TYPE:
        return compressed_to_frame(msg)
    if msgtype != IMAGE_TYPE:
        raise ImageFormatError(f"not an image message type: {msgtype}")
    frame = image_to_frame(msg)
    return Frame(np.ascontiguousarray(frame.pixels), frame.color_order, frame.alpha)


def output_encoding(msg: Any, msgtype: str) -> str:
    """The corrected image keeps an Image input's encoding (like the node); a CompressedImage becomes bgr8."""
    return msg.encoding if msgtype == IMAGE_TYPE else "bgr8"


def frame_to_image(pixels: np.ndarray, color_order: str, encoding: str, header: Any,
                   alpha: np.ndarray | None = None, bigendian: bool = False) -> Any:
    """Corrected H x W x 3 uint8 pixels -> a Kilted sensor_msgs/Image dataclass with a copy of `header`."""
    values = frame_to_array(pixels, color_order, encoding, alpha, bigendian)
    return _Image(header=copy_header(header), height=int(values.shape[0]), width=int(values.shape[1]),
                  encoding=encoding, is_bigendian=int(bool(bigendian) and values.dtype.itemsize == 2),
                  step=packed_step(values), data=values.reshape(-1).view(np.uint8))


def copy_header(header: Any) -> Any:
    """A Kilted std_msgs/Header with the same stamp and frame_id (the input may use another type store)."""
    return _Header(stamp=_Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                   frame_id=str(header.frame_id))


def make_header(stamp_ns: int, frame_id: str) -> Any:
    return _Header(stamp=_Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                   frame_id=frame_id)


def make_image(frame: np.ndarray, color_order: str, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    return frame_to_image(frame, color_order, encoding, make_header(stamp_ns, frame_id))


def make_compressed(frame: np.ndarray, color_order: str, stamp_ns: int, frame_id: str,
                    fmt: str = "png") -> Any:
    """A bgr8 CompressedImage (png, or jpeg: fmt "jpg" or "jpeg") of an RGB/BGR frame."""
    return frame_to_compressed(frame, color_order, "bgr8", make_header(stamp_ns, frame_id),
                               "jpeg" if fmt == "jpg" else fmt)


def frame_to_compressed(pixels: np.ndarray, color_order: str, encoding: str, header: Any,
                        compression: str = "jpeg", jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                        png_level: int = DEFAULT_PNG_LEVEL) -> Any:
    """Corrected H x W x 3 uint8 pixels -> a Kilted sensor_msgs/CompressedImage dataclass with a copy of `header`,
    encoded as the node's corrected/image/compressed (image_conversion.encode_compressed)."""
    fmt, buf = encode_compressed(pixels, color_order, encoding, compression, jpeg_quality, png_level)
    return _CompressedImage(header=copy_header(header), format=fmt, data=buf)


def serialize(msg: Any) -> bytes:
    return bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__))


def deserialize(data: bytes, msgtype: str) -> Any:
    return TYPESTORE.deserialize_cdr(data, msgtype)


def serialized_stamp_ns(data: bytes) -> int:
    """header.stamp of a serialized message that starts with a std_msgs/Header (Image, CompressedImage, ...),
    read from the first bytes without deserialising the (large) rest: after the 4-byte CDR encapsulation
    header come int32 sec and uint32 nanosec, little-endian when the second byte is 1."""
    sec, nanosec = struct.unpack_from("<iI" if data[1] == 1 else ">iI", data, 4)
    return sec * 1_000_000_000 + nanosec


def stamp_ns(header: Any) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
