"""`illexp_bag sheet`: the contact sheet has one column per sampled frame and before / after / exposure map
rows; with the passthrough backend "after" must show the same pixels as "before"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from illexp_ros.core.networks import IllExpNet
from illexp_ros.ros.bags import tool as bag_tool
from illexp_ros.ros.bags.sheet import GAP, HEADER_HEIGHT, LABEL_WIDTH, evenly_spaced
from illexp_ros.ros.demo.sample_data import IMAGE_TOPIC, write_sample_bag
from illexp_ros.runtime.model_io import save_model


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = {"attention_width": 8, "widths": [8, 16, 32, 64]}
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    return save_model(path, IllExpNet(attention_width=8, widths=(8, 16, 32, 64)), config, "tiny")


@pytest.mark.parametrize(("total", "count", "expected"), [
    (10, 3, [0, 4, 9]), (4, 6, [0, 1, 2, 3]), (7, 1, [3]), (0, 3, []),
])
def test_evenly_spaced(total: int, count: int, expected: list[int]) -> None:
    assert evenly_spaced(total, count) == expected


def test_sheet_layout_and_passthrough_rows(tmp_path: Path, tiny_model: Path) -> None:
    bag, out = tmp_path / "bag", tmp_path / "sheet.png"
    frames = write_sample_bag(bag, frames=7, size=(48, 64))
    assert bag_tool.main(["sheet", str(bag), "--topic", IMAGE_TOPIC, "--out", str(out), "--frames", "3",
                          "--backend", "passthrough", "--model", str(tiny_model)]) == 0
    sheet = cv2.imread(str(out))[..., ::-1]
    thumb_w, thumb_h = 240, 180  # 64x48 frames scaled to the 240-pixel thumbnail width
    assert sheet.shape == (HEADER_HEIGHT + 3 * (thumb_h + GAP), LABEL_WIDTH + 3 * (thumb_w + GAP), 3)

    def tile(row: int, col: int) -> np.ndarray:
        y, x = HEADER_HEIGHT + row * (thumb_h + GAP), LABEL_WIDTH + col * (thumb_w + GAP)
        return sheet[y:y + thumb_h, x:x + thumb_w].astype(int)

    for col, index in enumerate([0, 3, 6]):  # evenly spaced over the 7 frames
        expected = cv2.resize(frames[index].degraded, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA)
        assert np.abs(tile(0, col) - expected).max() <= 1
        np.testing.assert_array_equal(tile(1, col), tile(0, col))


def test_frames_of_another_shape_keep_theirs_and_extreme_ones_keep_the_sheet_small(tmp_path: Path) -> None:
    """render_sheet sized every cell by the first frame and squashed the others into it; a 97 x 1 first frame
    made a sheet over 23000 pixels tall."""
    from illexp_ros.ros.bags.sheet import BACKGROUND, render_sheet

    wide, tall = np.full((40, 80, 3), 200, np.uint8), np.full((80, 40, 3), 200, np.uint8)
    out = render_sheet([("row", [wide, tall])], tmp_path / "s.png", thumb_width=100)
    sheet = cv2.imread(str(out))[..., ::-1]
    y, x = GAP, LABEL_WIDTH + 100 + GAP  # the tall frame's cell: 100 x 50 (the first frame's shape)
    cell = sheet[y:y + 50, x:x + 100]
    assert (cell[:, 37:62] == 200).all()  # 25 x 50: kept in shape, centred...
    assert (cell[:, :37] == BACKGROUND).all() and (cell[:, 62:] == BACKGROUND).all()  # ...with bars beside it
    out = render_sheet([("row", [np.zeros((97, 1, 3), np.uint8)])], tmp_path / "t.png", thumb_width=100)
    assert cv2.imread(str(out)).shape[0] == GAP + 200 + GAP  # cells at most 2:1 tall


def test_sheet_with_bad_output_name_is_one_line(tmp_path: Path, tiny_model: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=2, size=(48, 64))
    assert bag_tool.main(["sheet", str(bag), "--topic", IMAGE_TOPIC, "--out", str(tmp_path / "sheet.xyz"),
                          "--backend", "passthrough", "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]


def test_sheet_into_a_folder_it_cannot_write_is_one_line_with_the_reason(tmp_path: Path, tiny_model: Path) -> None:
    """cv2.imwrite printed its own "[ WARN:0@...] global loadsave.cpp ... imwrite_" line before ours, and ours did
    not say why."""
    bag = tmp_path / "bag"
    write_sample_bag(bag, frames=2, size=(48, 64))
    result = subprocess.run([sys.executable, "-m", "illexp_ros.ros.bags.tool", "sheet", str(bag), "--topic",
                             IMAGE_TOPIC, "--out", "/proc/illexp_sheet.png", "--backend", "passthrough",
                             "--model", str(tiny_model)], capture_output=True, text=True, timeout=120)
    err = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(err) == 1, result.stderr
    assert err[0].startswith("illexp_bag sheet: error: cannot write /proc/illexp_sheet.png: "), err


def test_sheet_applies_exposure_compensation_to_the_after_row(tmp_path: Path, tiny_model: Path) -> None:
    from illexp_ros.runtime.exposure_compensation import compensate_exposure

    bag, out = tmp_path / "bag", tmp_path / "sheet.png"
    frames = write_sample_bag(bag, frames=3, size=(48, 64))
    assert bag_tool.main(["sheet", str(bag), "--topic", IMAGE_TOPIC, "--out", str(out), "--frames", "1",
                          "--backend", "passthrough", "--model", str(tiny_model),
                          "--exposure-compensation", "1"]) == 0
    sheet = cv2.imread(str(out))[..., ::-1].astype(int)
    thumb_w, thumb_h = 240, 180
    y, x = HEADER_HEIGHT + thumb_h + GAP, LABEL_WIDTH  # "after", the one column (the middle frame)
    brighter = compensate_exposure(frames[1].degraded.copy(), 1.0)
    expected = cv2.resize(brighter, (thumb_w, thumb_h), interpolation=cv2.INTER_AREA).astype(int)
    before = sheet[HEADER_HEIGHT:HEADER_HEIGHT + thumb_h, x:x + thumb_w]
    assert np.abs(sheet[y:y + thumb_h, x:x + thumb_w] - expected).max() <= 1
    assert sheet[y:y + thumb_h, x:x + thumb_w].mean() > before.mean() + 10
    with pytest.raises(SystemExit):
        bag_tool.build_parser().parse_args(["sheet", str(bag), "--topic", IMAGE_TOPIC, "--out", str(out),
                                            "--exposure-compensation", "4"])


def test_sheet_at_strength_zero_shows_the_input_as_after(tmp_path: Path, tiny_model: Path) -> None:
    bag, out = tmp_path / "bag", tmp_path / "sheet.png"
    write_sample_bag(bag, frames=2, size=(48, 64))
    assert bag_tool.main(["sheet", str(bag), "--topic", IMAGE_TOPIC, "--out", str(out), "--frames", "2",
                          "--backend", "torch_cpu", "--model", str(tiny_model), "--strength", "0"]) == 0
    sheet = cv2.imread(str(out))[..., ::-1]
    thumb_w, thumb_h = 240, 180
    for col in range(2):
        x = LABEL_WIDTH + col * (thumb_w + GAP)
        before = sheet[HEADER_HEIGHT:HEADER_HEIGHT + thumb_h, x:x + thumb_w]
        after = sheet[HEADER_HEIGHT + thumb_h + GAP:HEADER_HEIGHT + 2 * thumb_h + GAP, x:x + thumb_w]
        np.testing.assert_array_equal(after, before)


def test_an_unreadable_sampled_frame_is_replaced_by_the_next(tmp_path: Path, tiny_model: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    """As `process` and the node: said and skipped, not the end of the command."""
    from test_bag_process import bag_with_bad_frames

    bag = tmp_path / "bag"
    bag_with_bad_frames(bag, good=3, payloads=[None])  # frames 0-2 good, 3 a 32FC1 image, 4 good
    out = tmp_path / "sheet.png"
    assert bag_tool.main(["sheet", str(bag), "--topic", IMAGE_TOPIC, "--out", str(out), "--frames", "3",
                          "--backend", "passthrough", "--model", str(tiny_model)]) == 0  # samples 0, 2, 4
    assert "skipped" not in capsys.readouterr().err  # the bad frame was not sampled
    bag_with_bad_frames(tmp_path / "bag2", good=1, payloads=[None])  # frames 0 good, 1 bad, 2 good
    assert bag_tool.main(["sheet", str(tmp_path / "bag2"), "--topic", IMAGE_TOPIC, "--out", str(out),
                          "--frames", "1", "--backend", "passthrough", "--model", str(tiny_model)]) == 0  # samples 1
    err = capsys.readouterr().err
    assert "skipped" in err and "unsupported encoding '32FC1'" in err
    sheet = cv2.imread(str(out))
    assert sheet.shape[1] == LABEL_WIDTH + 1 * (240 + GAP)  # one column: frame 2 in frame 1's place


def test_a_topic_with_no_readable_frame_is_one_line(tmp_path: Path, tiny_model: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    from test_bag_process import bag_with_bad_frames

    bag = tmp_path / "bag"
    bag_with_bad_frames(bag, good=0, payloads=[None, None])
    assert bag_tool.main(["sheet", str(bag), "--topic", IMAGE_TOPIC, "--out", str(tmp_path / "s.png"),
                          "--backend", "passthrough", "--model", str(tiny_model)]) == 2
    assert "no frame on" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "s.png").exists()
