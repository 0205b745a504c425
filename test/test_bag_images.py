"""The rosbags-side image adapter: frames survive a serialize / deserialize round trip, and header stamps
are read straight from serialized bytes in either CDR byte order."""

from __future__ import annotations

import numpy as np
import pytest

from illexp_ros.ros.bags.images import (
    IMAGE_TYPE,
    TYPESTORE,
    deserialize,
    make_compressed,
    make_image,
    message_to_frame,
    serialize,
    serialized_stamp_ns,
)


@pytest.mark.parametrize("little_endian", [True, False])
@pytest.mark.parametrize("compressed", [False, True])
def test_stamp_from_serialized_bytes(little_endian: bool, compressed: bool) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    stamp = 1_700_000_123 * 1_000_000_000 + 987_654_321
    msg = make_compressed(frame, "rgb", stamp, "cam") if compressed else make_image(frame, "rgb", "rgb8", stamp, "cam")
    data = bytes(TYPESTORE.serialize_cdr(msg, msg.__msgtype__, little_endian=little_endian))
    assert serialized_stamp_ns(data) == stamp


@pytest.mark.parametrize(("encoding", "order"), [("rgb8", "rgb"), ("bgr8", "bgr")])
def test_image_round_trip(encoding: str, order: str) -> None:
    frame = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = deserialize(serialize(make_image(frame, "rgb", encoding, 42, "cam")), IMAGE_TYPE)
    decoded = message_to_frame(msg, IMAGE_TYPE)
    assert decoded.color_order == order and msg.header.frame_id == "cam"
    rgb = decoded.pixels if order == "rgb" else decoded.pixels[..., ::-1]
    np.testing.assert_array_equal(rgb, frame)


def test_bayer_image_survives_a_bag_round_trip() -> None:
    """A raw Bayer frame from a bag: demosaiced for the network, and written back as the same mosaic."""
    from illexp_ros.ros.bags.images import frame_to_image

    frame = np.random.default_rng(2).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    msg = deserialize(serialize(make_image(frame, "rgb", "bayer_gbrg8", 42, "cam")), IMAGE_TYPE)
    assert msg.encoding == "bayer_gbrg8" and msg.step == 8
    decoded = message_to_frame(msg, IMAGE_TYPE)
    assert decoded.color_order == "bgr" and decoded.pixels.shape == (6, 8, 3)
    again = frame_to_image(decoded.pixels, decoded.color_order, msg.encoding, msg.header)
    np.testing.assert_array_equal(np.asarray(again.data), np.asarray(msg.data))
    # G B / R G: the top-left pixel is green, its right neighbour blue, the one below red
    assert (msg.data[0], msg.data[1], msg.data[8]) == (frame[0, 0, 1], frame[0, 1, 2], frame[1, 0, 0])


def test_a_one_row_slice_of_a_wider_frame_is_written_with_a_packed_step() -> None:
    """numpy calls a one-row slice contiguous whatever its row stride; the message's step is the row's bytes."""
    wide = np.random.default_rng(3).integers(0, 256, (3, 100, 3), dtype=np.uint8)
    msg = deserialize(serialize(make_image(wide[:1, :6], "rgb", "rgb8", 42, "cam")), IMAGE_TYPE)
    assert (msg.width, msg.height, msg.step, len(msg.data)) == (6, 1, 18, 18)
    np.testing.assert_array_equal(message_to_frame(msg, IMAGE_TYPE).pixels, wide[:1, :6])
