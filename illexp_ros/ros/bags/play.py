"""`illexp_bag play`: publish a bag's messages on one topic over DDS at their recorded pace.

`--also TOPIC[:=NAME]` (repeatable) plays further topics of the bag, of any type rclpy has installed, in bag
order with the images: a stereo camera's second view and its camera_info, for illexp_stereo_node, or /tf.

The bag's serialized bytes are published as they are (rclpy's raw publish), so what subscribers get is exactly
what was recorded, headers included (a ROS 1 bag's messages are converted to CDR first; the header's seq, which
ROS 2 does not have, is dropped). rclpy is imported inside the functions that need it: the rest of the bag
tool works on machines without a DDS set-up.

With `--clock HZ` it is also the ROS time source, as `ros2 bag play --clock`: rosgraph_msgs/Clock on /clock
with the bag's time, HZ times a second and at each message, so that nodes run with `use_sim_time:=true` see the
recording's time (their stamp ages, timers and diagnostics then follow the bag, also at --rate != 1).
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rosbags.interfaces import QosDurability

from illexp_ros.ros.bags.source import (
    BagError,
    cdr_converter,
    check_topic_name,
    checked_messages,
    image_connections,
    open_bag,
    typed_connections,
)

OnPublish = Callable[[int, bytes], None]  # (bag timestamp ns, serialized message)
OnClock = Callable[[int], None]  # bag time ns
Publish = Callable[[bytes], None]  # serialized message
DEFAULT_CLOCK_HZ = 40.0  # ros2 bag play --clock's default
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
# The history each publisher keeps (keep-last), as camera drivers and rosbag2's player (rclcpp's default of 10) do,
# not the node's depth 1: a reliable writer drops what it has not yet delivered when its history is full, and
# under load (measured: pairs at 30 Hz into a stereo node that manages ~12) depth 1 lost 15-23 % of the frames
# before they reached the node, depth 5 or 10 1-8 %. Subscribers still take only what their own depth keeps.
PLAY_HISTORY_DEPTH = 10


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    pkg, kind, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type {msgtype} is not installed for rclpy ({exc})") from exc


def topic_connections(reader: Any, path: Path, topic: str) -> list:
    """The connections of a topic of any type (--also); BagError if it is not in the bag."""
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        found = ", ".join(sorted({c.topic for c in reader.connections})) or "none"
        raise BagError(f"topic {topic} not in bag {path}; topics there: {found}")
    return conns


# What a ROS 1 bag's messages can be converted to: types whose Kilted definitions match ROS 1's apart from the
# header (source.cdr_converter); others (sensor_msgs/Range gained a field) would fail half-way through the play.
ROS1_PLAYABLE = frozenset({"sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage", CAMERA_INFO_TYPE})


def also_types(path: Path, topics: list[str]) -> list[tuple[str, bool]]:
    """(message type, whether it was recorded durable) of each --also topic; BagError for a topic that is not
    there, carries several types, or (a ROS 1 bag) has a type that cannot be converted. Durable: offered
    transient-local in a ROS 2 bag, latched in a ROS 1 bag (/tf_static): tf2's listener subscribes
    transient-local, and a volatile publisher never matches it."""
    with open_bag(path) as reader:
        conns = [topic_connections(reader, path, topic) for topic in topics]
        ros2 = reader.is2
    found = []
    for topic, topic_conns in zip(topics, conns):
        kinds = sorted({c.msgtype for c in topic_conns})
        if len(kinds) > 1:
            raise BagError(f"{topic} in {path} carries messages of {len(kinds)} types ({', '.join(kinds)}); play "
                           "publishes one type per topic")
        if not ros2 and kinds[0] not in ROS1_PLAYABLE:
            raise BagError(f"--also {topic}: {kinds[0]} messages of a ROS 1 bag are not converted here (only "
                           f"{', '.join(sorted(ROS1_PLAYABLE))}); convert the bag with rosbags-convert first")
        durable = any(getattr(c.ext, "latching", 0) for c in topic_conns) or any(
            q.durability == QosDurability.TRANSIENT_LOCAL for c in topic_conns
            for q in (getattr(c.ext, "offered_qos_profiles", None) or []) if hasattr(q, "durability"))
        found.append((kinds[0], durable))
    return found


def parse_also(text: str) -> tuple[str, str]:
    """'TOPIC' or 'TOPIC:=NAME' -> (the topic in the bag, the name to publish it on)."""
    topic, sep, name = text.partition(":=")
    if not topic or (sep and not name):
        raise BagError(f"--also {text!r}: give TOPIC or TOPIC:=NAME")
    return topic, name or topic


def topic_type(path: Path, topic: str, camera_info: str | None = None) -> str:
    """The message type of the image topic; BagError if it, or the camera_info topic if given, cannot be played."""
    with open_bag(path) as reader:
        if camera_info is not None:
            camera_info_connections(reader, path, camera_info)
        types = sorted({c.msgtype for c in image_connections(reader, path, topic)})
    if len(types) > 1:  # one publisher, one type: the other type's bytes would go out as garbage messages
        raise BagError(f"{topic} in {path} carries messages of {len(types)} types ({', '.join(types)}); play "
                       "publishes one type per topic: split the bag first (illexp_bag process handles both)")
    return types[0]


def camera_info_connections(reader: Any, path: Path, topic: str) -> list:
    """The connections of a CameraInfo topic; BagError if it is missing, empty or of another type."""
    return typed_connections(reader, path, topic, (CAMERA_INFO_TYPE,), "CameraInfo", "sensor_msgs/CameraInfo")


def check_rate(rate: float) -> None:
    if not 0 < rate < math.inf:  # also refuses nan
        raise BagError(f"--rate must be a number > 0, got {rate}")


def play_messages(path: str | Path, topic: str, publish: Publish, rate: float = 1.0,
                  loop: bool = False, on_publish: OnPublish | None = None,
                  should_stop: Callable[[], bool] = lambda: False, on_clock: OnClock | None = None,
                  clock_hz: float = DEFAULT_CLOCK_HZ, camera_info: tuple[str, Publish] | None = None,
                  also: list[tuple[str, Publish]] | tuple = ()) -> int:
    """Publish every message of the image topic `topic` with `publish`, paced by the bag timestamps divided
    by `rate`; with `camera_info` = (its topic in the bag, its publish), the camera's CameraInfo messages too,
    in bag order with the images; each (topic, publish) of `also` likewise, whatever its type.

    Returns how many images were published. The pace is held against a monotonic clock, so a slow
    publish call does not accumulate drift; a late message goes out at once. With `loop`, each pass after the
    first starts one mean image interval (the images' span / (images - 1); 1 s for a one-image bag) after the
    last message of the pass before, divided by `rate`, as if the recording went on: a bag's first
    and last frames do not go out back to back, and a one-message bag is not published as fast as the loop
    runs. `on_clock`, if given, gets the bag's current time at least `clock_hz` times a second while waiting,
    and each message's timestamp just before it is published (the time never lags a message).
    """
    check_rate(rate)
    if on_clock is not None and not clock_hz > 0:
        raise BagError(f"--clock must be > 0 Hz, got {clock_hz}")
    path = Path(path)
    published = 0
    next_pass = None  # monotonic time the next pass's first message is due (looping)
    while True:
        with open_bag(path) as reader:
            conns = image_connections(reader, path, topic)
            image_ids = {c.id for c in conns}
            publish_of = {c.id: publish for c in conns}
            if camera_info is not None:
                info_conns = camera_info_connections(reader, path, camera_info[0])
                publish_of |= {c.id: camera_info[1] for c in info_conns}
                conns = conns + info_conns
            for other_topic, other_publish in also:
                other_conns = topic_connections(reader, path, other_topic)
                publish_of |= {c.id: other_publish for c in other_conns}
                conns = conns + other_conns
            to_cdr = {c.id: cdr_converter(reader, c) for c in conns}  # a ROS 1 bag's messages become CDR
            wall0 = bag0 = last = first_image = last_image = None
            images = 0
            for conn, timestamp, raw in checked_messages(reader, path, conns):
                data = to_cdr[conn.id](raw)
                if should_stop():
                    return published
                if bag0 is None:  # late (a slow pass): start from now rather than burst to catch up
                    wall0, bag0 = max(next_pass or 0.0, time.monotonic()), timestamp
                due = wall0 + (timestamp - bag0) / 1e9 / rate
                while (delay := due - time.monotonic()) > 0:
                    if on_clock is None:
                        time.sleep(delay)
                        break
                    # before a pass's first message (looping) the time is that message's, not earlier
                    on_clock(min(timestamp, bag0 + max(0, round((time.monotonic() - wall0) * rate * 1e9))))
                    time.sleep(min(delay, 1.0 / clock_hz))
                if on_clock is not None:
                    on_clock(timestamp)
                publish_of[conn.id](bytes(data))
                last = timestamp
                if conn.id in image_ids:
                    first_image = timestamp if first_image is None else first_image
                    last_image, images = timestamp, images + 1
                    published += 1
                    if on_publish is not None:
                        on_publish(timestamp, bytes(data))
        if not loop or should_stop():
            return published
        if last is not None:
            # the images' mean interval: camera_info or --also topics (a 100 Hz /tf) must not shorten the gap
            interval_s = ((last_image - first_image) / 1e9 / (images - 1)
                          if images > 1 and last_image > first_image else 1.0)
            next_pass = wall0 + ((last - bag0) / 1e9 + interval_s) / rate


ACK_TIMEOUT_S = 5.0
# After --wait saw its subscribers: this publisher knows them, but they may not know it yet (discovery runs
# both ways), and what it sends before they do is lost (keep-last 1 history). 0.5 s covers it on this project's
# machines (measured: without it a stereo replay into illexp_stereo_node lost its first 1-4 pairs in 6 of 8 runs).
SETTLE_S = 0.5


def wait_for_subscribers(publisher: Any, timeout: float, count: int = 1) -> bool:
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() < count:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def clock_publisher(node: Any) -> OnClock:
    """A /clock publisher with rclcpp's ClockQoS (best effort, depth 1: what ROS time sources subscribe with);
    returns the function that publishes a bag time."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock

    publisher = node.create_publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))

    def publish_time(stamp_ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(stamp_ns, 1_000_000_000)
        publisher.publish(msg)
    return publish_time


def play_command(path: str | Path, topic: str, out_topic: str | None, rate: float, loop: bool, qos: str,
                 wait: float, clock_hz: float = 0.0, camera_info: str | None = None,
                 out_camera_info: str | None = None, also: list[str] | tuple = ()) -> int:
    """The CLI: a node 'illexp_bag_play' publishing `topic` (or `out_topic`) until the bag ends or Ctrl-C;
    with `camera_info`, that topic's CameraInfo too (on `out_camera_info` if given); each `also` entry
    ('TOPIC' or 'TOPIC:=NAME') that topic of the bag (on NAME if given); clock_hz > 0 also publishes the bag's
    time on /clock."""
    path = Path(path)
    check_rate(rate)  # said at once, not after DDS discovery and --wait
    msgtype = topic_type(path, topic, camera_info)  # validate the bag before touching DDS
    check_topic_name(out_topic or topic, "--out-topic" if out_topic else "--topic")
    published = [(out_topic or topic, "the images")]
    if camera_info is not None:
        check_topic_name(out_camera_info or camera_info, "--out-camera-info" if out_camera_info else "--camera-info")
        published.append((out_camera_info or camera_info, "the camera info"))
    extras = [parse_also(text) for text in also]
    played = [topic, *([camera_info] if camera_info is not None else [])]
    for bag_topic, _ in extras:
        if bag_topic in played:  # one connection, two publishers: its messages would go out on only one
            raise BagError(f"--also {bag_topic}: that topic is played already")
        played.append(bag_topic)
    extra_types = also_types(path, [bag_topic for bag_topic, _ in extras])
    for bag_topic, name in extras:
        check_topic_name(name, "--also")
        published.append((name, f"--also {bag_topic}"))
    if clock_hz > 0:
        published.append(("/clock", "the clock"))
    full = [(name if name.startswith("/") else f"/{name}", what) for name, what in published]
    for i, (name, what) in enumerate(full):
        for other_name, other in full[i + 1:]:
            if name == other_name:  # two types on one topic: DDS refuses the second, or its subscribers get both
                raise BagError(f"{what} and {other} would both go out on {name}: give them different topics")
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.signals import SignalHandlerOptions

    from illexp_ros.ros.node.qos import image_qos

    play_qos = image_qos(qos, PLAY_HISTORY_DEPTH)  # the `qos` reliability, with a camera driver's history

    # The tool's own handlers end it (tool.main). Its arguments are not ROS arguments: `--also A:=B` would be
    # read as a (deprecated) remapping rule.
    rclpy.init(args=[], signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node("illexp_bag_play")
        publisher = node.create_publisher(message_class(msgtype), out_topic or topic, play_qos)
        publishers = [publisher]
        infos = 0
        play_info = None
        if camera_info is not None:
            info_publisher = node.create_publisher(message_class(CAMERA_INFO_TYPE), out_camera_info or camera_info,
                                                   play_qos)
            publishers.append(info_publisher)

            def publish_info(data: bytes) -> None:
                nonlocal infos
                info_publisher.publish(data)
                infos += 1
            play_info = (camera_info, publish_info)
        also_counts = [0] * len(extras)
        also_publishers, play_also = [], []
        for i, ((bag_topic, name), (msgtype_i, durable)) in enumerate(zip(extras, extra_types)):
            extra_qos = play_qos
            if durable:  # as recorded: late subscribers (tf2's /tf_static listener) get what was sent
                extra_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                       durability=DurabilityPolicy.TRANSIENT_LOCAL)
            extra_publisher = node.create_publisher(message_class(msgtype_i), name, extra_qos)
            also_publishers.append(extra_publisher)

            def publish_extra(data: bytes, publisher=extra_publisher, i=i) -> None:
                publisher.publish(data)
                also_counts[i] += 1
            play_also.append((bag_topic, publish_extra))
        publishers += also_publishers
        on_clock = clock_publisher(node) if clock_hz > 0 else None
        if wait > 0:
            waited_until = time.monotonic() + wait
            found = False
            for pub in publishers:
                if wait_for_subscribers(pub, max(0.0, waited_until - time.monotonic())):
                    found = True
                else:
                    # one deadline for all the topics: a topic after one that used it up was not waited for
                    print(f"illexp_bag play: no subscriber on {pub.topic_name} within --wait {wait:g} s; "
                          f"playing anyway")
            if found:
                time.sleep(SETTLE_S)
        start = time.monotonic()
        count = play_messages(path, topic, publisher.publish, rate=rate, loop=loop, on_clock=on_clock,
                              clock_hz=clock_hz, camera_info=play_info, also=play_also)
        elapsed = time.monotonic() - start
        # Reliable subscribers may still be fetching the last message(s): leaving now would drop them (seen on a
        # loaded machine). Bounded, and immediate for best-effort QoS.
        from rclpy.duration import Duration

        if not all(p.wait_for_all_acked(Duration(seconds=ACK_TIMEOUT_S)) for p in publishers):
            print(f"illexp_bag play: the last messages were not acknowledged within {ACK_TIMEOUT_S:g} s")
        more = [(infos, info_publisher.topic_name)] if camera_info is not None else []
        more += [(n, p.topic_name) for n, p in zip(also_counts, also_publishers)]
        also_line = "".join(f" and {n} on {name}" for n, name in more)
        qos_used = publisher.qos_profile  # as rclpy made it: what the subscribers were offered
        print(f"published {count} messages on {publisher.topic_name}{also_line} in {elapsed:.1f} s "
              f"({count / elapsed if elapsed > 0 else 0.0:.1f} Hz)"
              + (f", the bag's time on /clock at {clock_hz:g} Hz" if on_clock else "")
              + f"; QoS {qos_used.reliability.name.lower()}, keep-last {qos_used.depth}")
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    return 0
