"""BatchNorm statistics and float16: model files keep them in float32 (a running variance above 65504 became
infinity in files written before 2026-11-26, switching a channel off), load_model refuses non-finite values
with a clear error, training/recalibrate_bn.py repairs such a file, and fold_batchnorm gives the runtime a
network with no BatchNorm left, identical up to rounding and safe to run in float16."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from test_training import write_photos  # noqa: E402

from illexp_ros.core.networks import build_model, fold_batchnorm  # noqa: E402
from illexp_ros.runtime.errors import ModelLoadError  # noqa: E402
from illexp_ros.runtime.model_io import FORMAT, load_model, save_model  # noqa: E402
from training.recalibrate_bn import broken_batchnorms  # noqa: E402
from training.recalibrate_bn import main as recalibrate_main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"attention_width": 4, "attention_depth": 3, "widths": [8, 16, 32, 64], "padding": "replicate",
        "head": "tone"}
BIG_VAR_LAYER = "enhancement.up.1.1"  # the layer that overflowed in the shipped paper-sized nets


def trained_like_model(seed: int = 0) -> torch.nn.Module:
    """A tiny net with the statistics a trained one has: Kaiming-initialised convs (the signal survives the
    depth), BatchNorm statistics measured on frames (as training leaves them), one layer whose activations
    have a standard deviation of a few hundred (its running variance far above float16's range, as measured
    in the shipped nets) and a non-zero tone output layer."""
    torch.manual_seed(seed)
    model = build_model(TINY)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    model.get_submodule(BIG_VAR_LAYER.rpartition(".")[0] + ".0").weight.data *= 1500.0
    torch.nn.init.normal_(model.enhancement.fusion[3].weight, std=0.1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(frames(seed=10 + i))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.1
    assert model.get_submodule(BIG_VAR_LAYER).running_var.min() > 65504  # beyond float16
    return model.eval()


def frames(n: int = 2, h: int = 48, w: int = 64, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_fold_batchnorm_same_output_and_no_batchnorm_left():
    model = trained_like_model()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is untouched
    x = frames()
    with torch.no_grad():
        ref_out, ref_map = model(x)
        out, em = folded(x)
    assert (out - ref_out).abs().max() < 1e-4
    assert (em - ref_map).abs().max() < 1e-4
    # The tone head's raw parameter maps too (the output above is clamped to [0, 1] in places) ...
    assert (raw_tone_params(folded, x) - raw_tone_params(model, x)).abs().max() < 1e-4
    # ... which the big-variance layer moves: an infinite variance (what float16 made of it) is not a no-op.
    broken = trained_like_model()
    broken.get_submodule(BIG_VAR_LAYER).running_var.fill_(float("inf"))
    assert (raw_tone_params(broken, x) - raw_tone_params(model, x)).abs().max() > 1e-2


def raw_tone_params(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The enhancement net's last layer output (the tone maps before they are applied to the frame)."""
    captured = []
    handle = model.enhancement.fusion.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    return captured[0]


def test_folded_network_is_finite_in_float16_where_the_batchnorm_is_not():
    model = trained_like_model()
    assert not torch.isfinite(model.half().get_submodule(BIG_VAR_LAYER).running_var).all()
    folded = fold_batchnorm(trained_like_model()).half()
    for name, t in list(folded.named_parameters()) + list(folded.named_buffers()):
        assert torch.isfinite(t).all(), name


def test_save_keeps_big_running_variance_and_load_round_trips(tmp_path):
    model = trained_like_model()
    path = save_model(tmp_path / "m.pt", model, TINY, "tiny")
    loaded, _ = load_model(path)
    assert torch.equal(loaded.get_submodule(BIG_VAR_LAYER).running_var, model.get_submodule(BIG_VAR_LAYER).running_var)
    x = frames()
    with torch.no_grad():
        # Weights are stored in float16: the output moves by rounding only.
        assert (loaded(x)[0] - model(x)[0]).abs().max() < 2e-2


def test_save_refuses_non_finite_values(tmp_path):
    model = trained_like_model()
    model.enhancement.fusion[3].weight.data[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="fusion.3.weight has non-finite"):
        save_model(tmp_path / "m.pt", model, TINY, "tiny")
    assert not (tmp_path / "m.pt").exists()


def test_a_save_that_fails_leaves_no_temporary_file_and_says_os_error(tmp_path, monkeypatch):
    """The rename fails (PATH a folder, here forced) or torch cannot open the file (its RuntimeError): an OSError
    either way, for the tools' one-line message, and no PATH.tmp left beside it (the tools left one)."""
    import illexp_ros.runtime.model_io as model_io

    def no_rename(src, dst):
        raise IsADirectoryError(21, "Is a directory", str(dst))

    monkeypatch.setattr(model_io.os, "replace", no_rename)
    with pytest.raises(IsADirectoryError):
        save_model(tmp_path / "m.pt", trained_like_model(), TINY, "tiny")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(OSError, match="No such file or directory"):  # torch's RuntimeError, as an OSError
        save_model(Path("/proc/illexp_no/m.pt"), trained_like_model(), TINY, "tiny")


def write_old_style_file(path: Path, model: torch.nn.Module) -> Path:
    """A file as save_model wrote it before 2026-11-26: every float tensor in float16."""
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "name": "tiny", "model_config": TINY, "state_dict": state, "meta": {}}, path)
    return path


def test_load_refuses_an_overflowed_file_and_names_the_repair(tmp_path):
    path = write_old_style_file(tmp_path / "old.pt", trained_like_model())
    with pytest.raises(ModelLoadError, match=r"non-finite values in enhancement\.up\.1\.1\.running_var.*recalibrate"):
        load_model(path)
    model, _ = load_model(path, allow_nonfinite=True)
    assert broken_batchnorms(model) == [BIG_VAR_LAYER]


def test_recalibrate_bn_repairs_an_overflowed_file(tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", count=6, size=64)
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "name: tiny\n"
        f"data: {{train_dir: '{photos}', kind: mixed, crop: 32, val_crop: 32, max_val_images: 2}}\n"
        f"model: {TINY}\n".replace("'", "")
        + "train: {batch_size: 2, max_steps: 10}\n")
    src = write_old_style_file(tmp_path / "old.pt", trained_like_model())
    out = tmp_path / "repaired.pt"
    rc = recalibrate_main([str(src), "--config", str(config), "--out", str(out), "--batches", "4",
                           "--batch-size", "2", "--crop", "32"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert f"re-estimated 1 BatchNorm layer(s) over 4 x 2 training draws: {BIG_VAR_LAYER}" in printed
    assert "before" in printed and "after" in printed
    model, info = load_model(out)  # finite now
    bn = model.get_submodule(BIG_VAR_LAYER)
    assert torch.isfinite(bn.running_var).all() and bn.momentum == 0.1
    assert info["meta"]["bn_recalibrated"]["layers"] == [BIG_VAR_LAYER]
    # The other layers' statistics are those of the file, untouched.
    old, _ = load_model(src, allow_nonfinite=True)
    name = "attention.context.0.1"
    assert torch.equal(model.get_submodule(name).running_var, old.get_submodule(name).running_var)
    # A healthy file: nothing to do, nothing written.
    assert recalibrate_main([str(out), "--config", str(config), "--out", str(tmp_path / "again.pt")]) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not (tmp_path / "again.pt").exists()


def test_recalibrate_bn_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert recalibrate_main([str(bad), "--config", str(REPO / "training/configs/mixed_fast.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: model file") and "\n" not in err
    # --set overrides the config as train.py's --set does, with the same checks
    assert recalibrate_main([str(bad), "--config", str(REPO / "training/configs/mixed_fast.yaml"),
                             "--set", "data.scene_prob=2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "data.scene_prob" in err and "\n" not in err
