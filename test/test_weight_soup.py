"""training/weight_soup.py: the average of several fine-tunes' weights, chosen greedily on validation."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_training import tiny_config  # noqa: E402

from illexp_ros.core.networks import build_model  # noqa: E402
from illexp_ros.runtime.model_io import load_model, save_model  # noqa: E402
from training.weight_soup import average_weights  # noqa: E402
from training.weight_soup import main as soup_main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"attention_width": 4, "attention_depth": 3, "widths": [8, 16, 32, 64], "head": "tone",
        "padding": "replicate"}


def tiny_files(folder: Path, seeds: tuple[int, ...], config: dict = TINY) -> list[Path]:
    paths = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = build_model(config)
        with torch.no_grad():  # a tone head starts as the identity: give each file an output of its own
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        paths.append(save_model(folder / f"m{seed}.pt", model, config, "mixed", {"note": "test"}))
    return paths


def test_average_weights_is_the_mean_of_the_parameters_and_leaves_the_inputs_alone(tmp_path):
    a, b = (load_model(p)[0] for p in tiny_files(tmp_path, (1, 2)))
    before = a.state_dict()["enhancement.stem.branches.0.weight"].clone()
    soup = average_weights([a, b])
    name = "enhancement.stem.branches.0.weight"
    expected = (a.state_dict()[name] + b.state_dict()[name]) / 2
    torch.testing.assert_close(soup.state_dict()[name], expected)
    assert torch.equal(a.state_dict()[name], before)


def test_greedy_soup_starts_from_the_best_file_and_records_its_ingredients(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_steps=1)
    files = tiny_files(tmp_path, (1, 2, 3))
    out = tmp_path / "soup.pt"
    rc = soup_main([*map(str, files), "--config", str(cfg), "--out", str(out), "--batches", "2",
                    "--batch-size", "2", "--threads", "1"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    singles = {line.split()[0]: float(line.split()[1]) for line in printed.splitlines()
               if line.split()[:1] and line.split()[0].endswith(".pt")}
    assert len(singles) == 3
    _, info = load_model(out)
    soup = info["meta"]["soup"]
    assert soup["rule"] == "greedy" and soup["bn_batches"] == 2
    # The best single file is always in; the soup's score is never below it.
    best_file = max(singles, key=singles.get)
    assert soup["ingredients"][0]["file"].endswith(best_file.split("/")[-1])
    assert info["meta"]["val_psnr"] >= round(max(singles.values()), 3) - 1e-3
    assert all(len(i["sha256"]) == 64 for i in soup["ingredients"])


def test_files_of_different_networks_are_one_clear_error(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_steps=1)
    other = dict(TINY, widths=[8, 8, 16, 16])
    files = tiny_files(tmp_path, (1,)) + tiny_files(tmp_path / "other", (2,), other)
    rc = soup_main([*map(str, files), "--config", str(cfg), "--out", str(tmp_path / "soup.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "another network" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "soup.pt").exists()


@pytest.mark.parametrize("tool", ["weight_soup", "recalibrate_bn", "revive_gates"])
@pytest.mark.parametrize("option", ["--batches", "--batch-size"])
def test_zero_batches_are_refused_not_written_as_empty_statistics(tmp_path, capsys, tool, option):
    """--batches 0 averaged no batch: every BatchNorm statistic became 0 / 1 and the file (by default the input
    itself, for recalibrate_bn) was written all the same."""
    import importlib

    main = importlib.import_module(f"training.{tool}").main
    args = ["a.pt", "b.pt"] if tool == "weight_soup" else ["a.pt"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--config", "c.yaml", "--out", str(tmp_path / "x.pt"), option, "0"])
    assert exit_.value.code == 2 and "must be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("tool", ["weight_soup", "recalibrate_bn", "revive_gates"])
@pytest.mark.parametrize("out", ["{tmp}", "{tmp}/file/x.pt"])
def test_an_out_that_cannot_be_written_is_refused_before_the_work(tmp_path, capsys, tool, out):
    """A folder, or a file's path under a file: refused at once (it was a traceback after all the scoring, with a
    stray OUT.tmp left behind)."""
    import importlib

    (tmp_path / "file").write_text("in the way")
    main = importlib.import_module(f"training.{tool}").main
    args = ["a.pt", "b.pt"] if tool == "weight_soup" else ["a.pt"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--config", "c.yaml", "--out", out.format(tmp=tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and ("is a folder" in err or "is not a writable folder" in err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_a_save_that_fails_late_is_one_line_and_leaves_no_temporary_file(tmp_path, capsys):
    """What the check before the work cannot see (a full disk, a read-only mount, /proc): one line, exit 2."""
    cfg = tiny_config(tmp_path, max_steps=1)
    files = tiny_files(tmp_path, (1, 2))
    rc = soup_main([*map(str, files), "--config", str(cfg), "--out", "/proc/illexp_soup.pt", "--batches", "1",
                    "--batch-size", "2", "--uniform"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: cannot write /proc/illexp_soup.pt"), err
