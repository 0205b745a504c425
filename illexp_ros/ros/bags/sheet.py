"""`illexp_bag sheet`: a contact sheet of a bag's images, one column per sampled frame and one row each for
the input ("before"), the corrected frame ("after") and the exposure map the attention network predicts."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from illexp_ros.ros.bags.images import ImageFormatError, message_to_frame, stamp_ns
from illexp_ros.ros.bags.source import BagError, checked_messages, decode_message, image_connections, open_bag

LABEL_WIDTH = 120
HEADER_HEIGHT = 24
GAP = 4
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def evenly_spaced(total: int, count: int) -> list[int]:
    """`count` indices spread over range(total), first and last included."""
    if total <= 0 or count <= 0:
        return []
    if count >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)}) if count > 1 else [total // 2]


def read_frames(path: str | Path, topic: str, count: int) -> list[tuple[int, np.ndarray]]:
    """`count` evenly spaced frames of `topic` as (header stamp ns, RGB uint8). A sampled frame that cannot be read
    is said on stderr and replaced by the next one unless that one is sampled too (as the node and `process` skip
    such frames); BagError if no
    sampled frame or its followers can be read."""
    path = Path(path)
    first_problem = ""
    with open_bag(path) as reader:
        conns = image_connections(reader, path, topic)
        wanted = set(evenly_spaced(sum(c.msgcount for c in conns), count))
        frames = []
        for i, (conn, timestamp, data) in enumerate(checked_messages(reader, path, conns)):
            if i not in wanted:
                continue
            try:
                msg = decode_message(reader, data, conn, path)
                frame = message_to_frame(msg, conn.msgtype)
            except (BagError, ImageFormatError) as exc:
                first_problem = first_problem or str(exc)
                print(f"illexp_bag sheet: skipped the {topic} message at t={timestamp} ns: {exc}", file=sys.stderr)
                wanted.add(i + 1)  # the next frame stands in for it
                continue
            rgb = frame.pixels if frame.color_order == "rgb" else frame.pixels[..., ::-1]
            frames.append((stamp_ns(msg.header), np.ascontiguousarray(rgb)))
    if not frames:
        raise BagError(f"no frame on {topic} in {path} could be read (the first problem: {first_problem})")
    return frames


def colorize_map(exposure_map: np.ndarray) -> np.ndarray:
    """H x W uint8 exposure map (0 = well exposed) -> RGB with the inferno colour map."""
    return cv2.applyColorMap(exposure_map, cv2.COLORMAP_INFERNO)[..., ::-1]


def render_sheet(rows: Sequence[tuple[str, Sequence[np.ndarray]]], out: str | Path,
                 column_titles: Sequence[str] = (), thumb_width: int = 240) -> Path:
    """Lay out RGB uint8 images (H x W x 3, or H x W for grey) in labelled rows and write a PNG/JPEG."""
    if not rows or not rows[0][1]:
        raise ValueError("render_sheet needs at least one row with one image")
    first = rows[0][1][0]
    # cells take the first frame's shape, within 1:4..2:1 (a 97 x 1 frame made a sheet 23000 px tall)
    thumb_h = min(max(round(first.shape[0] * thumb_width / first.shape[1]), thumb_width // 4), 2 * thumb_width)
    n_cols = max(len(images) for _, images in rows)
    top = HEADER_HEIGHT if column_titles else GAP
    height = top + len(rows) * (thumb_h + GAP)
    width = LABEL_WIDTH + n_cols * (thumb_width + GAP)
    sheet = np.full((height, width, 3), BACKGROUND, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for c, title in enumerate(column_titles):
        x = LABEL_WIDTH + c * (thumb_width + GAP)
        cv2.putText(sheet, title, (x + 4, HEADER_HEIGHT - 7), font, 0.45, TEXT, 1, cv2.LINE_AA)
    for r, (label, images) in enumerate(rows):
        y = top + r * (thumb_h + GAP)
        cv2.putText(sheet, label, (8, y + thumb_h // 2 + 5), font, 0.5, TEXT, 1, cv2.LINE_AA)
        for c, img in enumerate(images):
            img = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img
            x = LABEL_WIDTH + c * (thumb_width + GAP)
            # kept in shape (a frame of another size on the topic was squashed into the first one's cell)
            w = max(1, min(thumb_width, round(img.shape[1] * thumb_h / img.shape[0])))
            h = max(1, min(thumb_h, round(img.shape[0] * thumb_width / img.shape[1])))
            dx, dy = (thumb_width - w) // 2, (thumb_h - h) // 2
            sheet[y + dy:y + dy + h, x + dx:x + dx + w] = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Encoded here and written by Python: cv2.imwrite into a folder it cannot write printed its own WARN line
    # before ours, and said nothing of why.
    try:
        encoded, data = cv2.imencode(out.suffix, sheet[..., ::-1])
    except cv2.error:
        encoded = False
    if not encoded:
        raise BagError(f"cannot write {out} (use a .png or .jpg name)")
    try:
        out.write_bytes(data.tobytes())
    except OSError as exc:
        raise BagError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out


def sheet_command(path: str | Path, topic: str, out: str | Path, frames: int,
                  make_enhancer: Callable[[], Any], exposure_compensation: float = 0.0,
                  strength: float = 1.0) -> Path:
    """Sample `frames` images of `topic`, correct them and write the before / after / exposure-map sheet.
    `strength` and `exposure_compensation` (stops) are applied to "after" as the node applies its parameters. The
    node's level smoothing is not: it restarts after a pause of a second, and sampled frames are usually further
    apart."""
    if frames < 1:
        raise BagError(f"--frames must be >= 1, got {frames}")
    from illexp_ros.runtime.correction_strength import apply_strength, check_strength
    from illexp_ros.runtime.exposure_compensation import check_stops, compensate_exposure

    try:
        stops = check_stops(exposure_compensation)
        strength = check_strength(strength)
    except ValueError as exc:
        raise BagError(str(exc)) from exc
    if Path(out).suffix.lower() not in IMAGE_SUFFIXES:
        raise BagError(f"cannot write {out}: the sheet must be a {' or '.join(IMAGE_SUFFIXES)} file")
    sampled = read_frames(path, topic, frames)
    enhancer = make_enhancer()
    befores, afters, maps = [], [], []
    for _, rgb in sampled:
        corrected, exposure_map = enhancer.enhance_with_map(rgb, color_order="rgb")
        befores.append(rgb)
        afters.append(compensate_exposure(apply_strength(rgb, corrected, strength), stops))
        maps.append(colorize_map(exposure_map))
    t0 = sampled[0][0]
    titles = [f"t = {(stamp - t0) / 1e9:.2f} s" for stamp, _ in sampled]
    return render_sheet([("before", befores), ("after", afters), ("exposure map", maps)], out, titles)
