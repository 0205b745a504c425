"""Opening a bag for reading (rosbags AnyReader) and finding its image topic, with one-line errors.

A ROS 2 bag (directory, or one .mcap / .db3 file) or a ROS 1 bag (one .bag file): rosbags reads both. Messages of
a ROS 1 bag are ROS 1 serialized; `cdr_converter` turns them into the CDR bytes a ROS 2 subscriber or bag expects.

Every failure a user can cause (wrong path, not a bag, corrupt file, empty bag, wrong topic) becomes a
BagError whose message is the single line the command-line tools print before exiting with status 2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from rosbags.highlevel import AnyReader
from rosbags.interfaces import Connection
from rosbags.typesys import Stores, get_typestore

from illexp_ros.ros.bags.images import IMAGE_TYPES


class BagError(Exception):
    """A bag that cannot be used as asked; the message is one line naming the bag and the problem."""


def is_ros1_bag(path: Path) -> bool:
    return Path(path).is_file() and Path(path).suffix == ".bag"


def storage_of(path: Path) -> str:
    """'mcap' or 'sqlite3': the storage plugin a bag (directory or single file) uses; for a ROS 1 bag, the
    storage a ROS 2 copy of it gets by default: mcap, rosbag2's default since Iron."""
    path = Path(path)
    if is_ros1_bag(path):
        return "mcap"
    if path.is_dir():  # its metadata says, also for file-compressed storage (x.mcap.zstd)
        try:
            info = yaml.safe_load((path / "metadata.yaml").read_text(encoding="utf-8"))
            storage = info["rosbag2_bagfile_information"]["storage_identifier"]
        except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
            storage = None  # open_bag says what is wrong with the bag
        if storage in ("mcap", "sqlite3"):
            return storage
    files = [path] if path.is_file() else sorted(path.iterdir())
    if any(".mcap" in f.suffixes for f in files):
        return "mcap"
    return "sqlite3"


@contextmanager
def open_bag(path: str | Path) -> Iterator[AnyReader]:
    """An open AnyReader on a ROS 2 bag directory (or a single .mcap / .db3 file) or a ROS 1 .bag file."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag not found: {path}")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a ROS 2 bag: no metadata.yaml in it")
    try:
        # Bags of Humble and before (sqlite3, metadata version <= 7) hold no message definitions: read them with
        # Humble's (sensor_msgs' Image and CompressedImage are the same in every distro since).
        reader = AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises many types (ReaderError, sqlite3, yaml, struct)
        raise BagError(f"cannot read bag {path}: {one_line(exc)}") from exc
    try:
        yield reader
    finally:
        reader.close()


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def check_topic_name(name: str, option: str) -> None:
    """BagError unless `name` (absolute, or relative to /) is a topic name ROS 2 accepts: a bag written with
    another one cannot be played, and rclpy refuses to publish it. rclpy's own rules, imported only here."""
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_full_topic_name import validate_full_topic_name

    try:
        validate_full_topic_name(name if name.startswith("/") else f"/{name}")
    except InvalidTopicNameException as exc:
        reason = str(exc).splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
        raise BagError(f"{option} {name!r} is not a valid ROS 2 topic name: {reason}") from None


def image_connections(reader: AnyReader, path: Path, topic: str) -> list[Connection]:
    """The connections of `topic`; BagError if the bag is empty, lacks the topic or it holds no images."""
    return typed_connections(reader, path, topic, IMAGE_TYPES, "image", "sensor_msgs/Image or CompressedImage")


def typed_connections(reader: AnyReader, path: Path, topic: str, msgtypes: tuple[str, ...], kind: str,
                      expected: str) -> list[Connection]:
    """The connections of `topic`; BagError if the bag is empty, lacks the topic (the error lists the bag's
    `kind` topics, those of `msgtypes`), holds another type (`expected` names the right ones) or no messages."""
    if reader.message_count == 0 or not reader.connections:
        raise BagError(f"bag {path} is empty (no messages)")
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        there = {c.topic: c.msgtype for c in reader.connections if c.msgtype in msgtypes}
        found = ", ".join(f"{t} ({m.split('/')[-1]})" for t, m in sorted(there.items()))
        raise BagError(f"topic {topic} not in bag {path}; {kind} topics there: {found or 'none'}")
    bad = {c.msgtype for c in conns} - set(msgtypes)
    if bad:
        raise BagError(f"topic {topic} in {path} carries {', '.join(sorted(bad))}, not {expected}")
    if sum(c.msgcount for c in conns) == 0:
        raise BagError(f"topic {topic} in bag {path} has no messages")
    return conns


def checked_messages(reader: AnyReader, path: Path, connections: list[Connection] | None = None
                     ) -> Iterator[tuple[Connection, int, bytes]]:
    """reader.messages(), with read errors (a truncated or corrupt storage file) turned into BagError."""
    it = reader.messages(connections=connections or ())
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - see open_bag
            raise BagError(f"cannot read bag {path}: {one_line(exc)}") from exc
        yield item


def decode_message(reader: AnyReader, data: bytes, conn: Connection, path: Path) -> Any:
    """Deserialise with the bag's own message definitions (they may come from another ROS distribution)."""
    try:
        return reader.deserialize(data, conn.msgtype)
    except Exception as exc:  # noqa: BLE001 - a corrupt payload
        raise BagError(f"corrupt {conn.msgtype} message on {conn.topic} in {path}: {one_line(exc)}") from exc


def cdr_converter(reader: AnyReader, conn: Connection) -> Callable[[bytes | memoryview], bytes]:
    """Serialized message of `conn` -> the CDR bytes of the same message in the Kilted type store: the identity
    for a ROS 2 bag, rosbags' ROS 1 -> CDR conversion (std_msgs/Header loses its seq) for a ROS 1 bag. For the
    image types, whose Kilted definitions match ROS 1's apart from the header."""
    if reader.is2:
        return bytes
    from illexp_ros.ros.bags.images import TYPESTORE

    def convert(data: bytes | memoryview) -> bytes:
        try:
            return bytes(TYPESTORE.ros1_to_cdr(data, conn.msgtype))
        except Exception as exc:  # noqa: BLE001 - a corrupt payload
            raise BagError(f"corrupt ROS 1 {conn.msgtype} message on {conn.topic}: {one_line(exc)}") from exc

    return convert
