"""training/precise_bn.py and train.precise_bn_batches: BatchNorm statistics measured afresh before validation."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_training import tiny_config  # noqa: E402

from training.config import load_config  # noqa: E402
from training.data import TensorPatchSource, list_images, split_holdout, validation_sets  # noqa: E402
from training.precise_bn import batchnorm_names, fixed_draw_state, with_precise_bn  # noqa: E402
from training.train import train, training_model, validate  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_tiny(tmp_path: Path, steps: int = 30):
    cfg = load_config(tiny_config(tmp_path, max_steps=steps, extra_train=", stop: none"))
    train(cfg, "cpu", tmp_path / "runs", seed=0, resume=False, export=None, progress=False)
    ck = torch.load(tmp_path / "runs" / "tiny" / "checkpoint.pt", weights_only=False)
    model = training_model(cfg, "cpu")
    model.load_state_dict(ck["model"])
    return cfg, model.eval()


def test_measured_statistics_undo_a_spiked_variance_and_leave_the_draws_alone(tmp_path):
    cfg, model = trained_tiny(tmp_path)
    files = list_images(tmp_path / "photos")
    train_files, held = split_holdout(files, cfg.data.val_fraction, cfg.data.val_seed)
    val = validation_sets(held, cfg.data, seed=cfg.data.val_seed, crop=cfg.data.val_crop)
    source = TensorPatchSource(train_files, cfg.data, 0, "cpu")
    draws = fixed_draw_state(7)
    healthy = with_precise_bn(model, source, draws, 8, 2, cfg.data.crop, None)
    # What a rare batch leaves behind: one layer's running variance hundreds of times too large.
    spiked = training_model(cfg, "cpu")
    spiked.load_state_dict(healthy.state_dict())
    spiked.get_submodule("enhancement.up.1.1").running_var.mul_(500.0)
    spiked.eval()
    frame = torch.from_numpy(val["under"][0][1].transpose(2, 0, 1).copy())[None]
    with torch.no_grad():
        assert (spiked(frame)[0] - healthy(frame)[0]).abs().max() > 1e-3  # the spike changes the output
    score = validate(healthy, val, "cpu", None)["score"]

    before = source.state()
    measured = with_precise_bn(spiked, source, draws, 8, 2, cfg.data.crop, None)
    # The spiked model itself is untouched; the copy gets the statistics back (same batches: same numbers).
    assert spiked.get_submodule("enhancement.up.1.1").running_var.max() > 100 * \
        measured.get_submodule("enhancement.up.1.1").running_var.max()
    for name in batchnorm_names(measured):
        torch.testing.assert_close(measured.get_submodule(name).running_var,
                                   healthy.get_submodule(name).running_var)
    with torch.no_grad():
        torch.testing.assert_close(measured(frame)[0], healthy(frame)[0])
    assert validate(measured, val, "cpu", None)["score"] == pytest.approx(score, abs=1e-4)
    # The training stream continues where it was.
    after = source.state()
    assert after["rng"] == before["rng"] and torch.equal(after["gen"], before["gen"])


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_training_with_precise_bn_keeps_the_training_stream_and_stores_the_measured_statistics(tmp_path):
    rows, models = {}, {}
    for label, extra in (("plain", ""), ("precise", ", precise_bn_batches: 3")):
        cfg = load_config(tiny_config(tmp_path / label, max_steps=20, extra_train=f", stop: none{extra}"))
        out = tmp_path / label / "runs"
        train(cfg, "cpu", out, seed=0, resume=False, export=None, progress=False)
        rows[label] = read_rows(out / "tiny" / "log.csv")
        from illexp_ros.runtime.model_io import load_model

        models[label] = load_model(out / "tiny" / "best.pt")
    # Same batches, same losses: the measurement draws from its own fixed stream.
    assert [r["loss_enh"] for r in rows["plain"]] == [r["loss_enh"] for r in rows["precise"]]
    assert models["precise"][1]["meta"]["precise_bn_batches"] == 3
    # The file holds measured statistics, not the ones training left.
    name = "enhancement.up.1.1.running_var"
    assert not torch.allclose(models["precise"][0].state_dict()[name], models["plain"][0].state_dict()[name])
