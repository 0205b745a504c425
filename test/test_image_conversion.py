"""sensor_msgs/Image <-> numpy: views, padding, endianness, YUV byte order, every rejected input."""

import array
import os
import struct
import subprocess
import sys
import textwrap

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from skimage import data as skdata
from std_msgs.msg import Header

from illexp_ros.ros.node.image_conversion import (
    SUPPORTED_ENCODINGS,
    ImageFormatError,
    compressed_to_frame,
    frame_to_compressed,
    frame_to_image,
    image_array,
    image_to_frame,
)

RNG = np.random.default_rng(7)


def make_image(values: np.ndarray, encoding: str, pad: int = 0, bigendian: bool = False) -> Image:
    """Image whose rows are `values` rows plus `pad` bytes of junk (0xAB) each."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.uint16:
        values = values.astype(">u2" if bigendian else "<u2")
    h = values.shape[0]
    row = values.reshape(h, -1).view(np.uint8)
    rows = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=values.shape[1], encoding=encoding, is_bigendian=int(bigendian),
                step=rows.shape[1])
    msg.header.frame_id = "cam"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.data = array.array("B", rows.tobytes())
    return msg


def msg_bytes(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint8)


@pytest.mark.parametrize("encoding,channels", [("bgr8", 3), ("rgb8", 3), ("bgra8", 4), ("rgba8", 4)])
@pytest.mark.parametrize("pad", [0, 5])
def test_8bit_colour_round_trip_with_and_without_padding(encoding, channels, pad):
    values = RNG.integers(0, 256, (6, 7, channels), dtype=np.uint8)
    msg = make_image(values, encoding, pad=pad)
    view = image_array(msg)
    np.testing.assert_array_equal(view, values)
    assert np.shares_memory(view, msg_bytes(msg)), "reading must not copy"
    frame = image_to_frame(msg)
    assert frame.pixels.shape == (6, 7, 3)
    assert np.shares_memory(frame.pixels, msg_bytes(msg))
    assert frame.color_order == encoding[:3]
    out = frame_to_image(frame.pixels, frame.color_order, encoding, msg.header, alpha=frame.alpha)
    assert out.step == 7 * channels  # output is never padded
    np.testing.assert_array_equal(msg_bytes(out).reshape(6, 7, channels), values)
    assert out.header.frame_id == "cam" and out.header.stamp.nanosec == 345


def test_padding_bytes_are_not_read():
    values = RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    msg = make_image(values, "bgr8", pad=3)
    assert 0xAB in msg_bytes(msg)
    np.testing.assert_array_equal(image_array(msg), values)


def test_rgb_input_published_as_bgr_swaps_channels():
    values = RNG.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    frame = image_to_frame(make_image(values, "rgb8"))
    out = frame_to_image(frame.pixels, frame.color_order, "bgr8", Header())
    np.testing.assert_array_equal(msg_bytes(out).reshape(3, 4, 3), values[..., ::-1])


def test_alpha_is_kept_and_added():
    values = RNG.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    frame = image_to_frame(make_image(values, "bgra8"))
    out = frame_to_image(frame.pixels, frame.color_order, "rgba8", Header(), alpha=frame.alpha)
    got = msg_bytes(out).reshape(3, 4, 4)
    np.testing.assert_array_equal(got[..., 3], values[..., 3])
    np.testing.assert_array_equal(got[..., :3], values[..., 2::-1])
    no_alpha = frame_to_image(frame.pixels, frame.color_order, "bgra8", Header())
    assert (msg_bytes(no_alpha).reshape(3, 4, 4)[..., 3] == 255).all()


def test_mono8_round_trip():
    grey = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    frame = image_to_frame(make_image(grey, "mono8", pad=2))
    assert frame.pixels.shape == (5, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(frame.pixels[..., c], grey)
    out = frame_to_image(frame.pixels, frame.color_order, "mono8", Header())
    assert out.encoding == "mono8" and out.step == 6
    np.testing.assert_array_equal(msg_bytes(out).reshape(5, 6), grey)


def test_yuv422_is_uyvy_and_yuv422_yuy2_is_yuyv():
    # A grey pair Y=200, U=V=128. UYVY bytes: U Y V Y. Read as YUYV the same bytes are Y=128 with
    # strong chroma (U=V=200), a clearly coloured pixel: the two conventions must not be confused.
    pair = np.array([128, 200, 128, 200], np.uint8)
    data = np.tile(pair, (2, 2)).reshape(2, 4, 2)
    uyvy = image_to_frame(make_image(data, "yuv422")).pixels
    assert np.ptp(uyvy.astype(int), axis=2).max() <= 2, "UYVY grey must decode grey"
    assert abs(int(uyvy[0, 0, 0]) - round((200 - 16) * 255 / 219)) <= 3  # BT.601 video range
    yuyv = image_to_frame(make_image(data, "yuv422_yuy2")).pixels
    assert np.ptp(yuyv.astype(int), axis=2).max() > 60, "same bytes as YUYV must be coloured"


@pytest.mark.parametrize("encoding", ["yuv422", "yuv422_yuy2"])
def test_yuv_round_trip(encoding):
    # Pixel pairs share chroma, so a frame whose pairs have one colour survives up to rounding.
    rgb = np.repeat(RNG.integers(30, 220, (4, 3, 3), dtype=np.uint8), 2, axis=1)
    code = cv2.COLOR_RGB2YUV_UYVY if encoding == "yuv422" else cv2.COLOR_RGB2YUV_YUY2
    msg = make_image(cv2.cvtColor(rgb, code), encoding, pad=4)
    frame = image_to_frame(msg)
    assert np.abs(frame.pixels.astype(int) - rgb).max() <= 4
    out = frame_to_image(frame.pixels, frame.color_order, encoding, Header())
    assert out.step == 6 * 2
    back = image_to_frame(out).pixels
    assert np.abs(back.astype(int) - rgb).max() <= 6


def test_16bit_honours_endianness():
    raw = np.array([[0x12, 0x34, 0xAB, 0xCD]], np.uint8)  # two mono16 pixels
    for bigendian, expected in ((True, [0x12, 0xAB]), (False, [0x34, 0xCD])):
        msg = Image(height=1, width=2, encoding="mono16", is_bigendian=int(bigendian), step=4)
        msg.data = array.array("B", raw.tobytes())
        frame = image_to_frame(msg)
        np.testing.assert_array_equal(frame.pixels[0, :, 0], expected)


@pytest.mark.parametrize("encoding,channels", [("mono16", 1), ("rgb16", 3), ("bgr16", 3)])
@pytest.mark.parametrize("bigendian", [False, True])
def test_16bit_round_trip(encoding, channels, bigendian):
    shape = (3, 4) if channels == 1 else (3, 4, 3)
    values = RNG.integers(0, 256, shape).astype(np.uint16) * 257  # exactly representable in 8 bits
    msg = make_image(values, encoding, pad=2, bigendian=bigendian)
    frame = image_to_frame(msg)
    out = frame_to_image(frame.pixels, frame.color_order, encoding, Header(), bigendian=bigendian)
    assert out.is_bigendian == int(bigendian) and out.step == 4 * channels * 2
    got = np.frombuffer(out.data, ">u2" if bigendian else "<u2").reshape(shape)
    np.testing.assert_array_equal(got, values)


# The 2 x 2 block at the top left of each Bayer encoding, as sensor_msgs names them.
BAYER_BLOCKS = {"rggb": ("r", "g", "g", "b"), "bggr": ("b", "g", "g", "r"),
                "gbrg": ("g", "b", "r", "g"), "grbg": ("g", "r", "b", "g")}
COLOUR = {"b": 30, "g": 120, "r": 220}  # one BGR colour: (30, 120, 220)


def mosaic_of_one_colour(pattern: str, h: int = 6, w: int = 8) -> np.ndarray:
    block = np.array([COLOUR[c] for c in BAYER_BLOCKS[pattern]], np.uint8).reshape(2, 2)
    return np.tile(block, (h // 2, w // 2))


@pytest.mark.parametrize("pattern", sorted(BAYER_BLOCKS))
def test_bayer_patterns_are_named_by_their_top_left_block(pattern):
    frame = image_to_frame(make_image(mosaic_of_one_colour(pattern), f"bayer_{pattern}8", pad=3))
    assert frame.color_order == "bgr" and frame.pixels.shape == (6, 8, 3)
    assert (frame.pixels == (30, 120, 220)).all(), frame.pixels[2, 2]
    # The same bytes read with red and blue's places swapped come out with red and blue swapped.
    swapped = {"rggb": "bggr", "bggr": "rggb", "gbrg": "grbg", "grbg": "gbrg"}[pattern]
    other = image_to_frame(make_image(mosaic_of_one_colour(pattern), f"bayer_{swapped}8"))
    assert (other.pixels == (220, 120, 30)).all()


@pytest.mark.parametrize("pattern", sorted(BAYER_BLOCKS))
@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_colour_frame_to_bayer_keeps_each_filters_channel(pattern, order):
    bgr = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    pixels = bgr if order == "bgr" else np.ascontiguousarray(bgr[..., ::-1])
    out = frame_to_image(pixels, order, f"bayer_{pattern}8", Header())
    assert out.encoding == f"bayer_{pattern}8" and out.step == 6
    got = msg_bytes(out).reshape(4, 6)
    for i, colour in enumerate(BAYER_BLOCKS[pattern]):
        dy, dx = divmod(i, 2)
        np.testing.assert_array_equal(got[dy::2, dx::2], bgr[dy::2, dx::2, "bgr".index(colour)])


@pytest.mark.parametrize("encoding", ["bayer_rggb8", "bayer_gbrg8", "bayer_bggr16", "bayer_grbg16"])
@pytest.mark.parametrize("bigendian", [False, True])
def test_bayer_round_trip_is_exact(encoding, bigendian):
    """Demosaicing keeps each pixel's own sample, so a mosaic read and written back unchanged is the same mosaic
    (what the node publishes with strength 0)."""
    raw = RNG.integers(0, 256, (6, 10), dtype=np.uint8)
    values = raw.astype(np.uint16) * 257 if encoding.endswith("16") else raw
    msg = make_image(values, encoding, pad=4, bigendian=bigendian)
    frame = image_to_frame(msg)
    out = frame_to_image(frame.pixels, frame.color_order, encoding, Header(), bigendian=bigendian)
    if encoding.endswith("16"):
        assert out.is_bigendian == int(bigendian) and out.step == 20
        np.testing.assert_array_equal(np.frombuffer(out.data, ">u2" if bigendian else "<u2").reshape(6, 10), values)
    else:
        np.testing.assert_array_equal(msg_bytes(out).reshape(6, 10), raw)


def test_compressed_output_of_bayer_is_the_colour_frame_named_as_its_data():
    frame = image_to_frame(make_image(mosaic_of_one_colour("rggb", 8, 8), "bayer_rggb8"))
    msg = frame_to_compressed(frame.pixels, frame.color_order, "bayer_rggb8", Header(), "png")
    assert msg.format == "bgr8; png compressed bgr8"
    assert (compressed_to_frame(msg).pixels == (30, 120, 220)).all()
    assert frame_to_compressed(frame.pixels, "bgr", "bayer_rggb16", Header(), "png").format == \
        "bgr16; png compressed bgr16"


def test_every_supported_encoding_converts():
    for encoding in SUPPORTED_ENCODINGS:
        pixels = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        out = frame_to_image(pixels, "rgb", encoding, Header())
        assert image_to_frame(out).pixels.shape == (4, 6, 3), encoding


def bad(encoding="bgr8", height=4, width=4, step=12, size=48):
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = array.array("B", bytes(size))
    return msg


@pytest.mark.parametrize("msg,words", [
    (bad(encoding="32FC1"), "unsupported encoding '32FC1'"),
    (bad(encoding=""), "unsupported encoding ''"),
    (bad(width=0, step=0, size=0), "empty image: 0x4"),
    (bad(height=0, size=0), "empty image: 4x0"),
    (bad(size=47), "fewer than step x height"),
    (bad(size=0), "data has 0 bytes"),
    (bad(step=11, size=44), "step 11 is smaller than width x channels x bytes"),
    (bad(encoding="mono16", step=6, size=24), "step 6 is smaller"),
    (bad(encoding="mono16", step=9, size=36), "odd"),
    (bad(encoding="yuv422", width=3, step=6, size=24), "width 3 is odd"),
    (bad(encoding="bayer_rggb8", height=2, width=8, step=8, size=16), "at least 3x3 pixels to demosaic, got 8x2"),
    (bad(encoding="bayer_grbg16", height=5, width=1, step=2, size=10), "got 1x5"),
])
def test_bad_images_raise_a_named_error(msg, words):
    with pytest.raises(ImageFormatError, match=words.replace("(", r"\(")):
        image_to_frame(msg)


def test_compressed_png_and_jpeg_decode():
    bgr = RNG.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    for fmt, ext in (("png", ".png"), ("jpeg", ".jpg")):
        msg = CompressedImage(format=fmt)
        msg.data = array.array("B", cv2.imencode(ext, bgr)[1].tobytes())
        frame = compressed_to_frame(msg)
        assert frame.pixels.shape == (8, 10, 3) and frame.color_order == "bgr"
        if fmt == "png":
            np.testing.assert_array_equal(frame.pixels, bgr)


def jpeg_with_exif_orientation(bgr: np.ndarray, orientation: int) -> bytes:
    """A JPEG of `bgr` with an EXIF APP1 segment whose Orientation tag (0x0112) says `orientation`."""
    jpeg = cv2.imencode(".jpg", bgr)[1].tobytes()
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 8) + ifd
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_compressed_input_ignores_the_exif_orientation_tag():
    # image_transport decodes the pixels as stored; rotating by the tag (OpenCV's default) would turn a 40x80
    # frame into 80x40, no longer the camera_info's size.
    bgr = np.zeros((40, 80, 3), np.uint8)
    bgr[:, :40] = (0, 0, 255)
    data = jpeg_with_exif_orientation(bgr, 6)  # 6 = rotate 90 degrees clockwise to display
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (80, 40, 3)  # the tag is read
    msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
    msg.data = array.array("B", data)
    frame = compressed_to_frame(msg)
    assert frame.pixels.shape == (40, 80, 3)
    assert frame.pixels[:, :30, 2].mean() > 200 and frame.pixels[:, 50:, 2].mean() < 50  # red on the left


@pytest.mark.parametrize("fmt,order", [
    ("rgb8; png compressed rgb8", "rgb"), ("bgr8; png compressed rgb8", "rgb"), ("rgb8; png compressed bgr8", "bgr"),
    ("bgr8; png compressed bgr8", "bgr"), ("png", "bgr"), ("", "bgr"), ("compressed rgb8", "bgr"),
])
def test_compressed_input_colour_order_follows_the_format_string(fmt, order):
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[..., 0] = 200  # the first channel of the data as stored (red if the publisher compressed RGB)
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", cv2.imencode(".png", stored)[1].tobytes())
    frame = compressed_to_frame(msg)
    np.testing.assert_array_equal(frame.pixels, stored)
    assert frame.color_order == order


def test_a_one_row_slice_of_a_wider_frame_gets_a_packed_step():
    wide = RNG.integers(0, 256, (3, 100, 3), dtype=np.uint8)
    row = wide[:1, :6]  # numpy calls it contiguous, its row stride is still 300 bytes
    msg = frame_to_image(row, "bgr", "bgr8", Header())
    assert (msg.width, msg.height, msg.step, len(msg.data)) == (6, 1, 18, 18)
    np.testing.assert_array_equal(image_to_frame(msg).pixels, row)
    mono = frame_to_image(row, "bgr", "mono16", Header())
    assert (mono.step, len(mono.data)) == (12, 12)


@pytest.mark.parametrize("payload", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + bytes(40)])
def test_compressed_garbage_raises(payload):
    msg = CompressedImage(format="jpeg")
    msg.data = array.array("B", payload)
    with pytest.raises(ImageFormatError, match="compressed frame"):
        compressed_to_frame(msg)


def test_a_compressed_frame_declaring_too_many_pixels_is_refused_from_its_header():
    """8200 x 8200 of black compresses to 79 kB (PNG) and would decode to 200 MB: refused in any format OpenCV
    reads, also where a header parser of our own could be fooled (a JPEG with a TEM marker after SOI), in a
    process that imported illexp_ros first, as the node and the tools do (OpenCV reads its cap at import)."""
    script = textwrap.dedent("""
        import array
        from illexp_ros.ros.node.image_conversion import ImageFormatError, compressed_to_frame
        import cv2, numpy as np
        from sensor_msgs.msg import CompressedImage
        big = np.zeros((8200, 8200), np.uint8)
        jpeg = cv2.imencode(".jpg", big)[1].tobytes()
        payloads = {"png": cv2.imencode(".png", big)[1].tobytes(), "jpeg": jpeg,
                    "jpeg with TEM": jpeg[:2] + bytes([0xFF, 0x01]) + jpeg[2:],
                    "tiff": cv2.imencode(".tiff", big)[1].tobytes(),
                    "wide png": cv2.imencode(".png", np.zeros((64, 8192), np.uint8))[1].tobytes()}
        for name, data in payloads.items():
            msg = CompressedImage(format="jpeg")
            msg.data = array.array("B", data)
            try:
                print(name, compressed_to_frame(msg).pixels.shape)
            except ImageFormatError as exc:
                print(name, "refused", "declares more pixels than are decoded" in str(exc))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["png refused True", "jpeg refused True", "jpeg with TEM refused True",
                                          "tiff refused True", "wide png (64, 8192, 3)"]


def photo_bgr(h: int = 64, w: int = 96) -> np.ndarray:
    """A real photograph (skimage's chelsea), BGR: JPEG error on noise would say little."""
    return np.ascontiguousarray(cv2.resize(skdata.chelsea(), (w, h), interpolation=cv2.INTER_AREA)[..., ::-1])


@pytest.mark.parametrize("encoding,compression,target", [
    ("bgr8", "jpeg", "bgr8"), ("rgb8", "jpeg", "bgr8"), ("rgba8", "png", "bgr8"), ("mono8", "jpeg", "mono8"),
    ("bgr16", "jpeg", "bgr8"), ("rgb16", "png", "bgr16"), ("mono16", "png", "mono16"),
])
def test_compressed_output_follows_image_transport(encoding, compression, target):
    """format "<encoding>; <fmt> compressed <target>" (ROS 2 compressed_image_transport's), colour as bgr, grey as
    mono, 16-bit only in png; the payload decodes to the corrected frame (png exactly, x257 for 16 bits)."""
    bgr = photo_bgr()
    header = Header(frame_id="cam")
    header.stamp.sec = 7
    msg = frame_to_compressed(bgr, "bgr", encoding, header, compression)
    assert msg.format == f"{encoding}; {compression} compressed {target}"
    assert msg.header.frame_id == "cam" and msg.header.stamp.sec == 7
    decoded = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY) if target.startswith("mono") else bgr
    if target.endswith("16"):
        assert decoded.dtype == np.uint16
        expected = expected.astype(np.uint16) * 257
    assert decoded.shape == expected.shape
    if compression == "png":
        np.testing.assert_array_equal(decoded, expected)
    else:
        assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 3.0


def test_compressed_output_of_rgb_pixels_is_bgr_and_quality_and_level_matter():
    bgr = photo_bgr()
    header = Header()
    from_rgb = frame_to_compressed(np.ascontiguousarray(bgr[..., ::-1]), "rgb", "rgb8", header, "png")
    np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(from_rgb.data, np.uint8), cv2.IMREAD_COLOR), bgr)
    sizes = {q: len(frame_to_compressed(bgr, "bgr", "bgr8", header, "jpeg", jpeg_quality=q).data) for q in (20, 95)}
    assert sizes[20] < 0.6 * sizes[95]
    levels = {n: len(frame_to_compressed(bgr, "bgr", "bgr8", header, "png", png_level=n).data) for n in (0, 9)}
    assert levels[9] < levels[0]


def test_compressed_output_of_yuv_is_named_as_its_data_and_bad_format_raises():
    bgr = photo_bgr()
    msg = frame_to_compressed(bgr, "bgr", "yuv422_yuy2", Header(), "jpeg")
    assert msg.format == "bgr8; jpeg compressed bgr8"  # a subscriber would otherwise label bgr data as yuv
    assert compressed_to_frame(msg).pixels.shape == bgr.shape
    with pytest.raises(ValueError, match="compression must be one of"):
        frame_to_compressed(bgr, "bgr", "bgr8", Header(), "webp")
