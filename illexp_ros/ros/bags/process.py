"""`illexp_bag process`: copy a bag (ROS 2, or ROS 1 converted to ROS 2) and add a corrected Image for every
image on one topic.

Every original message is written back as the raw serialized bytes read from IN, on a connection with the
same topic, type, message definition, type hash, serialization format and offered QoS profiles, at the same
bag timestamp. A ROS 1 bag's messages are converted as `rosbags-convert` converts them (Kilted message types,
CDR; the header's seq, which ROS 2 lacks, is dropped) and OUT is a ROS 2 bag (mcap unless --storage says so).
The corrected frames go to `<topic>/corrected` (sensor_msgs/Image, header copied from the
input message, same bag timestamp, the input topic's QoS), through the node's level smoothing (its
`level_smoothing` parameter, runtime/level_smoothing.py) with the bag timestamps as the frames' times and its
exposure compensation, so with the node's mode and fast setting it gives what the node would have published.
With `compressed` ("jpeg" or "png"), each corrected frame is also written to `<corrected topic>/compressed` as
sensor_msgs/CompressedImage, encoded as the node's corrected/image/compressed is (image_conversion.
encode_compressed: image_transport's format string, jpeg_quality / png_level as its parameters), so a bag of
compressed camera frames can stay small.

With `right_topic` (`--right-topic`), `topic` and `right_topic` are a stereo camera's left and right views,
corrected as illexp_stereo_node corrects them: views paired by header.stamp (ros/node/stereo_pairing.py, exact
or within `sync_tolerance_s`; up to `sync_queue_size` frames of a view wait for their partner, so a view logged
late still pairs), both on one route, scaled to one shared level smoothed across pairs (runtime/stereo_level.py);
each view's corrected frames go to `<its topic>/<out_suffix>` (default `corrected`), written when the pair is
complete. A view whose partner is not in the bag is copied, not corrected, and counted.

OUT is written inside a hidden work directory beside it and renamed into place only when complete, so an
interrupted run (Ctrl-C, SIGTERM, SIGKILL, a crash) never leaves a half-written OUT. Work directories left
by killed runs are removed by the next run on the same OUT.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import TypesysError
from tqdm import tqdm

from illexp_ros.ros.bags.images import (
    COMPRESSED_TYPE,
    IMAGE_TYPE,
    TYPESTORE,
    ImageFormatError,
    frame_to_compressed,
    frame_to_image,
    message_to_frame,
    output_encoding,
    serialize,
)
from illexp_ros.ros.bags.source import (
    BagError,
    check_topic_name,
    checked_messages,
    decode_message,
    image_connections,
    one_line,
    open_bag,
    storage_of,
)
from illexp_ros.ros.node.image_conversion import (
    COMPRESSED_FORMATS,
    DEFAULT_JPEG_QUALITY,
    DEFAULT_PNG_LEVEL,
    JPEG_QUALITY_RANGE,
    PNG_LEVEL_RANGE,
)
from illexp_ros.ros.node.stereo_pairing import MAX_SYNC_QUEUE, MAX_SYNC_TOLERANCE_S, StampPairer

BAG_VERSION = 9  # rosbag2 metadata version written by Jazzy / Kilted
STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
PARTIAL_TAG = ".partial-"
DEFAULT_SYNC_QUEUE = 30  # frames of a view that wait for their partner: offline, a view logged 1 s late still pairs
SHOWN_REJECTIONS = 5  # frames that cannot be read are each said on stderr up to this many, then counted


class FrameEnhancer(Protocol):
    def enhance(self, frame: Any, color_order: str = "rgb") -> Any: ...

    # stereo only (--right-topic): the views of one pair on one route, as runtime.Enhancer.enhance_views
    def enhance_views(self, frames: list[Any], color_orders: list[str]) -> list[tuple[Any, Any]]: ...


@dataclass
class ProcessSummary:
    out: Path
    frames: int
    messages: int
    seconds: float
    storage: str
    compressed: str | None = None
    rejected: int = 0  # frames of the topic that could not be read: copied as they are, not corrected
    unpaired: int = 0  # stereo: views whose partner is not in the bag, copied as they are, not corrected

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        also = f", also as {self.compressed}" if self.compressed else ""
        skipped = (f", {self.rejected} unreadable frame{'s' if self.rejected > 1 else ''} copied but not corrected"
                   if self.rejected else "")
        if self.unpaired:
            skipped += (f", {self.unpaired} view{'s' if self.unpaired > 1 else ''} without a partner copied but not "
                        "corrected")
        return (f"wrote {self.out} ({self.storage}): {self.messages} messages copied, {self.frames} frames "
                f"corrected{also}{skipped} in {self.seconds:.1f} s ({self.fps:.1f} FPS)")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_work_dirs(out: Path) -> None:
    """Delete work directories of earlier runs on `out` whose process is gone (SIGKILL, power loss)."""
    for work in out.parent.glob(glob.escape(f".{out.name}{PARTIAL_TAG}") + "*"):  # OUT's name may hold [ * ?
        pid_text = work.name.rsplit(PARTIAL_TAG, 1)[-1]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(work, ignore_errors=True)


def check_replaceable(out: Path, force: bool) -> None:
    """BagError unless OUT is free to write: absent or, with --force, a bag (a folder with metadata.yaml) or an
    empty folder, and neither the working folder nor one above it. --force once replaced whatever it was given:
    `.` (then failed on the vanished working folder), a folder of notes, a file."""
    if not out.exists() and not out.is_symlink():
        return
    if not force:
        raise BagError(f"{out} exists; pass --force to overwrite it")
    resolved, cwd = out.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise BagError(f"OUT ({out}) is the working folder or holds it; not replaced")
    if not (resolved.is_dir() and ((resolved / "metadata.yaml").is_file() or not any(resolved.iterdir()))):
        raise BagError(f"{out} exists and is not a bag (a folder with metadata.yaml); --force replaces only a bag")


@contextmanager
def atomic_output(out: Path, force: bool) -> Iterator[Path]:
    """Yields a path to write the bag to; on success it becomes `out`, on any exception nothing is left."""
    out = Path(os.path.abspath(out))
    check_replaceable(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_work_dirs(out)
    work = out.parent / f".{out.name}{PARTIAL_TAG}{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        staged = work / out.name  # storage files are named after the bag directory: stage as OUT's name
        yield staged
        if out.exists():  # --force: move the old OUT aside first (a directory cannot be replaced in one step)
            os.replace(out, work / "previous")
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def process_bag(in_path: str | Path, out_path: str | Path, topic: str,
                make_enhancer: Callable[[], FrameEnhancer], out_topic: str | None = None,
                storage: str | None = None, force: bool = False, progress: bool = True,
                level_smoothing: float = 0.0, exposure_compensation: float = 0.0, strength: float = 1.0,
                compressed: str | None = None,
                jpeg_quality: int = DEFAULT_JPEG_QUALITY, png_level: int = DEFAULT_PNG_LEVEL,
                right_topic: str | None = None, sync_tolerance_s: float = 0.0,
                sync_queue_size: int = DEFAULT_SYNC_QUEUE, out_suffix: str = "corrected") -> ProcessSummary:
    """Copy IN to OUT adding corrected frames; raises BagError on bad input (see the module docstring)."""
    in_path, out_path = Path(in_path), Path(out_path)
    if right_topic is not None:
        if out_topic is not None:
            raise BagError("--out-topic names one view's output; with --right-topic the corrected views go to "
                           "<topic>/SUFFIX and <right-topic>/SUFFIX (--out-suffix, default corrected)")
        if right_topic.rstrip("/") == topic.rstrip("/"):
            raise BagError(f"--right-topic must be another topic than --topic ({topic})")
        if not 0.0 <= sync_tolerance_s <= MAX_SYNC_TOLERANCE_S:  # also refuses nan
            raise BagError(f"--sync-tolerance must be in [0, {MAX_SYNC_TOLERANCE_S:g}] s, got {sync_tolerance_s}")
        if not 1 <= sync_queue_size <= MAX_SYNC_QUEUE:
            raise BagError(f"--sync-queue-size must be in [1, {MAX_SYNC_QUEUE}], got {sync_queue_size}")
        if not out_suffix.strip("/"):
            raise BagError("--out-suffix must not be empty")
    views = [topic] if right_topic is None else [topic, right_topic]
    out_topics = [out_topic or f"{view.rstrip('/')}/{out_suffix.strip('/')}" for view in views]
    for name in out_topics:
        check_topic_name(name, "--out-topic" if right_topic is None else "--out-suffix")
    # rosbag2 stores full names; a relative one written as given would be another topic than its /-twin
    out_topics = [name if name.startswith("/") else f"/{name}" for name in out_topics]
    compressed_topics = [f"{name.rstrip('/')}/compressed" if compressed else None for name in out_topics]
    if storage is not None and storage not in STORAGES:
        raise BagError(f"--storage must be one of {', '.join(STORAGES)}, got {storage!r}")
    check_compression(compressed, jpeg_quality, png_level)
    if in_path.exists():
        resolved_in, resolved_out = in_path.resolve(), out_path.resolve()
        if resolved_in == resolved_out:
            raise BagError(f"OUT must differ from IN ({in_path})")
        if resolved_out in resolved_in.parents:  # replacing OUT (--force) would delete IN
            raise BagError(f"OUT ({out_path}) must not contain IN ({in_path})")
        if resolved_in in resolved_out.parents:  # with --force, one of IN's own files would be replaced
            raise BagError(f"OUT ({out_path}) must not be inside IN ({in_path})")
    check_replaceable(out_path, force)  # checked again when OUT is created; this one is before model loading
    with open_bag(in_path) as reader:
        view_conns = [image_connections(reader, in_path, view) for view in views]
        for new_topic in filter(None, out_topics + compressed_topics):
            if any(c.topic == new_topic for c in reader.connections):
                raise BagError(f"bag {in_path} already has topic {new_topic}; choose another "
                               f"{'--out-topic' if right_topic is None else '--out-suffix'}")
        storage = storage or storage_of(in_path)
        n_images = sum(c.msgcount for conns in view_conns for c in conns)
        # the runtime, once the bag checks out
        from illexp_ros.runtime.correction_strength import apply_strength, check_strength
        from illexp_ros.runtime.enhancer import CORRECTION_OFF, output_is_the_input
        from illexp_ros.runtime.exposure_compensation import check_stops, compensate_exposure, compensation_factor
        from illexp_ros.runtime.level_smoothing import LevelSmoother
        from illexp_ros.runtime.stereo_level import stereo_gain_changes

        smoother = LevelSmoother(level_smoothing)
        try:
            stops = check_stops(exposure_compensation)
            strength = check_strength(strength)
        except ValueError as exc:
            raise BagError(str(exc)) from exc
        enhancer = make_enhancer()
        start = time.perf_counter()
        frames = messages = 0
        pairer = StampPairer(round(sync_tolerance_s * 1e9), sync_queue_size) if right_topic else None
        unpaired = 0
        rejected, first_problem = 0, ""  # frames of the topic that could not be read, and why the first one
        unsaid: list[str] = []  # lines about them not printed yet
        with atomic_output(out_path, force) as staged:
            with Writer(staged, version=BAG_VERSION, storage_plugin=STORAGES[storage]) as writer:
                copy = _copy_connections(reader, writer) if reader.is2 else _convert_connections(reader, writer)
                qos = list(copy[view_conns[0][0].id][0].ext.offered_qos_profiles)
                corrected = [writer.add_connection(name, IMAGE_TYPE, typestore=TYPESTORE, offered_qos_profiles=qos)
                             for name in out_topics]
                coded = [writer.add_connection(name, COMPRESSED_TYPE, typestore=TYPESTORE, offered_qos_profiles=qos)
                         if name else None for name in compressed_topics]

                def write_corrected(view: int, timestamp: int, msg: Any, msgtype: str, frame: Any, out: Any,
                                    route: str | None, change: float) -> None:
                    """One corrected frame of view `view` (and its compressed form), as the node publishes it."""
                    encoding = output_encoding(msg, msgtype)
                    if output_is_the_input(route, compensation_factor(stops) * change) and msgtype == IMAGE_TYPE:
                        # unchanged: the input itself, every bit (an 8-bit copy would cut 16-bit frames)
                        writer.write(corrected[view], timestamp, serialize(msg))
                    else:
                        out = compensate_exposure(out, stops, gain=change)  # one pass, as the node
                        image = frame_to_image(out, frame.color_order, encoding, msg.header, alpha=frame.alpha,
                                               bigendian=bool(getattr(msg, "is_bigendian", 0)))
                        writer.write(corrected[view], timestamp, serialize(image))
                    if coded[view] is not None:
                        writer.write(coded[view], timestamp, serialize(frame_to_compressed(
                            out, frame.color_order, encoding, msg.header, compressed, jpeg_quality, png_level)))

                bar = tqdm(total=n_images, unit="frame", desc=f"correcting {' and '.join(views)}",
                           disable=not progress)
                with bar:
                    for conn, timestamp, data in checked_messages(reader, in_path):
                        out_conn, to_cdr = copy[conn.id]
                        try:
                            writer.write(out_conn, timestamp, to_cdr(data))
                        except BagError:
                            raise
                        except Exception as exc:  # noqa: BLE001 - rosbags' conversion of a corrupt payload
                            raise BagError(f"corrupt {conn.msgtype} message on {conn.topic} at t={timestamp} ns "
                                           f"in {in_path}: {one_line(exc)}") from exc
                        messages += 1
                        if conn.topic not in views:
                            continue
                        view = views.index(conn.topic)
                        try:
                            msg = decode_message(reader, data, conn, in_path)
                            frame = message_to_frame(msg, conn.msgtype)
                            if pairer is not None and not (msg.header.stamp.sec or msg.header.stamp.nanosec):
                                raise ImageFormatError("no header.stamp: the views of a pair are matched by stamp")
                        except (BagError, ImageFormatError) as exc:
                            # As the node: a bad frame is said and counted, and the next one is processed; its
                            # message is already copied, so nothing of IN is lost.
                            rejected += 1
                            first_problem = first_problem or str(exc)
                            if rejected <= SHOWN_REJECTIONS:
                                unsaid.append(f"illexp_bag process: skipped the {conn.topic} message at "
                                              f"t={timestamp} ns (copied, not corrected): {exc}")
                            if frames:  # else held back: if no frame can be read, one error line says it all
                                _say(unsaid)
                            bar.update(1)
                            continue
                        if pairer is None:
                            if strength == 0.0:  # the correction off: the network is not run, as in the node
                                out, route = frame.pixels.copy(), CORRECTION_OFF
                            else:
                                out = apply_strength(frame.pixels, enhancer.enhance(
                                    frame.pixels, color_order=frame.color_order), strength)
                                route = getattr(enhancer, "last_route", None)
                            change = smoother.gain_change(frame.pixels, out, timestamp * 1e-9, route)
                            write_corrected(0, timestamp, msg, conn.msgtype, frame, out, route, change)
                            frames += 1
                        else:
                            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                            pairing = pairer.add(view, stamp, (timestamp, msg, conn.msgtype, frame))
                            unpaired += pairing.unpaired
                            if pairing.pair is not None:
                                pair = pairing.pair
                                pixels = [p[3].pixels for p in pair]
                                if strength == 0.0:
                                    outs, route = [p.copy() for p in pixels], CORRECTION_OFF
                                else:
                                    results = enhancer.enhance_views(pixels, [p[3].color_order for p in pair])
                                    outs = [apply_strength(p, out, strength) for p, (out, _) in zip(pixels, results)]
                                    route = getattr(enhancer, "last_route", None)
                                shared = stereo_gain_changes(smoother, pixels, outs, pair[0][0] * 1e-9, route)
                                for side, (ts, view_msg, msgtype, view_frame), out, change in zip(
                                        (0, 1), pair, outs, shared.changes):
                                    write_corrected(side, ts, view_msg, msgtype, view_frame, out, route, change)
                                frames += 2
                        if frames:  # else held back, as above
                            _say(unsaid)
                        bar.update(1)
                if pairer is not None:
                    unpaired += pairer.clear()
            if rejected and not frames:  # nothing to add: a wrong topic or encoding, not a few bad frames
                raise BagError(f"no frame on {' or '.join(views)} in {in_path} could be corrected ({rejected} "
                               f"rejected; the first: {first_problem})")
            if pairer is not None and not frames and unpaired:
                raise BagError(f"no pair of views on {topic} and {right_topic} in {in_path}: their header stamps "
                               f"never match (--sync-tolerance {sync_tolerance_s:g} s)")
        if rejected > SHOWN_REJECTIONS:
            print(f"illexp_bag process: {rejected - SHOWN_REJECTIONS} more frames skipped", file=sys.stderr)
        return ProcessSummary(Path(os.path.abspath(out_path)), frames, messages,
                              time.perf_counter() - start, storage, compressed, rejected, unpaired)


def _say(lines: list[str]) -> None:
    """Print and forget `lines` (on stderr, above the progress bar)."""
    for line in lines:
        tqdm.write(line, file=sys.stderr)
    lines.clear()


def check_compression(compressed: str | None, jpeg_quality: int, png_level: int) -> None:
    """BagError unless the compressed output's settings are in the ranges of the node's parameters."""
    if compressed is not None and compressed not in COMPRESSED_FORMATS:
        raise BagError(f"--compressed must be one of {', '.join(COMPRESSED_FORMATS)}, got {compressed!r}")
    if not JPEG_QUALITY_RANGE[0] <= jpeg_quality <= JPEG_QUALITY_RANGE[1]:
        raise BagError(f"--jpeg-quality must be in {JPEG_QUALITY_RANGE[0]}..{JPEG_QUALITY_RANGE[1]}, "
                       f"got {jpeg_quality}")
    if not PNG_LEVEL_RANGE[0] <= png_level <= PNG_LEVEL_RANGE[1]:
        raise BagError(f"--png-level must be in {PNG_LEVEL_RANGE[0]}..{PNG_LEVEL_RANGE[1]}, got {png_level}")


def _convert_connections(reader: Any, writer: Writer) -> dict[int, tuple[Any, Callable[[Any], Any]]]:
    """A ROS 1 bag: input connection id -> (output connection, ROS 1 -> CDR converter), made by rosbags'
    converter (what `rosbags-convert` does): Kilted definitions for the types Kilted has (fields migrated where
    they differ, e.g. CameraInfo's D/K/R/P), the bag's own definitions for the rest, latched topics as
    transient-local. Its own type store, since unknown types get registered in it."""
    from rosbags.convert.converter import create_connections_converters
    from rosbags.typesys import Stores, get_typestore

    connmap, convmap = create_connections_converters(reader.connections, get_typestore(Stores.ROS2_KILTED),
                                                     reader, writer)
    return {c.id: (connmap[(c.id, c.owner)], convmap[c.msgtype]) for c in reader.connections}


def _copy_connections(reader: Any, writer: Writer) -> dict[int, tuple[Any, Callable[[Any], Any]]]:
    """Input connection id -> (output connection with the same topic, type, definition, hash and QoS, identity)."""
    out: dict[int, Any] = {}
    by_key: dict[tuple, Any] = {}
    for conn in reader.connections:
        ext = conn.ext
        key = (conn.topic, conn.msgtype, ext.serialization_format, repr(ext.offered_qos_profiles))
        if key in by_key:  # the same topic split over several storage files: one output connection
            out[conn.id] = by_key[key]
            continue
        has_def = bool(conn.msgdef.data) and bool(conn.digest)
        try:
            new = writer.add_connection(
                conn.topic, conn.msgtype,
                msgdef=conn.msgdef.data if has_def else None,
                rihs01=conn.digest if has_def else None,
                typestore=None if has_def else reader.typestore,
                serialization_format=ext.serialization_format,
                offered_qos_profiles=list(ext.offered_qos_profiles))
        except TypesysError as exc:  # a bag without definitions (Humble or before) and a type of its own
            raise BagError(f"{conn.topic} has type {conn.msgtype}, which the bag does not define (bags of Humble "
                           "and before store no definitions) and which is no standard ROS 2 type: its messages "
                           "cannot be copied") from exc
        by_key[key] = out[conn.id] = new
    return {cid: (conn, _same_bytes) for cid, conn in out.items()}


def _same_bytes(data: Any) -> Any:
    return data
