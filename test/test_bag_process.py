"""`illexp_bag process` on generated bags: byte-for-byte copies, one corrected Image per input image, atomic
output, and one-line errors (exit 2) for missing topics, empty and corrupt bags."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from illexp_ros.core.networks import IllExpNet
from illexp_ros.ros.bags import tool as bag_tool
from illexp_ros.ros.bags.images import IMAGE_TYPE, TYPESTORE, deserialize, make_image
from illexp_ros.ros.demo.sample_data import IMAGE_TOPIC, write_sample_bag
from illexp_ros.runtime.model_io import save_model

SIZE = (48, 64)  # small frames: these tests are about bags, not image quality
CORRECTED = f"{IMAGE_TOPIC}/corrected"
TOOL = [sys.executable, "-m", "illexp_ros.ros.bags.tool"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = {"attention_width": 8, "widths": [8, 16, 32, 64]}
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return save_model(path, IllExpNet(attention_width=8, widths=(8, 16, 32, 64)), config, "tiny")


def read_bag(path: Path) -> tuple[list, list[tuple[str, int, bytes]]]:
    with Reader(path) as reader:
        conns = list(reader.connections)
        return conns, [(c.topic, ts, bytes(data)) for c, ts, data in reader.messages()]


def process(*args: str) -> int:
    return bag_tool.main(["process", *args, "--no-progress"])


@pytest.mark.parametrize(("in_storage", "out_storage"), [("sqlite3", None), ("mcap", None), ("mcap", "sqlite3")])
def test_process_copies_every_message_and_adds_one_corrected_image_per_frame(
        tmp_path: Path, tiny_model: Path, in_storage: str, out_storage: str | None,
        capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_sample_bag(src, frames=5, size=SIZE, storage=in_storage)
    extra = ["--storage", out_storage] if out_storage else []
    assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                   "--model", str(tiny_model), *extra) == 0
    assert "5 frames corrected" in capsys.readouterr().out

    in_conns, in_msgs = read_bag(src)
    out_conns, out_msgs = read_bag(out)
    suffix = {"sqlite3": ".db3", "mcap": ".mcap"}[out_storage or in_storage]
    assert [p.suffix for p in out.iterdir() if p.name != "metadata.yaml"] == [suffix]

    # Every original message, byte for byte, at its timestamp; nothing else but the corrected topic.
    assert sorted(m for m in out_msgs if m[0] != CORRECTED) == sorted(in_msgs)
    for conn in in_conns:
        (copy,) = [c for c in out_conns if c.topic == conn.topic]
        assert (copy.msgtype, copy.msgdef.data, copy.digest) == (conn.msgtype, conn.msgdef.data, conn.digest)
        assert copy.ext == conn.ext  # serialization format and offered QoS profiles

    inputs = {ts: deserialize(data, IMAGE_TYPE) for topic, ts, data in in_msgs if topic == IMAGE_TOPIC}
    corrected = [(ts, deserialize(data, IMAGE_TYPE)) for topic, ts, data in out_msgs if topic == CORRECTED]
    assert sorted(ts for ts, _ in corrected) == sorted(inputs)  # one per input image, same bag timestamp
    for ts, msg in corrected:
        src_msg = inputs[ts]
        assert msg.header == src_msg.header
        assert (msg.height, msg.width, msg.encoding) == (src_msg.height, src_msg.width, "rgb8")
        np.testing.assert_array_equal(msg.data, src_msg.data)  # passthrough: the pixels survive the round trip
    (corr_conn,) = [c for c in out_conns if c.topic == CORRECTED]
    assert corr_conn.ext.offered_qos_profiles == [c for c in in_conns if c.topic == IMAGE_TOPIC][0] \
        .ext.offered_qos_profiles


def test_process_runs_the_model_on_each_frame(tmp_path: Path, tiny_model: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_sample_bag(src, frames=2, size=SIZE, with_reference=False)
    assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "torch_cpu",
                   "--model", str(tiny_model), "--mode", "mixed", "--out-topic", "/fixed") == 0
    _, msgs = read_bag(out)
    inputs = {ts: deserialize(d, IMAGE_TYPE) for t, ts, d in msgs if t == IMAGE_TOPIC}
    fixed = [(ts, deserialize(d, IMAGE_TYPE)) for t, ts, d in msgs if t == "/fixed"]
    assert len(fixed) == 2
    for ts, msg in fixed:
        assert msg.data.shape == inputs[ts].data.shape
        assert not np.array_equal(msg.data, inputs[ts].data)  # a random network changes the pixels


def test_compressed_input_gives_bgr8_images(tmp_path: Path, tiny_model: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    write_sample_bag(src, frames=3, size=SIZE, compressed=True, with_reference=False)
    assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                   "--model", str(tiny_model)) == 0
    _, msgs = read_bag(out)
    jpegs = {ts: deserialize(d, "sensor_msgs/msg/CompressedImage") for t, ts, d in msgs if t == IMAGE_TOPIC}
    corrected = [(ts, deserialize(d, IMAGE_TYPE)) for t, ts, d in msgs if t == CORRECTED]
    assert len(corrected) == 3
    for ts, msg in corrected:
        expected = cv2.imdecode(np.asarray(jpegs[ts].data, np.uint8), cv2.IMREAD_COLOR)
        assert msg.encoding == "bgr8" and msg.header == jpegs[ts].header
        np.testing.assert_array_equal(np.asarray(msg.data).reshape(expected.shape), expected)


def test_exposure_compensation_applies_to_every_corrected_frame(tmp_path: Path, tiny_model: Path) -> None:
    """passthrough + no smoothing: each corrected frame is the input with the node's compensation applied."""
    from illexp_ros.runtime.exposure_compensation import compensate_exposure

    src, out = tmp_path / "in", tmp_path / "out"
    write_sample_bag(src, frames=3, size=SIZE, with_reference=False)
    assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "passthrough", "--model",
                   str(tiny_model), "--level-smoothing", "0", "--exposure-compensation", "-0.5") == 0
    _, msgs = read_bag(out)
    inputs = {ts: deserialize(d, IMAGE_TYPE).data.reshape(*SIZE, 3) for t, ts, d in msgs if t == IMAGE_TOPIC}
    corrected = {ts: deserialize(d, IMAGE_TYPE).data.reshape(*SIZE, 3) for t, ts, d in msgs if t == CORRECTED}
    assert len(corrected) == 3
    for ts, pixels in corrected.items():
        np.testing.assert_array_equal(pixels, compensate_exposure(inputs[ts].copy(), -0.5))
        assert pixels.mean() < 0.9 * inputs[ts].mean()
    with pytest.raises(SystemExit):  # argparse: one usage line, status 2
        process(str(src), str(tmp_path / "x"), "--topic", IMAGE_TOPIC, "--exposure-compensation", "4")


def test_strength_blends_every_corrected_frame_with_its_input(tmp_path: Path, tiny_model: Path) -> None:
    """A real (random) network, no smoothing: strength 0 writes the inputs, 0.5 the blend of input and correction."""
    from illexp_ros.runtime.correction_strength import apply_strength

    src = tmp_path / "in"
    write_sample_bag(src, frames=3, size=SIZE, with_reference=False)

    def corrected_at(strength: str) -> dict[int, np.ndarray]:
        out = tmp_path / f"out{strength}"
        assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "torch_cpu", "--model",
                       str(tiny_model), "--level-smoothing", "0", "--strength", strength) == 0
        _, msgs = read_bag(out)
        return {ts: deserialize(d, IMAGE_TYPE).data.reshape(*SIZE, 3) for t, ts, d in msgs if t == CORRECTED}

    _, msgs = read_bag(src)
    inputs = {ts: deserialize(d, IMAGE_TYPE).data.reshape(*SIZE, 3) for t, ts, d in msgs if t == IMAGE_TOPIC}
    full, half, off = corrected_at("1"), corrected_at("0.5"), corrected_at("0")
    assert len(full) == len(half) == len(off) == 3
    for ts, pixels in inputs.items():
        assert not np.array_equal(full[ts], pixels)  # the network changes the frame
        np.testing.assert_array_equal(off[ts], pixels)
        np.testing.assert_array_equal(half[ts], apply_strength(pixels, full[ts].copy(), 0.5))
    with pytest.raises(SystemExit):
        process(str(src), str(tmp_path / "x"), "--topic", IMAGE_TOPIC, "--strength", "-1")


def test_strength_0_writes_16_bit_frames_bit_identical(tmp_path: Path, tiny_model: Path) -> None:
    """12-bit data in mono16 frames: with the correction off the corrected topic carries the frames as they were
    (rebuilt from the 8-bit working copy, they lost their low 8 bits); with a change to apply, it is applied."""
    src = tmp_path / "in"
    rng = np.random.default_rng(2)
    sent = []
    with Writer(src, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=TYPESTORE)
        for i in range(3):
            msg = make_image(np.zeros((*SIZE, 3), np.uint8), "rgb", "mono16", 1_000_000_000 + i, "cam")
            values = rng.integers(0, 4096, SIZE, dtype=np.uint16)
            msg.data = values.view(np.uint8).reshape(-1)
            sent.append(values)
            writer.write(conn, 1_000_000_000 + i, bytes(TYPESTORE.serialize_cdr(msg, IMAGE_TYPE)))

    def corrected(*extra: str) -> list[np.ndarray]:
        out = tmp_path / f"out{'_'.join(extra)}"
        assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "torch_cpu", "--model",
                       str(tiny_model), "--strength", "0", *extra) == 0
        images = [deserialize(d, IMAGE_TYPE) for t, _, d in read_bag(out)[1] if t == CORRECTED]
        assert [m.encoding for m in images] == ["mono16"] * 3
        return [m.data.view(np.uint16).reshape(SIZE) for m in images]

    for values, out in zip(sent, corrected(), strict=True):
        np.testing.assert_array_equal(out, values)
    for values, out in zip(sent, corrected("--strength", "1", "--backend", "passthrough"), strict=True):
        np.testing.assert_array_equal(out, values)  # a backend that changes nothing: the same
    for values, out in zip(sent, corrected("--exposure-compensation", "1"), strict=True):
        assert out.mean() > 1.2 * values.mean()


def humble_bag(path: Path, frames: int, extra_type: str | None = None) -> Path:
    """A bag as Humble's rosbag2 writes it by default: sqlite3, metadata version 5, no message definitions (rosbags
    writes definitions, so the file is made by hand). `extra_type`: one more topic, /thing, of that type."""
    import json
    import sqlite3

    path.mkdir()
    db = sqlite3.connect(path / f"{path.name}_0.db3")
    db.executescript(
        "CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);"
        "INSERT INTO schema VALUES(3, 'humble');"
        "CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);"
        "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,"
        " serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);"
        "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,"
        " data BLOB NOT NULL);")
    topics = [(IMAGE_TOPIC, IMAGE_TYPE, frames)] + ([("/thing", extra_type, 1)] if extra_type else [])
    t0, entries = 1_700_000_000_000_000_000, []
    for topic_id, (topic, msgtype, count) in enumerate(topics, start=1):
        db.execute("INSERT INTO topics VALUES(?, ?, ?, 'cdr', '')", (topic_id, topic, msgtype))
        for i in range(count):
            data = b"\x00\x01\x00\x00abcd"
            if msgtype == IMAGE_TYPE:
                data = bytes(TYPESTORE.serialize_cdr(
                    make_image(np.full((*SIZE, 3), 20 + i, np.uint8), "rgb", "rgb8", t0 + i, "cam"), IMAGE_TYPE))
            db.execute("INSERT INTO messages(topic_id, timestamp, data) VALUES(?, ?, ?)", (topic_id, t0 + i, data))
        entries.append(f"    - topic_metadata:\n        name: {topic}\n        type: {msgtype}\n"
                       f"        serialization_format: cdr\n        offered_qos_profiles: \"\"\n"
                       f"      message_count: {count}\n")
    db.commit()
    db.close()
    total = sum(c for _, _, c in topics)
    (path / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  version: 5\n  storage_identifier: sqlite3\n"
        f"  duration:\n    nanoseconds: {frames}\n  starting_time:\n    nanoseconds_since_epoch: {t0}\n"
        f"  message_count: {total}\n  topics_with_message_count:\n{''.join(entries)}"
        f"  compression_format: \"\"\n  compression_mode: \"\"\n  relative_file_paths:\n"
        f"    - {json.dumps(path.name + '_0.db3')}\n")
    return path


def test_a_humble_bag_without_message_definitions_is_processed(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Humble's default bags store no definitions; rosbags refused them ("Instantiate AnyReader with a
    default_typestore argument"). A type of the bag's own can then not be copied: one line, exit 2."""
    src = humble_bag(tmp_path / "humble", frames=3)
    assert process(str(src), str(tmp_path / "out"), "--topic", IMAGE_TOPIC, "--backend", "passthrough") == 0
    _, msgs = read_bag(tmp_path / "out")
    assert [t for t, _, _ in msgs].count(CORRECTED) == 3 and [t for t, _, _ in msgs].count(IMAGE_TOPIC) == 3
    capsys.readouterr()
    src = humble_bag(tmp_path / "custom", frames=2, extra_type="my_pkg/msg/Thing")
    assert process(str(src), str(tmp_path / "out2"), "--topic", IMAGE_TOPIC, "--backend", "passthrough") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("illexp_bag process: error: /thing has type my_pkg/msg/Thing, which the bag does not")
    assert not (tmp_path / "out2").exists()


COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"


@pytest.mark.parametrize("compression", ["jpeg", "png"])
def test_compressed_output_carries_each_corrected_frame(tmp_path: Path, tiny_model: Path, compression: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    """--compressed adds <out topic>/compressed: one CompressedImage per corrected Image, same header, bag time
    and QoS, image_transport's format string, decoding to the corrected pixels (png exactly, jpeg q95 closely)."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_sample_bag(src, frames=3, size=SIZE, with_reference=False)
    assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "torch_cpu",
                   "--model", str(tiny_model), "--compressed", compression) == 0
    assert f"3 frames corrected, also as {compression}" in capsys.readouterr().out
    conns, msgs = read_bag(out)
    raw = {ts: deserialize(d, IMAGE_TYPE) for t, ts, d in msgs if t == CORRECTED}
    coded = [(ts, deserialize(d, COMPRESSED_TYPE)) for t, ts, d in msgs if t == f"{CORRECTED}/compressed"]
    assert len(raw) == 3 and sorted(ts for ts, _ in coded) == sorted(raw)
    (conn,) = [c for c in conns if c.topic == f"{CORRECTED}/compressed"]
    (raw_conn,) = [c for c in conns if c.topic == CORRECTED]
    assert conn.msgtype == COMPRESSED_TYPE and conn.ext.offered_qos_profiles == raw_conn.ext.offered_qos_profiles
    for ts, msg in coded:
        assert msg.header == raw[ts].header
        assert msg.format == f"rgb8; {compression} compressed bgr8"
        decoded = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]  # bgr -> rgb8
        corrected = np.asarray(raw[ts].data).reshape(*SIZE, 3)
        if compression == "png":
            np.testing.assert_array_equal(decoded, corrected)
        else:
            assert cv2.PSNR(decoded, corrected) > 30.0


def test_compressed_output_follows_quality_and_stays_off_by_default(tmp_path: Path, tiny_model: Path) -> None:
    src = tmp_path / "in"
    write_sample_bag(src, frames=2, size=(96, 128), with_reference=False)
    sizes = {}
    for quality in ("20", "95"):
        out = tmp_path / f"q{quality}"
        assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                       "--model", str(tiny_model), "--compressed", "jpeg", "--jpeg-quality", quality) == 0
        sizes[quality] = sum(len(d) for t, _, d in read_bag(out)[1] if t.endswith("/compressed"))
    assert sizes["20"] < sizes["95"] / 2
    out = tmp_path / "plain"
    assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                   "--model", str(tiny_model)) == 0
    assert not [c for c in read_bag(out)[0] if c.msgtype == COMPRESSED_TYPE]


@pytest.mark.parametrize(("extra", "expected"), [
    (["--compressed", "jpeg", "--jpeg-quality", "0"], "--jpeg-quality must be in 1..100, got 0"),
    (["--compressed", "png", "--png-level", "10"], "--png-level must be in 0..9, got 10"),
    (["--compressed", "jpeg", "--out-topic", "/cam/fixed"], "already has topic /cam/fixed/compressed"),
])
def test_compressed_output_errors(tmp_path: Path, tiny_model: Path, extra: list[str], expected: str,
                                  capsys: pytest.CaptureFixture) -> None:
    """Out-of-range settings and a compressed topic the bag already has: one line, status 2, no output."""
    sample, src, out = tmp_path / "sample", tmp_path / "in", tmp_path / "out"
    write_sample_bag(sample, frames=1, size=SIZE, with_reference=False)
    common = ["--topic", IMAGE_TOPIC, "--backend", "passthrough", "--model", str(tiny_model)]
    # IN = the sample plus a topic named where `--out-topic /cam/fixed --compressed` would write
    assert process(str(sample), str(src), *common, "--out-topic", "/cam/fixed/compressed") == 0
    capsys.readouterr()
    assert process(str(src), str(out), *common, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and err[0].startswith("illexp_bag process: error:")
    assert not out.exists()


def test_existing_output_needs_force_and_force_replaces_only_a_bag(tmp_path: Path, tiny_model: Path,
                                                                  capsys: pytest.CaptureFixture,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """--force replaced whatever OUT was: a folder of notes, a file, `.` (the working folder: deleted, then the run
    failed on it)."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_sample_bag(src, frames=2, size=SIZE)
    out.mkdir()
    (out / "keep.txt").write_text("x")
    note = tmp_path / "note.txt"
    note.write_text("x")
    args = ["--topic", IMAGE_TOPIC, "--backend", "passthrough", "--model", str(tiny_model)]
    assert process(str(src), str(out), *args) == 2
    assert "--force" in capsys.readouterr().err
    for target in (out, note):
        assert process(str(src), str(target), *args, "--force") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"illexp_bag process: error: {target} exists and is not a bag (a folder with metadata.yaml); "
                       f"--force replaces only a bag"], err
    assert (out / "keep.txt").read_text() == "x" and note.read_text() == "x"
    monkeypatch.chdir(out)
    assert process(str(src), ".", *args, "--force") == 2
    assert capsys.readouterr().err.strip().endswith("OUT (.) is the working folder or holds it; not replaced")
    assert (out / "keep.txt").read_text() == "x"
    monkeypatch.chdir(tmp_path)
    bag = tmp_path / "bag"
    assert process(str(src), str(bag), *args) == 0
    assert process(str(src), str(bag), *args, "--force") == 0  # a bag is replaced
    assert len(read_bag(bag)[1]) == 2 + 2 + 2
    (tmp_path / "empty").mkdir()
    assert process(str(src), str(tmp_path / "empty"), *args, "--force") == 0  # and so is an empty folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag", "empty", "in", "note.txt", "out"]  # no work folder


def test_out_that_contains_in_is_refused_even_with_force(tmp_path: Path, tiny_model: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """Replacing OUT would delete IN with it."""
    src = tmp_path / "parent" / "in"
    write_sample_bag(src, frames=1, size=SIZE)
    assert process(str(src), str(tmp_path / "parent"), "--topic", IMAGE_TOPIC, "--force",
                   "--backend", "passthrough", "--model", str(tiny_model)) == 2
    assert capsys.readouterr().err.strip() == (f"illexp_bag process: error: OUT ({tmp_path / 'parent'}) must not "
                                               f"contain IN ({src})")
    assert len(read_bag(src)[1]) == 2  # the image and its reference, untouched
    # OUT inside IN: with --force one of IN's own files was replaced by the new bag, and IN was gone
    (storage,) = src.glob("*.mcap")
    for out in (storage, src / "copy"):
        assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--force", "--backend", "passthrough") == 2
        assert capsys.readouterr().err.strip().endswith(f"OUT ({out}) must not be inside IN ({src})")
    assert storage.is_file() and len(read_bag(src)[1]) == 2


def test_a_file_compressed_mcap_bag_stays_mcap(tmp_path: Path) -> None:
    """OUT's storage is IN's: a bag compressed per file (x.mcap.zstd) was taken for sqlite3 by its suffix."""
    from rosbags.rosbag2 import CompressionFormat, CompressionMode

    src = tmp_path / "zipped"
    writer = Writer(src, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.FILE, CompressionFormat.ZSTD)
    with writer:
        conn = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=TYPESTORE)
        writer.write(conn, 1, bytes(TYPESTORE.serialize_cdr(
            make_image(np.zeros((*SIZE, 3), np.uint8), "rgb", "rgb8", 1, "cam"), IMAGE_TYPE)))
    assert [p.name for p in src.glob("*.zstd")] == ["zipped.mcap.zstd"]
    assert process(str(src), str(tmp_path / "out"), "--topic", IMAGE_TOPIC, "--backend", "passthrough") == 0
    assert [p.suffix for p in (tmp_path / "out").iterdir() if p.name != "metadata.yaml"] == [".mcap"]


def test_a_relative_out_topic_is_stored_by_its_full_name(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """rosbag2 stores full names: `cam/fixed` written as given was another topic than `/cam/fixed`, so the check
    for a topic IN already has missed it, and a replay would publish two types on one name."""
    src = _sample_bag(tmp_path / "in")
    assert process(str(src), str(tmp_path / "out"), "--topic", IMAGE_TOPIC, "--out-topic", "cam/fixed",
                   "--backend", "passthrough") == 0
    assert "/cam/fixed" in {c.topic for c in read_bag(tmp_path / "out")[0]}
    taken = IMAGE_TOPIC.lstrip("/")  # IN's own image topic, named relatively
    assert process(str(src), str(tmp_path / "out2"), "--topic", IMAGE_TOPIC, "--out-topic", taken,
                   "--backend", "passthrough") == 2
    assert f"already has topic {IMAGE_TOPIC}" in capsys.readouterr().err


@pytest.mark.parametrize(("out_topic", "expected"), [
    ("/cam/corrected/", "must not end with a '/'"),
    ("corrected image", "must not contain characters other than"),
    ("/cam//corrected", "must not contain repeated '/'"),
    ("/cam/2x", "token that starts with a number"),
])
def test_an_invalid_out_topic_is_refused(tmp_path: Path, tiny_model: Path, out_topic: str, expected: str,
                                         capsys: pytest.CaptureFixture) -> None:
    src = _sample_bag(tmp_path / "in")
    assert process(str(src), str(tmp_path / "out"), "--topic", IMAGE_TOPIC, "--out-topic", out_topic,
                   "--backend", "passthrough", "--model", str(tiny_model)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"--out-topic {out_topic!r} is not a valid ROS 2 topic name" in err[0], err
    assert expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_an_output_that_cannot_be_created_gives_one_line(tmp_path: Path, tiny_model: Path) -> None:
    src = _sample_bag(tmp_path / "in")
    (tmp_path / "file").write_text("not a directory")
    for command in (["process", str(src), str(tmp_path / "file" / "out")],
                    ["sheet", str(src), "--out", str(tmp_path / "file" / "sheet.png")]):
        result = subprocess.run([*TOOL, *command, "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                                 "--model", str(tiny_model)], capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert lines[0].startswith(f"illexp_bag {command[0]}: error: ") and str(tmp_path / "file") in lines[0]


def test_a_bag_that_does_not_check_out_is_refused_before_the_runtime_loads(tmp_path: Path) -> None:
    """The runtime (torch) takes seconds to import: a missing bag is said at once, and Ctrl-C during that
    import cannot happen before the tool handles it."""
    code = ("import sys; from illexp_ros.ros.bags.tool import main; "
            f"rc = main(['process', {str(tmp_path / 'missing')!r}, {str(tmp_path / 'out')!r}, '--topic', '/x']); "
            "print(rc, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["2", "False"], result.stderr


def bag_with_bad_frames(path: Path, good: int, payloads: list[bytes | None]) -> None:
    """`good` rgb8 frames, then for each payload a bad message on IMAGE_TOPIC: None = a 32FC1 image (an encoding
    the node does not read), else those bytes as the serialized message (a truncated CDR payload), then one more
    good frame if good > 0."""
    rng = np.random.default_rng(5)
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=TYPESTORE)
        ts = 1_000_000_000

        def frame(encoding: str = "rgb8") -> bytes:
            msg = make_image(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), "rgb", "rgb8", ts, "cam")
            if encoding != "rgb8":
                msg.encoding, msg.step = encoding, SIZE[1] * 4  # 4 bytes per float pixel: data is 3/4 of it
            return bytes(TYPESTORE.serialize_cdr(msg, IMAGE_TYPE))

        for data in [frame() for _ in range(good)] + [p or frame("32FC1") for p in payloads] + [frame()] * (good > 0):
            writer.write(conn, ts, data)
            ts += 33_000_000


def test_unreadable_frames_are_copied_and_skipped_and_the_rest_corrected(tmp_path: Path, tiny_model: Path) -> None:
    """As the node: a bad frame is said and counted, the next one is corrected, and nothing of IN is lost."""
    src, out = tmp_path / "in", tmp_path / "out"
    bag_with_bad_frames(src, good=2, payloads=[None, b"\x00\x01\x00\x00" + bytes(22)])
    result = subprocess.run([*TOOL, "process", str(src), str(out), "--topic", IMAGE_TOPIC, "--no-progress",
                             "--backend", "passthrough", "--model", str(tiny_model)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    skipped = [line for line in result.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and "unsupported encoding '32FC1'" in skipped[0] and "corrupt" in skipped[1], skipped
    assert "5 messages copied, 3 frames corrected, 2 unreadable frames copied but not corrected" in result.stdout
    (_, src_msgs), (_, out_msgs) = read_bag(src), read_bag(out)
    assert [m for m in out_msgs if m[0] == IMAGE_TOPIC] == src_msgs  # every input message, bad ones included
    assert len([m for m in out_msgs if m[0] == CORRECTED]) == 3


def test_a_topic_with_no_readable_frame_is_one_error_line(tmp_path: Path, tiny_model: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    bag_with_bad_frames(src, good=0, payloads=[None, None, None])
    assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                   "--model", str(tiny_model)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"illexp_bag process: error: no frame on {IMAGE_TOPIC}"), err
    assert "(3 rejected; the first: unsupported encoding '32FC1'" in err[0]
    assert not out.exists()


def _empty_bag(path: Path) -> Path:
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        writer.add_connection(IMAGE_TOPIC, IMAGE_TYPE, typestore=TYPESTORE)
    return path


def _sample_bag(path: Path) -> Path:
    write_sample_bag(path, frames=2, size=SIZE)
    return path


def _string_bag(path: Path) -> Path:
    string_type = "std_msgs/msg/String"
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/chatter", string_type, typestore=TYPESTORE)
        msg = TYPESTORE.types[string_type](data="hello")
        writer.write(conn, 1, bytes(TYPESTORE.serialize_cdr(msg, string_type)))
    return path


def _garbage_mcap(path: Path) -> Path:
    path.write_bytes(b"\x89MCAP0\r\n" + os.urandom(4096))
    return path


def _truncated_mcap(path: Path) -> Path:
    write_sample_bag(path, frames=4, size=SIZE)
    (data,) = path.glob("*.mcap")
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    return path


def _garbage_sqlite(path: Path) -> Path:
    write_sample_bag(path, frames=2, size=SIZE, storage="sqlite3")
    (data,) = path.glob("*.db3")
    data.write_bytes(os.urandom(data.stat().st_size))
    return path


@pytest.mark.parametrize(("make_bag", "topic", "expected"), [
    (_empty_bag, IMAGE_TOPIC, "empty"),
    (_garbage_mcap, IMAGE_TOPIC, "cannot read bag"),
    (_truncated_mcap, IMAGE_TOPIC, "cannot read bag"),
    (_garbage_sqlite, IMAGE_TOPIC, "cannot read bag"),
    (_sample_bag, "/no/such/topic", "not in bag"),
    (_string_bag, "/chatter", "not sensor_msgs/Image or CompressedImage"),
])
def test_bad_bags_give_one_error_line_and_status_2(tmp_path: Path, tiny_model: Path, make_bag, topic: str,
                                                   expected: str, capsys: pytest.CaptureFixture) -> None:
    src = make_bag(tmp_path / ("bag.mcap" if make_bag is _garbage_mcap else "bag"))
    out = tmp_path / "out"
    assert process(str(src), str(out), "--topic", topic, "--backend", "passthrough",
                   "--model", str(tiny_model)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and err[0].startswith("illexp_bag process: error:")
    assert not out.exists()


def test_exit_status_of_the_command(tmp_path: Path) -> None:
    result = subprocess.run([*TOOL, "process", str(tmp_path / "missing"), str(tmp_path / "out"),
                             "--topic", IMAGE_TOPIC], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"illexp_bag process: error: bag not found: {tmp_path}/missing"]


def _start_slow_run(tmp_path: Path, tiny_model: Path) -> tuple[subprocess.Popen, Path, Path]:
    """A run that takes seconds (a real network on 100 frames): long enough to be interrupted midway."""
    src, out = tmp_path / "in", tmp_path / "out"
    write_sample_bag(src, frames=100, size=(240, 320), with_reference=False)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # SIGINT back to its default in the child: a suite started as a background job of a non-interactive shell
    # (`make test &`) hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen([*TOOL, "process", str(src), str(out), "--topic", IMAGE_TOPIC, "--no-progress",
                             "--backend", "torch_cpu", "--mode", "mixed", "--model", str(tiny_model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    work = tmp_path / f".out.partial-{proc.pid}"
    deadline = time.monotonic() + 60
    # Wait until the output bag is being written (the work directory's storage file has data in it).
    while not any(f.stat().st_size > 0 for f in work.glob("out/*.mcap")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never started writing"
        time.sleep(0.02)
    return proc, out, work


def test_sigkill_midway_leaves_no_output(tmp_path: Path, tiny_model: Path) -> None:
    proc, out, work = _start_slow_run(tmp_path, tiny_model)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL  # killed midway, not finished
    assert not out.exists()
    # The next run cleans up what the killed one left and writes OUT.
    assert process(str(tmp_path / "in"), str(out), "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                   "--model", str(tiny_model)) == 0
    assert out.is_dir() and not work.exists()


def test_leftovers_of_a_killed_run_are_found_whatever_the_name(tmp_path: Path) -> None:
    """A work directory left by a dead process is removed by the next run on that OUT, also when OUT's name holds
    glob characters (the pattern missed them); a live process's is kept."""
    from illexp_ros.ros.bags.process import PARTIAL_TAG, remove_stale_work_dirs

    out = tmp_path / "run[1]"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".{out.name}{PARTIAL_TAG}{dead.pid}"
    alive = tmp_path / f".{out.name}{PARTIAL_TAG}{os.getpid()}"
    for work in (left, alive):
        work.mkdir()
    remove_stale_work_dirs(out)
    assert not left.exists() and alive.exists()


def test_ctrl_c_midway_leaves_nothing(tmp_path: Path, tiny_model: Path) -> None:
    proc, out, work = _start_slow_run(tmp_path, tiny_model)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "illexp_bag process: interrupted; no output left behind"
    assert not out.exists() and not work.exists()


def test_bag_processing_does_not_import_rclpy() -> None:
    code = ("import sys, illexp_ros.ros.bags.tool, illexp_ros.ros.bags.process, illexp_ros.ros.bags.sheet; "
            "print('rclpy' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_process_smooths_the_level_as_the_node_does(tmp_path: Path) -> None:
    """Default --level-smoothing is the node's (0.9): the first frame is the network's own, later ones carry the
    averaged gain; 0 gives every frame as the network corrects it."""
    from illexp_ros.ros.node.parameters import PARAMETERS
    from illexp_ros.runtime import Enhancer
    from illexp_ros.runtime.level_smoothing import LevelSmoother

    assert bag_tool.DEFAULT_LEVEL_SMOOTHING == PARAMETERS["level_smoothing"].default
    assert (0.0, bag_tool.MAX_LEVEL_SMOOTHING) == PARAMETERS["level_smoothing"].float_range
    src = tmp_path / "in"
    write_sample_bag(src, frames=60, size=SIZE, with_reference=False)  # slow enough for the smoothing to act
    outputs = {}
    for weight in ("0", None):
        out = tmp_path / f"out{weight}"
        extra = ["--level-smoothing", weight] if weight else []
        assert process(str(src), str(out), "--topic", IMAGE_TOPIC, "--backend", "torch_cpu", "--fast",
                       *extra) == 0
        _, msgs = read_bag(out)
        outputs[weight] = [(ts, deserialize(d, IMAGE_TYPE).data.reshape(*SIZE, 3)) for t, ts, d in msgs
                           if t == CORRECTED]
    _, msgs = read_bag(src)
    frames = [(ts, deserialize(d, IMAGE_TYPE)) for t, ts, d in msgs if t == IMAGE_TOPIC]
    enhancer = Enhancer.from_model(backend="torch_cpu", mode="mixed", fast=True, logger=lambda line: None)
    smoother = LevelSmoother(0.9)
    changed = 0
    for (ts, msg), (_, raw), (_, steady) in zip(frames, outputs["0"], outputs[None], strict=True):
        pixels = msg.data.reshape(*SIZE, 3)
        own = enhancer.enhance(pixels, color_order="bgr" if msg.encoding == "bgr8" else "rgb")
        np.testing.assert_array_equal(raw, own)
        np.testing.assert_array_equal(steady, smoother.apply(pixels, own, ts * 1e-9, "mixed_fast"))
        changed += not np.array_equal(steady, raw)
    assert changed >= 10, changed
    np.testing.assert_array_equal(outputs[None][0][1], outputs["0"][0][1])  # the first frame: unchanged
    with pytest.raises(SystemExit):
        process(str(src), str(tmp_path / "bad"), "--topic", IMAGE_TOPIC, "--level-smoothing", "1")


def test_model_defaults_are_the_nodes() -> None:
    """process / sheet correct as the node does unless told otherwise: fast mode, mode mixed, smoothing 0.9."""
    from illexp_ros.ros.node.parameters import PARAMETERS

    for command in (["process", "IN", "OUT"], ["sheet", "IN", "--out", "s.png"]):
        args = bag_tool.build_parser().parse_args([*command, "--topic", "/t"])
        assert (args.fast, args.mode) == (PARAMETERS["fast"].default, PARAMETERS["mode"].default)
        assert bag_tool.build_parser().parse_args([*command, "--topic", "/t", "--no-fast"]).fast is False
    args = bag_tool.build_parser().parse_args(["process", "IN", "OUT", "--topic", "/t"])
    assert args.level_smoothing == PARAMETERS["level_smoothing"].default
    assert (args.compressed, args.jpeg_quality, args.png_level) == (
        None, PARAMETERS["jpeg_quality"].default, PARAMETERS["png_level"].default)


def test_threads_caps_the_cpu_backends_as_the_node_parameter(tmp_path: Path, tiny_model: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """--threads reaches the Enhancer (README: the tools cap the CPU backends' threads); a negative count is one
    argparse error."""
    from illexp_ros.runtime import Enhancer

    asked = []
    original = Enhancer.from_model.__func__

    def recording(cls, *args, **kwargs):
        asked.append(kwargs.get("threads"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(Enhancer, "from_model", classmethod(recording))
    src = tmp_path / "in"
    write_sample_bag(src, frames=2, size=SIZE)
    assert process(str(src), str(tmp_path / "out"), "--topic", IMAGE_TOPIC, "--backend", "passthrough",
                   "--model", str(tiny_model), "--threads", "1") == 0
    assert bag_tool.main(["sheet", str(src), "--topic", IMAGE_TOPIC, "--out", str(tmp_path / "s.png"),
                          "--backend", "passthrough", "--model", str(tiny_model), "--frames", "1"]) == 0
    assert asked == [1, 0]
    with pytest.raises(SystemExit) as exc:
        process(str(src), str(tmp_path / "out2"), "--topic", IMAGE_TOPIC, "--threads", "-1")
    assert exc.value.code == 2 and "--threads: must be >= 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # 100000 started 22,000 threads that ignored SIGTERM
        process(str(src), str(tmp_path / "out2"), "--topic", IMAGE_TOPIC, "--threads", "100000")
    assert exc.value.code == 2 and "--threads: must be in 0..256, got 100000" in capsys.readouterr().err


def test_main_leaves_the_callers_signal_handlers_as_they_were(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert process(str(tmp_path / "missing"), str(tmp_path / "out"), "--topic", IMAGE_TOPIC) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def stereo_bag(path: Path, pairs: int, lone_left_stamps: tuple[int, ...] = (), right_offset_ns: int = 0,
               right_logged_late_ns: int = 0, right_unreadable: bool = False,
               more_topics: tuple[str, ...] = ()) -> None:
    """Left and right views (two windows 16 px apart of one under-exposed photograph) on /stereo/left and
    /stereo/right, one pair per 100 ms, the right stamped `right_offset_ns` after the left and logged
    `right_logged_late_ns` after its stamp (32FC1, which nothing reads, with `right_unreadable`); plus left frames
    stamped `lone_left_stamps` whose right view is missing, and one left frame on each of `more_topics`."""
    from skimage import data as skdata

    photo = cv2.resize(skdata.astronaut(), (SIZE[1] + 16, SIZE[0]), interpolation=cv2.INTER_AREA)
    dark = (photo.astype(np.float32) * 0.25).astype(np.uint8)
    left, right = np.ascontiguousarray(dark[:, 16:]), np.ascontiguousarray(dark[:, :SIZE[1]])
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conns = [writer.add_connection(f"/stereo/{side}", IMAGE_TYPE, typestore=TYPESTORE)
                 for side in ("left", "right")]
        messages = []
        for i in range(pairs):
            stamp = 1_000_000_000 + i * 100_000_000
            messages.append((conns[0], stamp, make_image(left, "rgb", "rgb8", stamp, "left_optical")))
            view = make_image(right, "rgb", "rgb8", stamp + right_offset_ns, "right_optical")
            if right_unreadable:
                view.encoding = "32FC1"
            messages.append((conns[1], stamp + right_offset_ns + right_logged_late_ns, view))
        for stamp in lone_left_stamps:
            messages.append((conns[0], stamp, make_image(left, "rgb", "rgb8", stamp, "left_optical")))
        for topic in more_topics:
            conn = writer.add_connection(topic, IMAGE_TYPE, typestore=TYPESTORE)
            messages.append((conn, 1_000_000_000, make_image(left, "rgb", "rgb8", 1_000_000_000, "x")))
        for conn, stamp, msg in sorted(messages, key=lambda m: m[1]):
            writer.write(conn, stamp, bytes(TYPESTORE.serialize_cdr(msg, IMAGE_TYPE)))


def test_stereo_views_are_corrected_together_at_one_level(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from illexp_ros.runtime.level_smoothing import frame_level

    src, out = tmp_path / "in", tmp_path / "out"
    stereo_bag(src, pairs=3, lone_left_stamps=(1_050_000_000,))
    assert process(str(src), str(out), "--topic", "/stereo/left", "--right-topic", "/stereo/right",
                   "--backend", "torch_cpu", "--level-smoothing", "0") == 0
    line = capsys.readouterr().out
    assert "6 frames corrected" in line and "1 view without a partner copied but not corrected" in line, line
    _, in_msgs = read_bag(src)
    _, out_msgs = read_bag(out)
    assert sorted(m for m in out_msgs if not m[0].endswith("/corrected")) == sorted(in_msgs)
    inputs = {(topic, ts): deserialize(data, IMAGE_TYPE) for topic, ts, data in in_msgs}
    corrected = {side: {ts: deserialize(data, IMAGE_TYPE) for topic, ts, data in out_msgs
                        if topic == f"/stereo/{side}/corrected"} for side in ("left", "right")}
    assert sorted(corrected["left"]) == sorted(corrected["right"]) == [1_000_000_000, 1_100_000_000, 1_200_000_000]

    def pixels(msg):
        return np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.width, 3)
    for ts in corrected["left"]:
        gains = []
        for side in ("left", "right"):
            msg, src_msg = corrected[side][ts], inputs[(f"/stereo/{side}", ts)]
            assert msg.header == src_msg.header
            gains.append(frame_level(pixels(msg)) - frame_level(pixels(src_msg)))
        assert gains[0] > 0.5 and abs(gains[0] - gains[1]) < 0.01, gains  # brightened, both alike


def test_stereo_processing_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "in"
    stereo_bag(src, pairs=2, right_offset_ns=20_000_000)  # free-running cameras: never the same stamp
    base = [str(src), str(tmp_path / "out"), "--topic", "/stereo/left", "--backend", "passthrough"]
    for extra, expected in (
            (["--right-topic", "/stereo/right"], "no pair of views on /stereo/left and /stereo/right"),
            (["--right-topic", "/stereo/left"], "--right-topic must be another topic than --topic"),
            (["--right-topic", "/stereo/right", "--out-topic", "/x"], "--out-topic names one view's output"),
            (["--right-topic", "/stereo/right", "--sync-tolerance", "-1"], "--sync-tolerance must be in [0, 1]"),
            (["--right-topic", "/nowhere"], "topic /nowhere not in bag")):
        assert process(*base, *extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], (extra, err)
        assert not (tmp_path / "out").exists()
    # within a tolerance of 25 ms the same views pair
    assert process(*base, "--right-topic", "/stereo/right", "--sync-tolerance", "0.025") == 0
    assert "4 frames corrected" in capsys.readouterr().out
    # the stereo options mean nothing without --right-topic (were ignored, even a negative tolerance)
    assert process(*base, "--sync-tolerance", "-5") == 2
    assert capsys.readouterr().err.strip() == ("illexp_bag process: error: --sync-tolerance needs --right-topic "
                                               "(a stereo pair)")


def test_an_unreadable_view_is_named_not_blamed_on_the_stamps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Every right view unreadable: the error said the stamps never match (they do), after a line per frame."""
    src = tmp_path / "in"
    stereo_bag(src, pairs=4, right_unreadable=True)
    assert process(str(src), str(tmp_path / "out"), "--topic", "/stereo/left", "--right-topic", "/stereo/right",
                   "--backend", "passthrough") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could be corrected (4 rejected; the first:" in err[0] and "32FC1" in err[0], err


def test_a_view_logged_late_still_pairs_and_the_suffix_can_be_chosen(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """A right view logged 7 frames (0.7 s) after its stamp lost almost every pair with a queue of 5; and a bag
    that has <view>/corrected already could not be processed at all (--out-topic is refused in stereo mode)."""
    src = tmp_path / "in"
    stereo_bag(src, pairs=12, right_logged_late_ns=700_000_000,
               more_topics=("/stereo/left/corrected", "/stereo/right/corrected"))
    base = [str(src), str(tmp_path / "out"), "--topic", "/stereo/left", "--right-topic", "/stereo/right",
            "--backend", "passthrough"]
    assert process(*base) == 2
    assert "choose another --out-suffix" in capsys.readouterr().err
    assert process(*base, "--out-suffix", "again") == 0
    assert "24 frames corrected" in capsys.readouterr().out
    topics = {topic for topic, _, _ in read_bag(tmp_path / "out")[1]}
    assert {"/stereo/left/again", "/stereo/right/again"} <= topics
    assert process(*base, "--out-suffix", "again2", "--sync-queue-size", "5", "--force") == 0
    assert "without a partner" in capsys.readouterr().out  # the node's default queue of 5 loses pairs here
