"""training/level_diagnosis.py: how much of the validation error is the overall brightness level."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_training import tiny_config  # noqa: E402

from training.config import load_config  # noqa: E402
from training.data import draw_kinds  # noqa: E402
from training.level_diagnosis import (  # noqa: E402
    best_gain,
    diagnose,
    level_blind_floor,
    level_error_stops,
)
from training.level_diagnosis import main as diagnosis_main  # noqa: E402


def test_gain_and_level_error_of_a_frame_at_half_brightness():
    ref = np.random.default_rng(0).uniform(0.1, 0.9, (16, 16, 3)).astype(np.float32)
    assert best_gain(ref / 2, ref) == pytest.approx(2.0)
    assert level_error_stops(ref / 2, ref) == pytest.approx(-1.0)
    assert best_gain(np.zeros_like(ref), ref) == 1.0  # no division by zero on a black output


def test_level_blind_floor_is_perfect_only_when_every_scene_has_the_same_level():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.6, (16, 16, 3)).astype(np.float32)
    assert level_blind_floor([base, base * 1.0]) > 60
    # Two scenes a stop apart: a reconstruction at their mean level is off for both.
    assert level_blind_floor([base, base * 0.5]) < 25


class HalfBrightness(torch.nn.Module):
    """Returns every frame at half its brightness: a pure level error, no detail lost."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 0.5, torch.zeros_like(x)


def test_diagnose_separates_a_level_error_from_the_rest():
    rng = np.random.default_rng(2)
    refs = [rng.uniform(0.05, 0.95, (24, 32, 3)).astype(np.float32) * s for s in (0.5, 0.8, 1.0)]
    result = diagnose(HalfBrightness(), {"well": [(str(i), r, r) for i, r in enumerate(refs)]}, None)
    well = result["well"]
    assert well["bias"] == pytest.approx(-1.0, abs=1e-4) and well["std"] < 1e-4
    assert well["psnr"] < 15 and well["gain_psnr"] > 60  # the whole error is the level
    assert well["off"] == 3  # every frame is a stop off

    # Only frames moved by more than LEVEL_OFF_STOPS count: x0.8 (-0.32 stops) does, x0.9 (-0.15) does not.
    class DarkensByLevel(torch.nn.Module):
        def forward(self, x):
            mean = float(x.mean())
            return x * (0.8 if mean < 0.3 else 0.9 if mean < 0.45 else 1.0), torch.zeros_like(x)

    some = diagnose(DarkensByLevel(), {"well": [(str(i), r, r) for i, r in enumerate(refs)]}, None)["well"]
    assert some["off"] == 1


def test_cli_prints_a_row_per_kind_and_writes_the_plot(tmp_path, capsys):
    cfg_path = tiny_config(tmp_path, max_steps=1)
    png = tmp_path / "level.png"
    model = Path(__file__).resolve().parents[1] / "models" / "mixed_fast.pt"
    rc = diagnosis_main(["--config", str(cfg_path), str(model), "--threads", "1", "--png", str(png)])
    out = capsys.readouterr().out
    assert rc == 0 and png.is_file() and png.stat().st_size > 1000
    rows = kind_rows(out)
    assert [r[0] for r in rows] == list(draw_kinds(load_config(cfg_path).data)), out
    for row in rows:  # the best per-image gain can only raise PSNR
        assert float(row[2]) >= float(row[1]) - 1e-6, row
    assert "validation pairs, fast mode at 64" in out and "level-blind floor" in out
    assert all(0 <= int(row[6].split("/")[0]) <= int(row[6].split("/")[1]) for row in rows), out
    assert score_of(out) == pytest.approx(np.mean([min(float(r[1]), 40.0) for r in rows]), abs=0.006)


@pytest.mark.parametrize(("png", "expected"), [
    ("{tmp}", "is a folder"),
    ("{tmp}/scatter", "must be a .png file name"),  # matplotlib wrote scatter.png, and the tool said "scatter"
])
def test_cli_png_that_would_go_astray_is_refused_at_once(tmp_path, capsys, png, expected):
    with pytest.raises(SystemExit) as exit_:
        diagnosis_main(["--config", "c.yaml", "m.pt", "--png", png.format(tmp=tmp_path)])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


def kind_rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()[2:]
            if line and not line.startswith(("level", "wrote", "off:", "score"))]


def score_of(out: str) -> float:
    return float(next(line for line in out.splitlines() if line.startswith("score")).split()[-1])


def test_cli_confirmation_pairs_are_the_photos_validation_leaves_out(tmp_path, capsys):
    cfg_path = tiny_config(tmp_path, max_steps=1)
    # 6 photos, half held out: validation takes 2 (max_val_images), confirmation the third.
    cfg_path.write_text(cfg_path.read_text().replace("max_val_images: 2", "max_val_images: 2, val_fraction: 0.5"))
    model = Path(__file__).resolve().parents[1] / "models" / "mixed_fast.pt"
    args = ["--config", str(cfg_path), str(model), "--threads", "1", "--set", "data.flat_prob=0.1"]
    assert diagnosis_main(args + ["--pairs", "confirmation"]) == 0
    confirm = capsys.readouterr().out
    assert "confirmation pairs" in confirm
    rows = kind_rows(confirm)
    assert rows[-1][0] == "flat" and all(r[6] == f"{r[6][0]}/1" for r in rows), confirm  # one photo per kind
    assert diagnosis_main(args) == 0
    validation = capsys.readouterr().out
    assert all(r[6].endswith("/2") for r in kind_rows(validation)) and score_of(validation) != score_of(confirm)
    # Validation taking every held-out photo leaves none: one clear line.
    assert diagnosis_main(args + ["--pairs", "confirmation", "--set", "data.max_val_images=3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no confirmation pairs" in err


def test_cli_bad_model_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    rc = diagnosis_main(["--config", str(tiny_config(tmp_path, max_steps=1)), str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error:") and "bad.pt" in err
