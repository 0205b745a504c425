"""sensor_msgs/Image and CompressedImage <-> numpy, without cv_bridge.

Reading is a zero-copy numpy view of `msg.data` that honours `step` (row padding) and `is_bigendian`; a copy
is made only where a conversion needs one (YUV, mono, 16-bit, alpha, padded rows). The Enhancer takes an
H x W x 3 uint8 frame in RGB or BGR order, so every encoding is turned into that and back.

Encoding conventions follow cv_bridge: 'yuv422' is UYVY byte order (U0 Y0 V0 Y1), 'yuv422_yuy2' is YUYV
(Y0 U0 Y1 V0, what most USB cameras send). 16-bit encodings are reduced to 8 bits for the network
(value >> 8) and expanded back with x257, so 0 and 65535 map to 0 and 255 and back exactly.

Bayer encodings (`bayer_rggb8` ... `bayer_grbg16`, the raw mosaic of machine-vision cameras, named by the colours
of the top-left 2 x 2 block as in sensor_msgs) are demosaiced (OpenCV's edge-aware interpolation) for the network,
and a corrected frame is written back in a Bayer encoding by keeping, at each pixel, the channel of that pixel's
filter: the node can sit between such a driver and image_proc's debayer and leave the rest of the pipeline as it
was (`output_encoding: bgr8` publishes the demosaiced colour frame instead).
"""

from __future__ import annotations

import array
import os
from dataclasses import dataclass

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header


class ImageFormatError(ValueError):
    """A message that cannot be read as an image; the text names the problem."""


@dataclass(frozen=True)
class EncodingLayout:
    channels: int  # values per pixel in the message (yuv422: 2 bytes per pixel)
    bytes_per_channel: int
    color_order: str  # what the Enhancer gets: "rgb" or "bgr"


ENCODINGS: dict[str, EncodingLayout] = {
    "bgr8": EncodingLayout(3, 1, "bgr"),
    "rgb8": EncodingLayout(3, 1, "rgb"),
    "bgra8": EncodingLayout(4, 1, "bgr"),
    "rgba8": EncodingLayout(4, 1, "rgb"),
    "mono8": EncodingLayout(1, 1, "rgb"),
    "yuv422": EncodingLayout(2, 1, "rgb"),
    "yuv422_yuy2": EncodingLayout(2, 1, "rgb"),
    "mono16": EncodingLayout(1, 2, "rgb"),
    "rgb16": EncodingLayout(3, 2, "rgb"),
    "bgr16": EncodingLayout(3, 2, "bgr"),
    **{f"bayer_{p}{bits}": EncodingLayout(1, bits // 8, "bgr")
       for bits in (8, 16) for p in ("rggb", "bggr", "gbrg", "grbg")},
}
SUPPORTED_ENCODINGS = tuple(ENCODINGS)

# What `corrected/image/compressed` can carry, and image_transport's defaults for ROS 2 (OpenCV's own).
COMPRESSED_FORMATS = ("jpeg", "png")
DEFAULT_JPEG_QUALITY = 95
DEFAULT_PNG_LEVEL = 3
JPEG_QUALITY_RANGE = (1, 100)
PNG_LEVEL_RANGE = (0, 9)

_YUV_TO_RGB = {"yuv422": cv2.COLOR_YUV2RGB_UYVY, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUY2}
_RGB_TO_YUV = {"yuv422": cv2.COLOR_RGB2YUV_UYVY, "yuv422_yuy2": cv2.COLOR_RGB2YUV_YUY2}
# OpenCV's Bayer<pattern> codes name the pattern by its top-left 2 x 2 block, as sensor_msgs does (its older
# Bayer<XY> codes are named from the second row and column: BayerRGGB == BayerBG). Edge-aware rather than
# bilinear: fewer zipper artefacts on edges, and measured faster here (0.43 against 0.66 ms at 1920x1080).
_BAYER_TO_BGR = {
    "rggb": cv2.COLOR_BayerRGGB2BGR_EA, "bggr": cv2.COLOR_BayerBGGR2BGR_EA,
    "gbrg": cv2.COLOR_BayerGBRG2BGR_EA, "grbg": cv2.COLOR_BayerGRBG2BGR_EA,
}
MIN_BAYER_SIDE = 3
_BAYER_PATTERNS = {enc: enc[6:10] for enc in ENCODINGS if enc.startswith("bayer_")}  # bayer_rggb16 -> rggb


def bayer_pattern(encoding: str) -> str | None:
    """'rggb' / 'bggr' / 'gbrg' / 'grbg' for a Bayer encoding, None for any other."""
    return _BAYER_PATTERNS.get(encoding)


def _bayer_sites(pattern: str) -> list[tuple[int, int, int]]:
    """(row, column, BGR channel) of the four filters of a 2 x 2 Bayer `pattern`, e.g. rggb: red at (0, 0)."""
    return [(i // 2, i % 2, "bgr".index(colour)) for i, colour in enumerate(pattern)]


@dataclass
class Frame:
    """What the Enhancer gets: H x W x 3 uint8 pixels (a view of the message where possible)."""

    pixels: np.ndarray
    color_order: str  # "rgb" | "bgr"
    alpha: np.ndarray | None = None  # H x W uint8 of a bgra8/rgba8 input, put back on output


def layout_of(encoding: str) -> EncodingLayout:
    layout = ENCODINGS.get(encoding)
    if layout is None:
        raise ImageFormatError(
            f"unsupported encoding {encoding!r} (supported: {', '.join(SUPPORTED_ENCODINGS)})")
    return layout


def image_array(msg: Image) -> np.ndarray:
    """Validated zero-copy view of an Image: H x W x C (H x W for mono), uint8 or uint16 in the message's
    byte order. Raises ImageFormatError naming the problem."""
    layout = layout_of(msg.encoding)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ImageFormatError(f"empty image: {width}x{height}")
    row_bytes = width * layout.channels * layout.bytes_per_channel
    if step < row_bytes:
        raise ImageFormatError(
            f"step {step} is smaller than width x channels x bytes = {width}x{layout.channels}x"
            f"{layout.bytes_per_channel} = {row_bytes} for {msg.encoding}")
    if layout.bytes_per_channel == 2 and step % 2:
        raise ImageFormatError(f"step {step} is odd for 16-bit encoding {msg.encoding}")
    if msg.encoding in _YUV_TO_RGB and width % 2:
        raise ImageFormatError(f"width {width} is odd; {msg.encoding} packs pixels in pairs")
    size = len(msg.data)
    if size < step * height:
        raise ImageFormatError(
            f"data has {size} bytes, fewer than step x height = {step}x{height} = {step * height}")
    if layout.bytes_per_channel == 1:
        dtype = np.dtype(np.uint8)
    else:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
    buffer = np.frombuffer(msg.data, dtype=np.uint8)
    # A strided view: rows start every `step` bytes and the padding between them is never touched.
    view = np.ndarray(shape=(height, width * layout.channels), dtype=dtype, buffer=buffer,
                      strides=(step, dtype.itemsize))
    view.flags.writeable = False
    if layout.channels == 1:
        return view
    return view.reshape(height, width, layout.channels)


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return (values >> 8).astype(np.uint8)


def image_to_frame(msg: Image) -> Frame:
    """Image -> Frame for the Enhancer. A view for unpadded bgr8/rgb8; a copy where conversion is needed."""
    view = image_array(msg)
    enc = msg.encoding
    layout = ENCODINGS[enc]
    if enc in ("bgr8", "rgb8"):
        return Frame(view, layout.color_order)
    if enc in ("bgra8", "rgba8"):
        return Frame(view[..., :3], layout.color_order, alpha=view[..., 3])
    if enc == "mono8":
        return Frame(cv2.cvtColor(np.ascontiguousarray(view), cv2.COLOR_GRAY2RGB), "rgb")
    if enc in _YUV_TO_RGB:
        return Frame(cv2.cvtColor(view, _YUV_TO_RGB[enc]), "rgb")
    if enc == "mono16":
        return Frame(cv2.cvtColor(_to_uint8(view), cv2.COLOR_GRAY2RGB), "rgb")
    pattern = bayer_pattern(enc)
    if pattern is not None:
        if view.shape[0] < MIN_BAYER_SIDE or view.shape[1] < MIN_BAYER_SIDE:
            # OpenCV's demosaic (every method) returns black for them; no camera sends such a mosaic.
            raise ImageFormatError(f"a {enc} frame must be at least {MIN_BAYER_SIDE}x{MIN_BAYER_SIDE} pixels to "
                                   f"demosaic, got {view.shape[1]}x{view.shape[0]}")
        # Contiguous: OpenCV 5.0's edge-aware demosaic misreads rows whose step exceeds the width (padded rows
        # came out as wrong colours here; its bilinear one does not), so padded rows are copied first.
        raw = np.ascontiguousarray(view) if layout.bytes_per_channel == 1 else _to_uint8(view)
        bgr = cv2.cvtColor(raw, _BAYER_TO_BGR[pattern])
        _keep_border_samples(bgr, raw, pattern)
        return Frame(bgr, "bgr")
    return Frame(_to_uint8(view), layout.color_order)  # rgb16 / bgr16


def compressed_to_frame(msg: CompressedImage) -> Frame:
    """CompressedImage (jpeg/png) -> 3-channel Frame; ImageFormatError if it does not decode or its header
    declares more than OpenCV's cap (illexp_ros.MAX_DECODED_PIXELS; not decoded then).

    As image_transport's compressed subscriber: the pixels are taken as stored (a JPEG's EXIF orientation tag is
    ignored: a rotated frame would no longer match camera_info), in BGR order unless the format's part after ';'
    says the data was compressed as RGB (e.g. "rgb8; jpeg compressed rgb8", from publishers other than
    image_transport's, which always compresses BGR)."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageFormatError(f"compressed frame (format {msg.format!r}) is empty")
    color_order = "rgb" if "compressed rgb" in msg.format.partition(";")[2] else "bgr"
    try:
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):  # the cap of illexp_ros/__init__.py, checked on the header
            limit = os.environ.get("OPENCV_IO_MAX_IMAGE_PIXELS", "?")
            raise ImageFormatError(f"compressed frame (format {msg.format!r}, {data.size} bytes) declares more "
                                   f"pixels than are decoded (OPENCV_IO_MAX_IMAGE_PIXELS={limit}); not decoded"
                                   ) from exc
        raise ImageFormatError(f"compressed frame (format {msg.format!r}) does not decode: {exc}") from exc
    if decoded is None:
        raise ImageFormatError(
            f"compressed frame (format {msg.format!r}, {data.size} bytes) does not decode as jpeg or png")
    return Frame(decoded, color_order)


def _in_order(pixels: np.ndarray, have: str, want: str) -> np.ndarray:
    return pixels if have == want else pixels[..., ::-1]


def frame_to_array(pixels: np.ndarray, color_order: str, encoding: str, alpha: np.ndarray | None = None,
                   bigendian: bool = False) -> np.ndarray:
    """Corrected H x W x 3 uint8 pixels -> the contiguous array of `encoding` (what goes into msg.data)."""
    layout = layout_of(encoding)
    if encoding in ("bgr8", "rgb8"):
        out = _in_order(pixels, color_order, layout.color_order)
    elif encoding in ("bgra8", "rgba8"):
        rgb = _in_order(pixels, color_order, layout.color_order)
        a = alpha if alpha is not None else np.full(pixels.shape[:2], 255, np.uint8)
        out = np.concatenate([rgb, a[..., None]], axis=2)
    elif encoding in ("mono8", "mono16"):
        out = _grey(pixels, color_order)
    elif encoding in _RGB_TO_YUV:
        if pixels.shape[1] % 2:
            raise ImageFormatError(f"width {pixels.shape[1]} is odd; {encoding} packs pixels in pairs")
        rgb = np.ascontiguousarray(_in_order(pixels, color_order, "rgb"))
        out = cv2.cvtColor(rgb, _RGB_TO_YUV[encoding])
    elif (pattern := bayer_pattern(encoding)) is not None:
        out = _mosaic(pixels, color_order, pattern)
    else:  # rgb16 / bgr16
        out = _in_order(pixels, color_order, layout.color_order)
    if layout.bytes_per_channel == 2:  # x257 maps 0..255 onto 0..65535 exactly at both ends
        out = out.astype(np.uint16) * np.uint16(257)
        if bigendian:
            out = out.astype(">u2")
    return np.ascontiguousarray(out)


def frame_to_compressed(pixels: np.ndarray, color_order: str, encoding: str, header: Header,
                        compression: str = "jpeg", jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                        png_level: int = DEFAULT_PNG_LEVEL) -> CompressedImage:
    """Corrected pixels -> CompressedImage with `header`, encoded by encode_compressed."""
    fmt, buf = encode_compressed(pixels, color_order, encoding, compression, jpeg_quality, png_level)
    msg = CompressedImage()
    msg.header = header
    msg.format = fmt
    data = array.array("B")
    data.frombytes(buf)  # one memcpy into the message buffer
    msg.data = data
    return msg


def encode_compressed(pixels: np.ndarray, color_order: str, encoding: str, compression: str = "jpeg",
                      jpeg_quality: int = DEFAULT_JPEG_QUALITY,
                      png_level: int = DEFAULT_PNG_LEVEL) -> tuple[str, np.ndarray]:
    """Corrected pixels -> (CompressedImage format, encoded bytes as a uint8 array), as ROS 2 image_transport's
    `compressed` publisher writes an Image of `encoding`: grey encodings as mono, colour as bgr, 8-bit except
    16-bit encodings in png (x257, as on corrected/image); format "<encoding>; <jpeg|png> compressed
    <bgr8|mono8|bgr16|mono16>", whose first field image_transport's subscriber gives the decoded image. YUV
    encodings are named as what the data is (bgr8): that subscriber does not convert back to YUV and would label
    bgr data as yuv. Bayer encodings too, and their frame is coded in colour: JPEG of a mosaic would blur its
    2 x 2 pattern into false colour. The node and `illexp_bag process --compressed` both encode through here."""
    if compression not in COMPRESSED_FORMATS:
        raise ValueError(f"compression must be one of {', '.join(COMPRESSED_FORMATS)} (got {compression!r})")
    bits = 16 if compression == "png" and layout_of(encoding).bytes_per_channel == 2 else 8
    target = f"{'mono' if encoding in ('mono8', 'mono16') else 'bgr'}{bits}"
    values = frame_to_array(pixels, color_order, target)  # what corrected/image carries in that encoding
    if compression == "jpeg":
        ok, buf = cv2.imencode(".jpg", values, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    else:
        ok, buf = cv2.imencode(".png", values, [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)])
    if not ok:
        raise ImageFormatError(f"{compression} encoding of a {values.shape} {values.dtype} frame failed")
    named = target if encoding in _YUV_TO_RGB or bayer_pattern(encoding) else encoding
    return f"{named}; {compression} compressed {target}", buf.reshape(-1)


def _keep_border_samples(bgr: np.ndarray, raw: np.ndarray, pattern: str) -> None:
    """Put each border pixel's own sample back into its channel. OpenCV's demosaic copies the outermost rows and
    columns from their neighbours, so without this a mosaic read and written back unchanged would differ on its
    border; inside, every pixel keeps its own sample."""
    h, w = raw.shape
    for dy, dx, ch in _bayer_sites(pattern):
        for y in {0, h - 1}:
            if y % 2 == dy:
                bgr[y, dx::2, ch] = raw[y, dx::2]
        for x in {0, w - 1}:
            if x % 2 == dx:
                bgr[dy::2, x, ch] = raw[dy::2, x]


def _mosaic(pixels: np.ndarray, color_order: str, pattern: str) -> np.ndarray:
    """H x W x 3 -> H x W: each pixel keeps the channel its filter passes in the 2 x 2 `pattern`."""
    out = np.empty(pixels.shape[:2], np.uint8)
    for dy, dx, ch in _bayer_sites(pattern):
        out[dy::2, dx::2] = pixels[dy::2, dx::2, ch if color_order == "bgr" else 2 - ch]
    return out


def _grey(pixels: np.ndarray, color_order: str) -> np.ndarray:
    code = cv2.COLOR_RGB2GRAY if color_order == "rgb" else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(np.ascontiguousarray(pixels), code)


def packed_step(values: np.ndarray) -> int:
    """Bytes per row of a C-contiguous H x W [x C] array. Not strides[0]: numpy calls a one-row slice of a wider
    array contiguous whatever its row stride, and the message's data holds only the row itself."""
    return int(values.shape[1] * values.itemsize * (values.shape[2] if values.ndim == 3 else 1))


def array_to_image(values: np.ndarray, encoding: str, header: Header, bigendian: bool = False) -> Image:
    """A contiguous array in `encoding` layout -> Image with `header` (stamp and frame_id kept as given)."""
    values = np.ascontiguousarray(values)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(values.shape[0]), int(values.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(bool(bigendian) and values.dtype.itemsize == 2)
    msg.step = packed_step(values)
    data = array.array("B")
    data.frombytes(values.reshape(-1).view(np.uint8))  # one memcpy into the message buffer
    msg.data = data
    return msg


def frame_to_image(pixels: np.ndarray, color_order: str, encoding: str, header: Header,
                   alpha: np.ndarray | None = None, bigendian: bool = False) -> Image:
    """Corrected pixels -> Image in `encoding` with `header`."""
    values = frame_to_array(pixels, color_order, encoding, alpha, bigendian)
    return array_to_image(values, encoding, header, bigendian)
