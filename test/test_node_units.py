"""The node's parts in-process: parameter validation, counters, diagnostics, the newest-frame mailbox, the rate
limit, transport-gap counting and run-time parameter changes (passthrough backend, no second process)."""

import array
import contextlib
import time

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from illexp_ros.ros.node.diagnostics import FrameStats, diagnostic_array
from illexp_ros.ros.node.illexp_node import IllExpNode, PendingFrame
from illexp_ros.ros.node.parameters import PARAMETERS, RUNTIME_PARAMETERS, validate
from illexp_ros.ros.node.rate_limit import RateLimiter


@pytest.mark.parametrize("name,value,words", [
    ("mode", "sideways", "mode must be one of"),
    ("mode", 3, "must be a string"),
    ("fast", "yes", "fast must be true or false"),
    ("max_rate_hz", -1.0, "max_rate_hz must be in"),
    ("max_rate_hz", 1e6, "max_rate_hz must be in"),
    ("max_rate_hz", "10", "must be a number"),
    ("level_smoothing", 1.0, "level_smoothing must be in"),
    ("level_smoothing", -0.1, "level_smoothing must be in"),
    ("internal_short_side", -3, "internal_short_side must be in"),
    ("qos", "best_effort", "qos must be one of"),
    ("output_encoding", "32FC1", "output_encoding must be one of"),
    ("compressed_format", "webp", "compressed_format must be one of"),
    ("jpeg_quality", 0, "jpeg_quality must be in"),
    ("jpeg_quality", 101, "jpeg_quality must be in"),
    ("png_level", 10, "png_level must be in"),
    ("model", " ", "model must not be empty"),
    ("nonsense", 1, "unknown parameter"),
])
def test_invalid_values_have_a_reason(name, value, words):
    assert words in validate(name, value)


def test_defaults_are_valid_and_runtime_set_is_the_documented_one():
    for name, spec in PARAMETERS.items():
        assert validate(name, spec.default) is None, name
        assert spec.descriptor().description
    assert set(RUNTIME_PARAMETERS) == {"mode", "fast", "max_rate_hz", "publish_exposure_map", "strength",
                                       "level_smoothing",
                                       "exposure_compensation", "compressed_format", "jpeg_quality", "png_level"}
    assert validate("max_rate_hz", 10) is None  # an integer from `ros2 param set` is fine


def test_frame_stats_account_and_rate():
    stats = FrameStats(window=4)
    for latency in (0.010, 0.020, 0.030, 0.040, 0.100):
        stats.count("received")
        stats.published(latency, None)
    stats.count("dropped", 2)
    stats.count("dropped_in_transport", 3)
    stats.count("rejected")
    snap = stats.snapshot()
    assert (snap.received, snap.published, snap.dropped, snap.dropped_in_transport, snap.rejected) == \
        (5, 5, 5, 3, 1)
    assert snap.latency_p50_ms == pytest.approx(35.0)  # window of 4: 20, 30, 40, 100 ms
    assert snap.problems_in_period == 1 and snap.received_in_period == 5
    again = stats.snapshot()
    assert again.received_in_period == 0 and again.fps_in == 0.0 and again.received == 5


def test_diagnostic_levels_and_values():
    stats = FrameStats()
    idle = diagnostic_array(stats.snapshot(), "n", "cpu", "/cam", {"backend": "torch_cpu"},
                            rclpy.time.Time().to_msg())
    assert idle.status[0].level == DiagnosticStatus.WARN and "/cam" in idle.status[0].message
    stats.count("received")
    stats.published(0.01, 0.02)
    ok = diagnostic_array(stats.snapshot(), "n", "cpu", "/cam", {"backend": "torch_cpu"},
                          rclpy.time.Time().to_msg())
    values = {kv.key: kv.value for kv in ok.status[0].values}
    assert ok.status[0].level == DiagnosticStatus.OK
    assert values["backend"] == "torch_cpu" and values["published"] == "1" and values["latency_p50_ms"] == "10.00"
    stats.count("received")
    stats.count("rejected")
    bad = diagnostic_array(stats.snapshot(), "n", "cpu", "/cam", {}, rclpy.time.Time().to_msg())
    assert bad.status[0].level == DiagnosticStatus.WARN and "bad" in bad.status[0].message


def test_diagnostics_have_no_nan_and_no_negative_ages():
    stats = FrameStats()
    idle = {kv.key: kv.value for kv in diagnostic_array(stats.snapshot(), "n", "cpu", "/cam", {},
                                                         rclpy.time.Time().to_msg()).status[0].values}
    assert "nan" not in idle.values() and "latency_p50_ms" not in idle and "stamp_age_p50_ms" not in idle
    for _ in range(10):
        stats.published(0.01, -3600.0)  # a stamp an hour ahead of this clock: no age
    snap = stats.snapshot()
    assert snap.stamp_age_p50_ms != snap.stamp_age_p50_ms  # nan: no samples
    values = {kv.key: kv.value for kv in diagnostic_array(snap, "n", "cpu", "/cam", {},
                                                           rclpy.time.Time().to_msg()).status[0].values}
    assert "stamp_age_p50_ms" not in values and values["latency_p50_ms"] == "10.00"
    stats.published(0.01, 0.25)
    assert stats.snapshot().stamp_age_p50_ms == pytest.approx(250.0)


@contextlib.contextmanager
def own_node(*overrides: Parameter, node_class: type = IllExpNode, backend: str = "passthrough"):
    """A node of `node_class` in its own context, torn down whatever state it ends in."""
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        n = node_class(context=context, parameter_overrides=[Parameter("backend", value=backend), *overrides])
        try:
            yield n
        finally:
            n.stop()
            n.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture
def node():
    with own_node() as n:
        yield n


def frame_msg(stamp_ns: int = 1) -> Image:
    msg = Image(height=2, width=2, encoding="rgb8", step=6)
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.data = array.array("B", range(12))
    return msg


def info(seq: int, gid: int = 1) -> dict:
    return {"publication_sequence_number": seq, "publisher_gid": {"data": bytes([gid] * 16)}}


def test_newest_frame_replaces_the_waiting_one_and_is_counted(node):
    node.stop()  # no worker: frames stay in the mailbox
    node._on_image(frame_msg(1), info(1))
    node._on_image(frame_msg(2), info(2))
    node._on_image(frame_msg(3), info(3))
    snap = node.stats.snapshot()
    assert snap.received == 3 and snap.dropped == 2
    assert node._slot.msg.header.stamp.nanosec == 3


def test_sequence_gaps_count_as_transport_drops_per_publisher(node):
    node.stop()
    for seq, gid in ((1, 1), (2, 1), (6, 1), (1, 2), (3, 2), (7, 1)):
        node._on_image(frame_msg(seq), info(seq, gid))
    snap = node.stats.snapshot()
    assert snap.dropped_in_transport == 3 + 1  # 3..5 from publisher 1, 2 from publisher 2
    node._on_image(frame_msg(9), {"publication_sequence_number": 0, "publisher_gid": None})
    assert node.stats.snapshot().dropped_in_transport == 4  # unsupported by the RMW: nothing counted


def test_without_publisher_gids_gaps_count_only_while_one_publisher_feeds_the_topic(node):
    """Jazzy's rclpy (7.x) passes no publisher GID in the message info, only the sequence number: on Jazzy the
    node counted no frame lost in transport at all. Without a GID, numbers are compared while the topic has one
    publisher (the graph read at most once a second); with two, their numbers interleave and nothing is counted."""
    def count(seq: int, now: float) -> int:
        node._count_transport_gap({"publication_sequence_number": seq, "reception_sequence_number": None}, 0, now)
        return node.stats.snapshot().dropped_in_transport

    topic = node.cameras[0].image_sub.topic_name
    assert count(1, 0.0) == 0 and count(5, 0.1) == 0  # no publisher on the graph: nothing to compare
    first = node.create_publisher(Image, topic, 1)
    assert count(6, 0.5) == 0  # the count read at 0.0 is reused for a second
    assert count(7, 2.0) == 0 and count(10, 2.1) == 2  # one publisher: 8 and 9 were lost
    second = node.create_publisher(Image, topic, 1)
    # Its first number, within the second the count of 1 is reused: a number going back reads the graph again
    # (not 11 - 1 - 1 = 9 frames "lost" between the two publishers' numbers).
    assert count(1, 2.2) == 2 and count(11, 2.3) == 2 and count(2, 2.4) == 2 and count(12, 2.5) == 2
    node.destroy_publisher(second)
    assert count(13, 4.0) == 2 and count(15, 4.1) == 3  # one again: compared afresh from 13
    node.destroy_publisher(first)


@pytest.mark.parametrize("env,expected", [
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"},
     "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST"),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA?max_msg_size=1MB", "ROS_LOCALHOST_ONLY": "1"}, "ROS_LOCALHOST_ONLY=1"),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"}, None),
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_LOCALHOST_ONLY": "1"},
     None),  # the newer variable wins
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, None),  # no LARGE_DATA asked for
    ({"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
      "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, None),
])
def test_large_data_with_localhost_discovery_is_said_at_start_up(env, expected, monkeypatch, capfd):
    """Measured on Kilted: localhost-only discovery cancels LARGE_DATA (640x480 p50 ~27 ms instead of ~6), and the
    launch files set LARGE_DATA whatever the user's discovery range: the node says so once, at start-up."""
    from illexp_ros.ros.node.qos import large_data_note

    note = large_data_note(env)
    assert (note is None) if expected is None else (expected in note and "brings nothing" in note)
    if "SUBNET" in env.values() or "RMW_IMPLEMENTATION" in env:
        return  # no node on the network, nor with an RMW that is not installed
    for name in ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY",
                 "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    with own_node():
        pass
    err = capfd.readouterr().err
    assert ("brings nothing" in err) == (expected is not None), err


def test_max_rate_drops_extra_frames(node):
    node.stop()
    assert node.set_parameters([Parameter("max_rate_hz", value=5.0)])[0].successful
    passed = 0
    for i in range(10):
        node._on_image(frame_msg(i + 1), {})
        passed += node._slot is not None
        node._slot = None  # as if the worker took it, so only the rate limit drops frames here
    snap = node.stats.snapshot()
    # 10 frames within a few ms at 5 Hz: only the first passes the limit; the rest are dropped.
    assert passed == 1 and snap.received == 10 and snap.dropped == 9


@pytest.mark.parametrize("camera_hz,limit_hz,expected_every", [(30, 15, 2), (30, 10, 3), (30, 30, 1), (30, 0, 1)])
def test_rate_limiter_keeps_to_the_schedule_despite_jitter(camera_hz, limit_hz, expected_every):
    limiter = RateLimiter(limit_hz)
    jitter = np.random.default_rng(1).uniform(-0.002, 0.002, 60)
    kept = [i for i in range(60) if limiter.accept(10.0 + i / camera_hz + jitter[i])]
    assert kept == list(range(0, 60, expected_every))


def test_rate_limiter_restarts_after_a_pause_and_rejects_negative_rates():
    limiter = RateLimiter(10.0)
    assert limiter.accept(0.0) and not limiter.accept(0.05) and limiter.accept(0.1)
    assert limiter.accept(5.0) and not limiter.accept(5.05) and limiter.accept(5.1)  # no burst after a pause
    with pytest.raises(ValueError):
        RateLimiter(-1.0)


def test_worker_publishes_and_rejects(node):
    published = []
    node.cameras[0].image_pub.publish = published.append
    node._process(PendingFrame(frame_msg(5), time.monotonic()))
    out = published[0]
    assert out.header.stamp.nanosec == 5 and out.encoding == "rgb8"
    np.testing.assert_array_equal(np.frombuffer(out.data, np.uint8), np.arange(12))
    # The first frame of a size is counted but kept out of the latency statistics (one-off set-up work).
    snap = node.stats.snapshot()
    assert snap.published == 1 and np.isnan(snap.latency_p50_ms)
    node._process(PendingFrame(frame_msg(6), time.monotonic()))
    assert node.stats.snapshot().latency_p50_ms >= 0.0
    bad = frame_msg(6)
    bad.encoding = "32FC1"
    with node._slot_cond:
        node._slot = PendingFrame(bad, time.monotonic())
        node._slot_cond.notify()
    deadline = time.monotonic() + 5
    while node.stats.snapshot().rejected == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert node.stats.snapshot().rejected == 1 and node._worker.is_alive()


def test_a_stream_alternating_two_sizes_has_latency_statistics(node):
    """Only the first frame of a size not seen lately is left out of the latency statistics (every frame of a
    stream alternating two sizes was, so latency_p50_ms stayed unset)."""
    node.cameras[0].image_pub.publish = lambda msg: None
    big = Image(height=4, width=6, encoding="rgb8", step=18)
    big.data = array.array("B", range(72))
    for i in range(10):
        node._process(PendingFrame(frame_msg(i + 1) if i % 2 else big, time.monotonic()))
    snap = node.stats.snapshot()
    assert snap.published == 10 and not np.isnan(snap.latency_p50_ms)


def test_compressed_output_only_while_subscribed_and_with_the_parameters_in_force(node, monkeypatch):
    assert node.cameras[0].compressed_pub.topic_name == node.resolve_topic_name("corrected/image") + "/compressed"
    raw, compressed = [], []
    node.cameras[0].image_pub.publish = raw.append
    node.cameras[0].compressed_pub.publish = compressed.append
    subscribers = [0]
    monkeypatch.setattr(node.cameras[0].compressed_pub, "get_subscription_count", lambda: subscribers[0])
    node._process(PendingFrame(frame_msg(1), time.monotonic()))
    assert len(raw) == 1 and compressed == [] and node.compressed_published == 0  # nobody listens: no encoding
    subscribers[0] = 1
    node._process(PendingFrame(frame_msg(2), time.monotonic()))
    assert compressed[-1].format == "rgb8; jpeg compressed bgr8" and compressed[-1].header.stamp.nanosec == 2
    assert node.set_parameters([Parameter("compressed_format", value="png"),
                                Parameter("png_level", value=9)])[0].successful
    node._process(PendingFrame(frame_msg(3), time.monotonic()))
    assert compressed[-1].format == "rgb8; png compressed bgr8" and node.compressed_published == 2
    decoded = cv2.imdecode(np.frombuffer(compressed[-1].data, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded[..., ::-1].reshape(-1), np.frombuffer(raw[-1].data, np.uint8))
    assert node._compression == ("png", 95, 9)
    refused = node.set_parameters([Parameter("jpeg_quality", value=0)])[0]
    assert not refused.successful and node._compression == ("png", 95, 9)
    # An encoder failure is logged; the frame stays published and counted once, the worker keeps going.
    monkeypatch.setattr(node, "_compression", ("bmp", 95, 9))
    node._process(PendingFrame(frame_msg(4), time.monotonic()))
    snap = node.stats.snapshot()
    assert len(raw) == 4 and snap.published == 4 and snap.failed == 0 and node.compressed_published == 2


def test_publish_compressed_false_offers_no_compressed_topic():
    with own_node(Parameter("publish_compressed", value=False)) as n:
        assert n.cameras[0].compressed_pub is None
        pubs, _ = own_endpoints(n)  # the node's own handles: the graph may not list even the ones it has yet
        assert "/corrected/image" in pubs and not any(name.endswith("/compressed") for name in pubs)
        n.cameras[0].image_pub.publish = lambda msg: None
        n._process(PendingFrame(frame_msg(1), time.monotonic()))
        assert n.stats.snapshot().published == 1


def wait_until(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_runtime_parameter_changes_apply_and_invalid_ones_are_refused(node):
    results = node.set_parameters([Parameter("mode", value="auto")])
    # mode / fast switch on the switcher thread once loaded (at once for passthrough)
    assert results[0].successful and wait_until(lambda: node.enhancer.mode == "auto")
    results = node.set_parameters([Parameter("mode", value="sideways")])
    assert not results[0].successful and "mode must be one of" in results[0].reason
    assert node.enhancer.mode == "auto"
    assert node.set_parameters([Parameter("publish_exposure_map", value=True)])[0].successful
    assert node._publish_map is True
    assert node._level.weight == 0.9  # the documented default
    assert node.set_parameters([Parameter("level_smoothing", value=0)])[0].successful  # an integer is fine
    assert node._level.weight == 0.0
    refused = node.set_parameters([Parameter("level_smoothing", value=1.0)])[0]
    assert not refused.successful and "level_smoothing must be in" in refused.reason and node._level.weight == 0.0
    refused = node.set_parameters([Parameter("backend", value="torch_cpu")])[0]
    assert not refused.successful and "read-only" in refused.reason


def test_node_bench_arguments():
    from illexp_ros.ros.demo.node_bench import parse_args

    args = parse_args(["--sizes", "640x480,1280x720", "--frames", "3"])
    assert args.sizes == [(640, 480), (1280, 720)] and args.frames == 3
    assert parse_args(["--param", "strength:=0.0", "--param", "level_smoothing:=0.5"]).param == [
        "strength:=0.0", "level_smoothing:=0.5"]
    assert args.encoding == "bgr8" and parse_args(["--encoding", "bayer_rggb8"]).encoding == "bayer_rggb8"
    for bad in (["--sizes", "640"], ["--sizes", "641x480"], ["--frames", "0"], ["--param", "strength=0"],
                ["--param", "no_such:=1"], ["--param", "strength:="], ["--param", "backend:=torch_cpu"],
                ["--encoding", "32FC1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_illexp_bench_node_flag_runs_the_node_benchmark(capsys):
    """`illexp_bench --node` is the node benchmark; without --node it is the Enhancer benchmark."""
    from illexp_ros.bench_cli import main

    with pytest.raises(SystemExit):
        main(["--node", "--help"])
    out = capsys.readouterr().out
    assert "illexp_bench --node" in out and "--transport" in out
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "--transport" not in out and "--model-config" in out


def test_mode_and_fast_requests_are_coalesced_and_the_last_one_is_in_force(node):
    """A storm of mode / fast changes: the switcher ends on the last values set, whatever order they came in."""
    for i in range(200):
        assert node.set_parameters([Parameter("mode", value=("under", "over", "auto", "mixed")[i % 4]),
                                    Parameter("fast", value=bool(i % 3))])[0].successful
    assert node.set_parameters([Parameter("mode", value="over"), Parameter("fast", value=False)])[0].successful
    assert wait_until(lambda: (node.enhancer.mode, node.enhancer.fast) == ("over", False))
    time.sleep(0.2)  # and it stays there
    assert (node.enhancer.mode, node.enhancer.fast) == ("over", False)
    assert (node.get_parameter("mode").value, node.get_parameter("fast").value) == ("over", False)


def test_a_missing_model_is_refused_at_once_and_a_corrupt_one_is_set_back(tmp_path, monkeypatch):
    """The model file check is synchronous (cheap): a missing file refuses the change. Loading happens on the
    switcher thread: a file that exists but does not load leaves the settings in force and the parameters are
    set back to them."""
    import shutil

    from illexp_ros.runtime.model_io import resolve_model_path

    models = tmp_path / "models"
    models.mkdir()
    for name in ("mixed", "mixed_fast"):
        shutil.copy(resolve_model_path(name), models / f"{name}.pt")
    (models / "under.pt").write_bytes(b"not a model")  # exists: passes the check, fails to load
    monkeypatch.setenv("ILLEXP_MODELS_DIR", str(models))
    context = rclpy.Context()
    rclpy.init(context=context)
    n = IllExpNode(context=context, parameter_overrides=[Parameter("backend", value="torch_cpu")])
    try:
        assert (n.enhancer.mode, n.enhancer.fast) == ("mixed", True)
        assert n.set_parameters([Parameter("mode", value="under")])[0].successful
        assert wait_until(lambda: n.get_parameter("mode").value == "mixed")  # set back after the failed load
        assert n.enhancer.mode == "mixed"
    finally:
        n.stop()
        n.destroy_node()
    own = tmp_path / "own.pt"
    shutil.copy(resolve_model_path("mixed_fast"), own)
    n = IllExpNode(context=context, parameter_overrides=[Parameter("backend", value="torch_cpu"),
                                                         Parameter("model", value=str(own))])
    try:
        own.unlink()
        refused = n.set_parameters([Parameter("mode", value="over")])[0]
        assert not refused.successful and "not found" in refused.reason and str(own) in refused.reason
        assert n.get_parameter("mode").value == "mixed" and n.enhancer.mode == "mixed"
        # a change that switches nothing needs no file: the node stays tunable (every change was refused)
        for name, value in (("strength", 0.5), ("max_rate_hz", 10.0), ("exposure_compensation", 0.5),
                            ("mode", "mixed")):
            assert n.set_parameters([Parameter(name, value=value)])[0].successful, name
        assert n._strength == 0.5
    finally:
        n.stop()
        n.destroy_node()
        rclpy.try_shutdown(context=context)


def test_a_switch_that_needs_no_loading_does_not_wait_for_one_in_progress(monkeypatch):
    """While the switcher loads models for one request (held up here on purpose), a request whose models are
    loaded already is applied at once by the parameter callback: the executor thread, which also receives the
    frames, must never wait for a load."""
    import threading

    release = threading.Event()
    with own_node(backend="torch_cpu") as n:
        original = n.enhancer._load_runner

        def held_load(path):
            release.wait(30.0)
            return original(path)

        monkeypatch.setattr(n.enhancer, "_load_runner", held_load)
        try:
            assert (n.enhancer.mode, n.enhancer.fast) == ("mixed", True)
            assert n.set_parameters([Parameter("mode", value="under")])[0].successful  # needs under.pt: held
            time.sleep(0.3)
            assert n.enhancer.mode == "mixed"  # still loading
            start = time.monotonic()
            assert n.set_parameters([Parameter("mode", value="mixed")])[0].successful  # mixed_fast.pt: loaded
            assert time.monotonic() - start < 1.0 and n.enhancer.mode == "mixed"
            release.set()
            time.sleep(0.5)
            assert n.enhancer.mode == "mixed"  # the held load finished, but mixed was asked for last
        finally:
            release.set()  # before the node stops: its switcher may be held in the load


def test_a_strength_change_restarts_the_level_smoothing():
    """strength 0 publishes the input itself from the first frame after the change, and going back to 1 the full
    correction at once: the smoothed gain of the other strength is not carried over (it was, for seconds)."""
    dark = Image(height=24, width=32, encoding="rgb8", step=96)
    pixels = np.random.default_rng(3).integers(5, 40, (24, 32, 3), dtype=np.uint8)
    dark.data = array.array("B", pixels.tobytes())
    with own_node(backend="torch_cpu") as n:
        published = []
        n.cameras[0].image_pub.publish = published.append
        assert n._level.weight == 0.9  # config/illexp.yaml's default
        for _ in range(3):
            n._process(PendingFrame(dark, time.monotonic()))
        corrected = np.frombuffer(published[-1].data, np.uint8)
        assert corrected.mean() > pixels.mean() + 20  # the correction brightens this frame
        assert n.set_parameters([Parameter("strength", value=0.0)])[0].successful
        n._process(PendingFrame(dark, time.monotonic()))
        np.testing.assert_array_equal(np.frombuffer(published[-1].data, np.uint8), pixels.reshape(-1))
        assert diagnostic_values(n)["last_route"] == "off"  # not the route of a frame corrected before
        assert n.set_parameters([Parameter("strength", value=1.0)])[0].successful
        n._process(PendingFrame(dark, time.monotonic()))
        np.testing.assert_array_equal(np.frombuffer(published[-1].data, np.uint8), corrected)
        assert diagnostic_values(n)["last_route"] == "mixed_fast"


@pytest.mark.parametrize(("encoding", "overrides", "backend", "route"), [
    ("mono16", {"strength": 0.0}, "torch_cpu", "off"),
    ("bayer_rggb16", {"strength": 0.0, "publish_exposure_map": True}, "torch_cpu", "off"),
    ("rgb16", {"mode": "auto"}, "torch_cpu", "well-exposed"),  # a well-exposed frame auto passes round the network
    ("mono16", {}, "passthrough", "passthrough"),
])
def test_a_frame_nothing_changes_comes_back_bit_identical_even_at_16_bits(encoding, overrides, backend, route):
    """The node works on an 8-bit copy; a frame it does not change must still come back exactly as sent. It was
    rebuilt from that copy, and a 12-bit camera's 4096 levels came back as 16."""
    from skimage.data import chelsea

    rgb = cv2.resize(chelsea(), (64, 48), interpolation=cv2.INTER_AREA).astype(np.uint16)
    # 12-bit data as many machine-vision cameras send it; for auto's classifier the full 16-bit range (12-bit
    # values read as a dark frame, as cv_bridge reads them), with low bits that an 8-bit round trip loses
    values = {"mono16": rgb[..., 1] * 16 + 7, "bayer_rggb16": rgb[..., 1] * 16 + 7, "rgb16": rgb * 256 + 129}[encoding]
    values = np.ascontiguousarray(values, np.uint16)
    msg = Image(height=48, width=64, encoding=encoding, step=values.strides[0])
    msg.header.frame_id = "camera"
    msg.data = array.array("B", values.tobytes())
    with own_node(*(Parameter(k, value=v) for k, v in overrides.items()), backend=backend) as n:
        published = []
        n.cameras[0].image_pub.publish = published.append
        n._process(PendingFrame(msg, time.monotonic()))
        (out,) = published
        assert (out.encoding, out.step, out.header.frame_id) == (encoding, msg.step, "camera")
        assert bytes(out.data) == values.tobytes()
        assert diagnostic_values(n)["last_route"] == route
        if "mode" not in overrides:  # a change the user asked for is applied, at the 8 bits the node works at
            assert n.set_parameters([Parameter("exposure_compensation", value=1.0)])[0].successful
            n._process(PendingFrame(msg, time.monotonic()))
            brighter = np.frombuffer(published[-1].data, np.uint16)
            assert brighter.mean() > 1.2 * values.mean()


def diagnostic_values(n) -> dict[str, str]:
    """The key/values of the node's next diagnostics message."""
    sent = []
    n.diag_pub.publish = sent.append
    n._on_diagnostics_timer()
    return {kv.key: kv.value for kv in sent[-1].status[0].values}


@contextlib.contextmanager
def lifecycle_node(*overrides: Parameter):
    """An IllExpLifecycleNode (passthrough backend) in its own context, torn down whatever state it ends in."""
    from illexp_ros.ros.node.illexp_lifecycle_node import IllExpLifecycleNode

    with own_node(*overrides, node_class=IllExpLifecycleNode) as n:
        yield n


def own_endpoints(n) -> tuple[set[str], set[str]]:
    """Topics this node has publishers and subscriptions on: its own handles, not the ROS graph (which learns of
    them through discovery, later under load)."""
    return {p.topic_name for p in n.publishers}, {s.topic_name for s in n.subscriptions}


def test_lifecycle_node_creates_and_releases_per_transition():
    from rclpy.lifecycle import TransitionCallbackReturn as R

    with lifecycle_node() as n:
        pubs, subs = own_endpoints(n)
        assert "/corrected/image" not in pubs and "/image" not in subs  # unconfigured: nothing yet
        assert n.trigger_configure() == R.SUCCESS
        pubs, subs = own_endpoints(n)
        assert {"/corrected/image", "/corrected/image/compressed", "/corrected/camera_info"} <= pubs
        assert "/image" not in subs and "/camera_info" not in subs  # inactive: no input
        assert n.trigger_activate() == R.SUCCESS
        assert {"/image", "/camera_info"} <= own_endpoints(n)[1] and n._worker.is_alive()
        n._process(PendingFrame(frame_msg(1), time.monotonic()))  # managed publisher enabled: no warning, counted
        assert n.stats.snapshot().published == 1
        n._on_image(frame_msg(2), {})  # waiting in the mailbox when deactivated: dropped and counted
        assert n.trigger_deactivate() == R.SUCCESS
        assert "/image" not in own_endpoints(n)[1] and not n._worker.is_alive()
        snap = n.stats.snapshot()
        assert snap.received == 1 and snap.published + snap.dropped == 2
        assert n.trigger_cleanup() == R.SUCCESS
        pubs, _ = own_endpoints(n)
        assert "/corrected/image" not in pubs
        # Parameters may change while unconfigured; the next configure uses them.
        n.set_parameters([Parameter("strength", value=0.5)])
        assert n.trigger_configure() == R.SUCCESS and n._strength == 0.5
        assert n.trigger_shutdown() == R.SUCCESS


def test_rates_after_a_reactivation_count_from_the_activation():
    """Frames received just after activate, over the time since then: not over the inactive time as well."""
    from rclpy.lifecycle import TransitionCallbackReturn as R

    with lifecycle_node() as n:
        assert n.trigger_configure() == R.SUCCESS and n.trigger_activate() == R.SUCCESS
        n.stats.snapshot()
        assert n.trigger_deactivate() == R.SUCCESS
        time.sleep(1.0)  # inactive
        assert n.trigger_activate() == R.SUCCESS
        for _ in range(10):
            n.stats.count("received")
        time.sleep(0.1)
        assert n.stats.snapshot().fps_in > 20.0  # 10 frames in ~0.1 s (it read ~9, over 1.1 s)
        assert n.trigger_deactivate() == R.SUCCESS


@pytest.mark.parametrize("overrides,words", [
    ([Parameter("mode", value="sideways")], "parameter mode must be one of"),
    ([Parameter("model", value="/nonexistent/m.pt"), Parameter("backend", value="torch_cpu")],
     "model file not found: /nonexistent/m.pt"),
])
def test_lifecycle_configure_fails_with_the_reason_and_can_be_retried(overrides, words):
    from rclpy.lifecycle import TransitionCallbackReturn as R

    with lifecycle_node(*overrides) as n:
        logged = []
        n.get_logger().error = lambda text, **kw: logged.append(text)
        assert n.trigger_configure() == R.FAILURE
        assert any(words in line for line in logged), logged
        assert "/corrected/image" not in own_endpoints(n)[0]
        if overrides[0].name == "mode":  # a run-time parameter: fix it and configure again
            n.set_parameters([Parameter("mode", value="mixed")])
            assert n.trigger_configure() == R.SUCCESS


def test_lifecycle_node_refuses_invalid_values_while_unconfigured_and_finalized():
    """Values set before configure were taken unchecked (the callback that checks them is installed at configure),
    so a number parameter could hold 'abc' and only the next configure failed."""
    from rclpy.lifecycle import TransitionCallbackReturn as R

    with lifecycle_node() as n:
        for state, strength in (("unconfigured", 1.0), ("finalized", 0.5)):
            results = n.set_parameters([Parameter("strength", value=5.0), Parameter("max_rate_hz", value="abc"),
                                        Parameter("mode", value="sideways")])
            assert [r.successful for r in results] == [False, False, False], state
            assert "strength must be in [0.0, 1.0]" in results[0].reason and "mode must be" in results[2].reason
            assert n.get_parameter("strength").value == strength and n.get_parameter("mode").value == "mixed"
            assert n.set_parameters([Parameter("strength", value=0.5)])[0].successful
            if state == "unconfigured":
                assert n.trigger_configure() == R.SUCCESS and n._strength == 0.5
                assert n.trigger_shutdown() == R.SUCCESS


def test_frames_sent_while_the_lifecycle_node_was_inactive_are_not_transport_losses():
    from rclpy.lifecycle import TransitionCallbackReturn as R

    with lifecycle_node() as n:
        assert n.trigger_configure() == R.SUCCESS and n.trigger_activate() == R.SUCCESS
        n._destroy_inputs()  # no worker: frames stay in the mailbox
        for seq in range(1, 6):
            n._on_image(frame_msg(seq), info(seq))
        n._active = True
        assert n.trigger_deactivate() == R.SUCCESS and n.trigger_activate() == R.SUCCESS
        n._on_image(frame_msg(26), info(26))  # 20 frames went out while the node was not subscribed
        n._on_image(frame_msg(28), info(28))  # one lost on the way: that one counts
        assert n.stats.snapshot().dropped_in_transport == 1


def test_lifecycle_node_says_an_invalid_value_at_start_up(capfd):
    """Before any configure: a lifecycle manager may configure the node much later."""
    with lifecycle_node(Parameter("mode", value="sideways")):
        err = capfd.readouterr().err
        assert "parameter mode must be one of" in err and "configure will fail" in err, err


def test_lifecycle_cycles_leave_no_threads_or_endpoints_behind():
    """Managers cycle nodes (deactivate / activate on a fault, cleanup / configure on a reload): 20 of each must
    not pile up worker or switcher threads, subscriptions or publishers."""
    import threading

    from rclpy.lifecycle import TransitionCallbackReturn as R

    with lifecycle_node() as n:
        assert n.trigger_configure() == R.SUCCESS and n.trigger_activate() == R.SUCCESS
        baseline = threading.active_count()
        endpoints = own_endpoints(n)
        for i in range(20):
            n._on_image(frame_msg(i + 1), {})  # a frame in flight at every switch
            assert n.trigger_deactivate() == R.SUCCESS
            if i % 2:
                assert n.trigger_cleanup() == R.SUCCESS and n.trigger_configure() == R.SUCCESS
            assert n.trigger_activate() == R.SUCCESS
        assert threading.active_count() == baseline
        assert sum(t.name == "illexp_worker" for t in threading.enumerate()) == 1
        assert sum(t.name == "illexp_switcher" for t in threading.enumerate()) == 1
        assert own_endpoints(n) == endpoints
        assert [p.topic_name for p in n.publishers].count("/corrected/image") == 1
        assert [s.topic_name for s in n.subscriptions].count("/image") == 1


def test_incompatible_qos_warnings_name_the_policy_in_a_word(node, capfd):
    """The warning printed rclpy's enum as `policy rmw_qos_policy_kind_t.RMW_QOS_POLICY_RELIABILITY`."""
    from types import SimpleNamespace

    from rclpy._rclpy_pybind11 import rmw_qos_policy_kind_t

    node._on_incompatible_subscriber("corrected/image",
                                     SimpleNamespace(last_policy_kind=rmw_qos_policy_kind_t.RMW_QOS_POLICY_RELIABILITY))
    err = capfd.readouterr().err
    assert "asks for an incompatible QoS (policy RELIABILITY); it gets no frames" in err, err


def test_qos_overrides_apply_per_topic():
    """ROS 2's standard qos_overrides parameters, per publisher / subscription, on top of `qos`."""
    from rclpy.qos import ReliabilityPolicy

    with own_node(Parameter("qos_overrides./image.subscription.depth", value=5),
                  Parameter("qos_overrides./corrected/image.publisher.reliability", value="best_effort")) as n:
        assert n.cameras[0].image_sub.qos_profile.depth == 5
        assert n.cameras[0].image_pub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        # the others keep `qos` (reliable, depth 1): each entity has its own profile
        assert n.cameras[0].map_pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert n.cameras[0].compressed_pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert n.cameras[0].info_sub.qos_profile.depth == 1 and n.cameras[0].image_pub.qos_profile.depth == 1
        assert n.get_parameter("qos_overrides./exposure_map.publisher.reliability").value == "reliable"
        assert not n.has_parameter("qos_overrides./diagnostics.publisher.reliability")


@pytest.mark.parametrize("name,value,words", [
    ("qos_overrides./image.subscription.reliability", "sometimes", "reliability"),
    ("qos_overrides./image.subscription.depth", 0, "depth must be at least 1"),
    ("qos_overrides./image.subscription.depth", 2**32, "depth must be at most 2147483647"),  # was a TypeError
    ("qos_overrides./corrected/image.publisher.depth", "deep", "depth"),
])
def test_invalid_qos_override_is_a_startup_error(name, value, words):
    from illexp_ros.ros.node.illexp_node import StartupError

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError, match=f"QoS override: .*{words}"):
            IllExpNode(context=context, parameter_overrides=[Parameter("backend", value="passthrough"),
                                                             Parameter(name, value=value)])
    finally:
        rclpy.try_shutdown(context=context)


def test_lifecycle_node_refuses_an_invalid_qos_override_at_configure_and_activate():
    from rclpy.lifecycle import TransitionCallbackReturn as R

    for name, transition in (("qos_overrides./corrected/image.publisher.depth", "trigger_configure"),
                             ("qos_overrides./image.subscription.depth", "trigger_activate")):
        with lifecycle_node(Parameter(name, value=0)) as n:
            logged = []
            n.get_logger().error = lambda text, log=logged, **kw: log.append(text)
            if transition == "trigger_activate":
                assert n.trigger_configure() == R.SUCCESS
            assert getattr(n, transition)() == R.FAILURE
            assert any("QoS override" in line and "depth must be at least 1" in line for line in logged), logged
            pubs, subs = own_endpoints(n)
            assert "/image" not in subs
            assert ("/corrected/image" in pubs) == (transition == "trigger_activate")  # configured stays so


def test_a_thread_that_outlived_its_join_stops_on_its_own_event():
    """A worker or switcher still busy when deactivate / cleanup gave up waiting must not adopt the next
    activate's / configure's fresh stop event (and run beside the new thread)."""
    import threading

    from rclpy.lifecycle import TransitionCallbackReturn as R

    with lifecycle_node() as n:
        assert n.trigger_configure() == R.SUCCESS and n.trigger_activate() == R.SUCCESS
        for thread_name, event_name, cond_name in (("_worker", "_worker_stop", "_slot_cond"),
                                                   ("_switcher", "_stop", "_switch_cond")):
            thread, event = getattr(n, thread_name), getattr(n, event_name)
            setattr(n, event_name, threading.Event())  # what the next activate / configure puts in place
            event.set()
            with getattr(n, cond_name):
                getattr(n, cond_name).notify_all()
            thread.join(timeout=2.0)
            assert not thread.is_alive(), f"{thread_name} kept running on the new event"
            setattr(n, event_name, event)


@pytest.mark.parametrize("node_class,name,value,expected", [
    ("illexp_stereo_node.IllExpStereoNode", "sync_queue_size", 0, "sync_queue_size must be in [1, 100] (got 0)"),
    ("illexp_node.IllExpNode", "threads", -1, "threads must be in [0, 256] (got -1)"),
    ("illexp_node.IllExpNode", "threads", "abc", "threads must be an integer (got 'abc')"),
    ("illexp_lifecycle_node.IllExpLifecycleNode", "jpeg_quality", 300, "jpeg_quality must be in [1, 100] (got 300)"),
    ("illexp_node.IllExpNode", "fast", "maybe", "fast must be true or false (got 'maybe')"),
    ("illexp_node.IllExpNode", "threads", None, "threads has no value (an empty list?)"),  # `threads: []`
])
def test_a_value_the_parameter_descriptor_refuses_is_a_startup_error_in_the_nodes_words(node_class, name, value,
                                                                                         expected):
    """rclpy refuses an integer out of its descriptor's range (or a value of another type) when the node declares
    it, in words of its own ("Invalid parameter value (0) for parameter. Reason: Parameter sync_queue_size out of
    range. Min: 1, Max: 100, value: 0"); the node says it as it does for every other parameter."""
    import importlib

    from illexp_ros.ros.node.illexp_node import StartupError

    module, cls = node_class.rsplit(".", 1)
    node_type = getattr(importlib.import_module(f"illexp_ros.ros.node.{module}"), cls)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(StartupError) as raised:
            node_type(context=context, parameter_overrides=[Parameter("backend", value="passthrough"),
                                                            Parameter(name, value=value)])
        assert str(raised.value) == f"parameter {expected}"
    finally:
        rclpy.try_shutdown(context=context)
