"""training/evaluate.py and training/make_synthetic_set.py: the JSON shape, a hand-computed `none` PSNR,
model rows, the contact sheet, the `default` method (the node's params file), --identity, one-line errors with
exit status 2, and a byte-identical synthetic set."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training import evaluate as ev  # noqa: E402

METRIC_KEYS = {"psnr", "ssim", "mse", "mae", "sobel_iou", "canny_iou", "hist_diff", "n"}


def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_set(root: Path, names=("under_a.png", "over_b.png"), shape=(40, 56, 3), seed=0) -> Path:
    rng = np.random.default_rng(seed)
    for name in names:
        target = rng.integers(0, 256, shape, dtype=np.uint8)
        scale = 0.4 if name.startswith("under") else 1.6
        inp = np.clip(target.astype(np.float32) * scale, 0, 255).astype(np.uint8)
        write_rgb(root / "input" / name, inp)
        write_rgb(root / "target" / name, target)
    return root


def hand_psnr(inp_path: Path, tgt_path: Path) -> float:
    a = cv2.imread(str(inp_path)).astype(np.float64) / 255.0
    b = cv2.imread(str(tgt_path)).astype(np.float64) / 255.0
    return 10.0 * np.log10(1.0 / np.mean((a - b) ** 2))


def test_json_shape_and_none_psnr_match_a_hand_computation(tmp_path, capsys):
    data = make_set(tmp_path / "pairs")
    out_json, out_md, sheet = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "sheet.png"
    rc = ev.main(["--data", str(data), "--models", str(tmp_path / "no_models"), "--json", str(out_json),
                  "--markdown", str(out_md), "--sheet", str(sheet), "--no-progress"])
    assert rc == 0
    report = json.loads(out_json.read_text())
    assert list(report) == ["sets"] and list(report["sets"]) == ["pairs"]
    subsets = report["sets"]["pairs"]
    assert set(subsets) == {"all", "under", "over"}
    for subset, methods in subsets.items():
        assert list(methods) == ["none", "he", "clahe", "gamma", "msr"], subset  # no model files: no model rows
        for row in methods.values():
            assert set(row) == METRIC_KEYS
            assert isinstance(row["n"], int) and row["n"] == (2 if subset == "all" else 1)
            assert all(isinstance(row[k], float) for k in METRIC_KEYS - {"n"})

    under = hand_psnr(data / "input" / "under_a.png", data / "target" / "under_a.png")
    over = hand_psnr(data / "input" / "over_b.png", data / "target" / "over_b.png")
    assert subsets["under"]["none"]["psnr"] == pytest.approx(under, abs=1e-4)
    assert subsets["over"]["none"]["psnr"] == pytest.approx(over, abs=1e-4)
    assert subsets["all"]["none"]["psnr"] == pytest.approx((under + over) / 2, abs=1e-4)
    assert subsets["all"]["none"]["ssim"] < 1.0 and subsets["all"]["none"]["mse"] > 0

    md = out_md.read_text()
    assert "## pairs (2 images)" in md and "## pairs, under_* only (1 images)" in md
    assert f"| none | {subsets['all']['none']['psnr']:.2f} |" in md.replace("**", "")
    img = cv2.imread(str(sheet))
    # Header strip + 2 rows; columns input, he, clahe, gamma, msr, target (`none` is the input column).
    assert img.shape[:2] == (22 + 2 * ev.THUMB, 6 * ev.THUMB)
    err = capsys.readouterr().err
    assert "skipping mixed" in err and "skipping default" in err  # the shipped config needs mixed.pt


def test_identical_pair_scores_perfectly_and_methods_filter(tmp_path):
    data = tmp_path / "same"
    img = np.random.default_rng(1).integers(0, 128, (32, 32, 3), dtype=np.uint8)  # dark: gamma changes it
    write_rgb(data / "input" / "x.png", img)
    write_rgb(data / "target" / "x.png", img)
    report, _ = ev.evaluate([data], tmp_path, ["none", "gamma"], progress=False, log=lambda s: None)
    rows = report["sets"]["same"]["all"]
    assert list(rows) == ["none", "gamma"]
    assert rows["none"]["psnr"] == 100.0 and rows["none"]["ssim"] == pytest.approx(1.0)
    assert rows["none"]["hist_diff"] == 0.0 and rows["gamma"]["mse"] > 0


def _tiny_model(path: Path) -> None:
    from illexp_ros.core.networks import IllExpNet
    from illexp_ros.runtime.model_io import save_model

    cfg = {"attention_width": 4, "attention_depth": 2, "widths": [8, 16, 32, 64]}
    save_model(path, IllExpNet(**cfg), cfg, path.stem)


def test_model_rows_run_through_the_runtime(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv("ILLEXP_MODELS_DIR", raising=False)
    models = tmp_path / "models"
    for name in ("under", "over", "mixed"):
        _tiny_model(models / f"{name}.pt")
    data = make_set(tmp_path / "pairs", shape=(24, 40, 3))
    report, _ = ev.evaluate([data], models, None, progress=False, log=lambda s: None)
    rows = report["sets"]["pairs"]["all"]
    assert list(rows) == ["none", "he", "clahe", "gamma", "msr", "under", "over", "mixed", "auto", "mixed_fast",
                          "auto_fast", "default"]
    # A random network changes the frame, so its scores differ from the input's.
    assert rows["mixed"]["psnr"] != rows["none"]["psnr"]
    import os

    assert "ILLEXP_MODELS_DIR" not in os.environ, "evaluate must not leak its models folder into the process"


def write_params(path: Path, params: dict | None = None, text: str | None = None) -> Path:
    """A ROS 2 parameters file for illexp_node with `params` under ros__parameters (or raw `text`)."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else yaml.safe_dump({"/**/illexp_node": {"ros__parameters": params}}))
    return path


def _tiny_models(models: Path) -> None:
    for name in ("under", "over", "mixed"):  # each randomly initialised: the three give different outputs
        _tiny_model(models / f"{name}.pt")


def test_default_method_corrects_as_the_node_params_file_says(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv("ILLEXP_MODELS_DIR", raising=False)
    models = tmp_path / "models"
    _tiny_models(models)
    data = make_set(tmp_path / "pairs", shape=(24, 40, 3))

    def rows(params: dict) -> dict:
        cfg = write_params(tmp_path / f"params_{len(list(tmp_path.glob('params_*')))}.yaml", params)
        report, _ = ev.evaluate([data], models, ["under", "mixed", "default"], progress=False,
                                log=lambda s: None, node_config=cfg)
        return report["sets"]["pairs"]["all"]

    full_under = rows({"model": "default", "mode": "under", "fast": False, "qos": "reliable"})
    assert full_under["default"] == full_under["under"]  # every metric identical: same model, same mode
    assert full_under["default"] != full_under["mixed"]
    fast_under = rows({"model": "default", "mode": "under", "fast": True, "internal_short_side": 8})
    assert fast_under["default"]["psnr"] != fast_under["under"]["psnr"]  # reduced resolution + upsampling
    other_side = rows({"model": "default", "mode": "under", "fast": True, "internal_short_side": 16})
    assert other_side["default"]["psnr"] != fast_under["default"]["psnr"]  # internal_short_side is used
    # Keys the file lacks take the node's defaults: model default, mode mixed.
    only_fast = rows({"fast": False})
    assert only_fast["default"] == only_fast["mixed"]
    named = rows({"model": "over", "mode": "under", "fast": False})  # a shipped name: that model, every mode
    assert named["default"] != named["under"]
    # strength and exposure_compensation apply to every frame the node publishes, so to `default` too
    from illexp_ros.runtime.correction_strength import apply_strength
    from illexp_ros.runtime.exposure_compensation import compensate_exposure

    rgb = np.random.default_rng(3).integers(0, 120, (24, 40, 3), dtype=np.uint8)
    closers: list = []
    for strength, stops in ((1.0, 1.0), (0.5, 0.0), (0.0, 0.0), (0.3, -0.5)):
        node = ev.read_node_params(write_params(tmp_path / "ec.yaml", {
            "model": "mixed", "fast": False, "strength": strength, "exposure_compensation": stops}))
        assert (node.strength, node.exposure_compensation) == (strength, stops)
        methods = ev.build_methods(["mixed", "default"], models, "torch_cpu", closers, node)
        expected = compensate_exposure(apply_strength(rgb, methods["mixed"](rgb), strength), stops)
        np.testing.assert_array_equal(methods["default"](rgb), expected)
        if strength == 0.0:
            np.testing.assert_array_equal(methods["default"](rgb), rgb)
        elif strength == 1.0:
            assert methods["default"](rgb).mean() > methods["mixed"](rgb).mean() + 5
        else:
            assert not np.array_equal(methods["default"](rgb), methods["mixed"](rgb))
    for enh in closers:
        enh.close()



def test_auto_fast_takes_a_route_s_fast_file_where_there_is_one(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv("ILLEXP_MODELS_DIR", raising=False)
    models = tmp_path / "models"
    _tiny_models(models)
    data = make_set(tmp_path / "pairs", names=("under_a.png",), shape=(24, 40, 3))

    def rows() -> dict:
        report, _ = ev.evaluate([data], models, ["auto", "auto_fast"], progress=False, log=lambda s: None)
        return report["sets"]["pairs"]["all"]

    before = rows()
    _tiny_model(models / "under_fast.pt")  # another random network: only the fast path may take it
    after = rows()
    assert after["auto"] == before["auto"]
    assert after["auto_fast"]["psnr"] != before["auto_fast"]["psnr"]

def test_default_reads_the_node_params_file_at_run_time(tmp_path):
    import yaml

    shipped = yaml.safe_load((REPO / "config" / "illexp.yaml").read_text())["/**/illexp_node"]["ros__parameters"]
    node = ev.read_node_params(REPO / "config" / "illexp.yaml")
    assert (node.model, node.mode, node.fast, node.internal_short_side) == (
        shipped["model"], shipped["mode"], shipped["fast"], shipped["internal_short_side"])
    assert ev.read_node_params(write_params(tmp_path / "a.yaml", {"mode": "auto", "fast": False})).mode == "auto"
    # Keys as ROS matches them: no leading slash, a /** wildcard, later sections override earlier ones;
    # another node's section and a namespaced one do not apply to /illexp_node.
    text = ("/**:\n  ros__parameters:\n    mode: over\n    fast: false\n"
            "other_node:\n  ros__parameters:\n    mode: auto\n"
            "ns:\n  illexp_node:\n    ros__parameters:\n      mode: auto\n"
            "illexp_node:\n  ros__parameters:\n    internal_short_side: 32\n")
    node = ev.read_node_params(write_params(tmp_path / "b.yaml", text=text))
    assert (node.model, node.mode, node.fast, node.internal_short_side) == ("default", "over", False, 32)


def test_node_defaults_and_rules_match_the_node():
    params = pytest.importorskip("illexp_ros.ros.node.parameters")  # imports rclpy: skipped without ROS
    assert ev.NODE_DEFAULTS == {name: params.PARAMETERS[name].default for name in ev.NODE_DEFAULTS}
    assert ev.NODE_MODES == params.MODES and ev.NODE_MAX_SHORT_SIDE == params.MAX_SHORT_SIDE
    assert ev.NODE_MAX_EXPOSURE_COMPENSATION == params.MAX_STOPS
    samples = ["mixed", "auto", "sideways", "", " ", "models/x.pt", True, False, 0, 1, 64, 4096, 4097, -1, 1.5,
               None, -3.0, 3.0, 3.01, -3.5, float("nan")]
    for name in ev.NODE_DEFAULTS:
        for value in samples:
            assert (ev._node_param_error(name, value) is None) == (params.validate(name, value) is None), \
                (name, value)


def test_identity_feeds_the_target_and_scores_against_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("torch")
    from illexp_ros.core.metrics import all_metrics
    from illexp_ros.runtime import Enhancer

    monkeypatch.delenv("ILLEXP_MODELS_DIR", raising=False)
    models = tmp_path / "models"
    _tiny_models(models)
    data = make_set(tmp_path / "pairs", shape=(24, 40, 3))
    out_json, out_md = tmp_path / "id.json", tmp_path / "id.md"
    rc = ev.main(["--data", str(data), "--models", str(models), "--methods", "none", "gamma", "mixed",
                  "--identity", "--no-progress", "--json", str(out_json), "--markdown", str(out_md)])
    assert rc == 0
    report = json.loads(out_json.read_text())
    assert list(report["sets"]) == ["pairs:identity"]
    ident = report["sets"]["pairs:identity"]["all"]
    assert ident["none"]["psnr"] == 100.0 and ident["none"]["mse"] == 0.0  # metrics floor the MSE: 100 dB
    assert ident["none"]["ssim"] == pytest.approx(1.0) and ident["none"]["hist_diff"] == 0.0
    assert "pairs:identity" in capsys.readouterr().out
    assert "## pairs:identity [identity check" in out_md.read_text()

    normal, _ = ev.evaluate([data], models, ["none", "mixed"], progress=False, log=lambda s: None)
    rows = normal["sets"]["pairs"]["all"]
    assert rows["none"]["psnr"] < 40  # the inputs are degraded copies of the targets
    assert rows["mixed"]["psnr"] != ident["mixed"]["psnr"]
    # The model ran on the targets and was scored against them.
    with Enhancer.from_model(str(models / "mixed.pt"), backend="torch_cpu", mode="mixed") as enh:
        psnrs = []
        for name in ("under_a.png", "over_b.png"):
            tgt = cv2.cvtColor(cv2.imread(str(data / "target" / name)), cv2.COLOR_BGR2RGB)
            psnrs.append(all_metrics(enh.enhance(tgt, color_order="rgb"), tgt)["psnr"])
    assert ident["mixed"]["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-6)


@pytest.mark.parametrize("case", ["missing", "not_yaml", "not_utf8", "no_section", "other_node", "not_mapping",
                                  "bad_mode", "fast_not_bool", "short_side_range", "short_side_float",
                                  "empty_model", "compensation_range", "strength_range"])
def test_bad_node_params_file_is_one_line_and_exit_2(tmp_path, capsys, case):
    data = make_set(tmp_path / "set")
    cfg = tmp_path / "params.yaml"
    ros = "/**/illexp_node:\n  ros__parameters:\n"
    text = {"not_yaml": ros + "    mode: [under\n", "no_section": "mode: under\nfast: false\n",
            "other_node": "/**/camera:\n  ros__parameters:\n    mode: under\n",
            "not_mapping": ros + "    - mode\n", "bad_mode": ros + "    mode: sideways\n",
            "fast_not_bool": ros + "    fast: 1\n", "short_side_range": ros + "    internal_short_side: 5000\n",
            "short_side_float": ros + "    internal_short_side: 64.0\n", "empty_model": ros + "    model: ''\n",
            "compensation_range": ros + "    exposure_compensation: 3.5\n",
            "strength_range": ros + "    strength: 1.2\n"}
    if case == "not_utf8":
        cfg.write_bytes(b"\xff\xfe\x00bad")
    elif case != "missing":
        write_params(cfg, text=text[case])
    rc = ev.main(["--data", str(data), "--models", str(tmp_path / "models"), "--methods", "none", "default",
                  "--node-config", str(cfg), "--no-progress", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:") and str(cfg) in err, err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("case", ["missing", "no_pairs", "unpaired", "size_mismatch", "unknown_method",
                                  "missing_model", "corrupt_model"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    data = tmp_path / "set"
    models = tmp_path / "models"
    methods = ["none"]
    if case == "missing":
        data = tmp_path / "does_not_exist"
    elif case == "no_pairs":
        (data / "input").mkdir(parents=True)
        (data / "target").mkdir(parents=True)
    elif case == "unpaired":
        make_set(data)
        (data / "target" / "over_b.png").unlink()
    elif case == "size_mismatch":
        make_set(data)
        write_rgb(data / "target" / "over_b.png", np.zeros((10, 10, 3), np.uint8))
    elif case == "unknown_method":
        make_set(data)
        methods = ["none", "sharpen"]
    elif case == "missing_model":
        make_set(data)
        methods = ["mixed"]
    elif case == "corrupt_model":
        make_set(data)
        models.mkdir()
        (models / "mixed.pt").write_bytes(b"not a model")
        methods = ["mixed"]
    rc = ev.main(["--data", str(data), "--models", str(models), "--methods", *methods, "--no-progress",
                  "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    assert not (tmp_path / "r.json").exists()


def test_cli_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "training" / "evaluate.py"), "--data",
                           str(tmp_path / "nothing")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: data folder not found: {tmp_path / 'nothing'}"]


def test_synthetic_set_is_deterministic_and_held_out(tmp_path):
    from training.config import load_config, resolve_data_dir
    from training.data import list_images, split_holdout
    from training.make_synthetic_set import SYNTHETIC_SEED, make_synthetic_set

    cfg = load_config(REPO / "training" / "configs" / "mixed.yaml")
    train_dir = resolve_data_dir(cfg.data.train_dir)
    if not train_dir.is_dir():
        pytest.skip(f"training photos not present at {train_dir}")
    names = make_synthetic_set(tmp_path / "a", count=4)
    make_synthetic_set(tmp_path / "b", count=4)
    assert [n.split("_")[0] for n in names] == ["under", "over", "mixed", "under"]
    for sub in ("input", "target"):
        for name in names:
            assert (tmp_path / "a" / sub / name).read_bytes() == (tmp_path / "b" / sub / name).read_bytes()
    assert SYNTHETIC_SEED != cfg.data.val_seed
    train_files, _ = split_holdout(list_images(train_dir), cfg.data.val_fraction, cfg.data.val_seed)
    train_stems = {p.stem for p in train_files}
    assert not {n.split("_", 1)[1].removesuffix(".png") for n in names} & train_stems
    # Targets are the photos themselves at native size; inputs are degraded.
    a = cv2.imread(str(tmp_path / "a" / "input" / names[0]))
    b = cv2.imread(str(tmp_path / "a" / "target" / names[0]))
    assert a.shape == b.shape and a.mean() < b.mean()  # an under draw darkens


def test_model_card_rewrites_only_the_generated_section(tmp_path):
    from training.model_card import BEGIN, END, rewrite_card

    card = tmp_path / "MODEL_CARD.md"
    card.write_text(f"# Card\n\nhand-written intro\n\n{BEGIN}\nold numbers\n{END}\n\nhand-written outro\n")
    rewrite_card(card, f"{BEGIN}\nnew numbers\n{END}")
    text = card.read_text()
    assert text == f"# Card\n\nhand-written intro\n\n{BEGIN}\nnew numbers\n{END}\n\nhand-written outro\n"
    rewrite_card(card, f"{BEGIN}\nnewer numbers\n{END}")
    assert "newer numbers" in card.read_text() and "new numbers\n" not in card.read_text()

    fresh = tmp_path / "fresh.md"  # a card without markers gets the section appended once
    fresh.write_text("# Card\n")
    rewrite_card(fresh, f"{BEGIN}\nx\n{END}")
    rewrite_card(fresh, f"{BEGIN}\ny\n{END}")
    assert fresh.read_text().count(BEGIN) == 1 and "\ny\n" in fresh.read_text()


def test_model_card_runs_without_the_model_files(tmp_path, capsys, monkeypatch):
    """Before models are trained (or with a folder of some of them) the card says which are not shipped and
    gives the tables it can; the identity check asked for the missing models' methods and stopped (exit 2)."""
    import training.model_card as card_module
    from training.model_card import main as model_card

    # the synthetic set is made from the training photos, which a clean clone has not: any set will do here
    monkeypatch.setattr(card_module, "make_synthetic_set", lambda out, count, seed: make_set(out))

    eval_root = tmp_path / "eval"
    for name in ("a6300_ucan_samples", "fivek_dpe_curl_samples"):
        make_set(eval_root / name)
    (tmp_path / "models").mkdir()
    card = tmp_path / "card.md"
    rc = model_card(["--card", str(card), "--models", str(tmp_path / "models"), "--eval-root", str(eval_root),
                     "--synthetic", str(tmp_path / "synthetic"), "--out", str(tmp_path / "out"), "--count", "1",
                     "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    text = card.read_text()
    assert set(json.loads((tmp_path / "out" / "eval.json").read_text())) == {"sets"}
    assert "| mixed | (not shipped yet) |" in text
    identity = text.split("#### a6300_ucan_samples:identity")[1].split("####")[0]
    assert "| gamma |" in identity and "| mixed |" not in identity


@pytest.mark.parametrize(("args", "expected"), [
    (["--methods", "mixed", "--backend", "bogus"], "--backend must be auto or one of"),
    (["--sheet", "{tmp}/sheet"], "must be a .png or .jpg file name"),
    (["--json", "{tmp}"], "is a folder"),
    (["--threads", "-1"], "must be an integer >= 0"),
    (["--threads", "100000"], "must be an integer in 0..256, got 100000"),
])
def test_bad_arguments_are_one_line_before_anything_runs(tmp_path, capsys, args, expected):
    data = make_set(tmp_path / "set")
    with pytest.raises(SystemExit) as exit_:
        ev.main(["--data", str(data), "--no-progress", *[a.format(tmp=tmp_path) for a in args]])
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


def test_a_sheet_that_cannot_be_written_is_one_line(tmp_path, capsys):
    """OpenCV's imwrite says only False: the run ended with exit 0 and no sheet (a traceback where the folder
    could not be made)."""
    data = make_set(tmp_path / "set")
    rc = ev.main(["--data", str(data), "--methods", "none", "--no-progress", "--sheet", "/proc/illexp_sheet.png",
                  "--json", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    assert rc == 2 and err.strip().splitlines()[-1] == "error: cannot write the contact sheet /proc/illexp_sheet.png"
    assert "none" in out and set(json.loads((tmp_path / "r.json").read_text())) == {"sets"}  # the scores are kept


def test_synthetic_set_and_model_card_outputs_that_cannot_be_written_are_one_line(tmp_path, capsys):
    from test_training import tiny_config

    from training.make_synthetic_set import main as synthetic_main
    from training.model_card import main as model_card

    (tmp_path / "file").write_text("in the way")
    config = tiny_config(tmp_path / "c", max_steps=1)  # photos of its own: a clean clone has no training photos
    assert synthetic_main(["--out", str(tmp_path / "file"), "--count", "1", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Not a directory" in err[0], err
    with pytest.raises(SystemExit) as exit_:
        model_card(["--card", str(tmp_path)])  # said at once, not after minutes of evaluation
    assert exit_.value.code == 2 and "is a folder" in capsys.readouterr().err


def test_model_card_says_every_problem_after_the_table(tmp_path, capsys, monkeypatch):
    """A sheet and eval.json that cannot be written: both said, after the table (the sheet's was dropped), and
    the card still rewritten."""
    import training.model_card as card_module

    monkeypatch.setattr(card_module, "make_synthetic_set", lambda out, count, seed: make_set(out))
    eval_root = tmp_path / "eval"
    for name in ("a6300_ucan_samples", "fivek_dpe_curl_samples"):
        make_set(eval_root / name)
    out = tmp_path / "out"
    (out / "sheet_a6300_ucan_samples.png").mkdir(parents=True)  # the first set's sheet cannot be written
    (out / "eval.json").mkdir()
    (tmp_path / "models").mkdir()
    rc = card_module.main(["--card", str(tmp_path / "card.md"), "--models", str(tmp_path / "models"),
                           "--eval-root", str(eval_root), "--synthetic", str(tmp_path / "syn"), "--out", str(out),
                           "--count", "1", "--no-progress"])
    stdout, err = capsys.readouterr()
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert rc == 2 and len(errors) == 2, err
    assert "sheet_a6300_ucan_samples.png" in errors[0] and errors[1].startswith("error: cannot write the results")
    assert stdout.startswith("method ") and "\nnone " in stdout and "rewrote" not in stdout  # the table


def test_results_that_cannot_be_written_are_one_line_after_the_table(tmp_path, capsys):
    data = make_set(tmp_path / "set")
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(SystemExit) as exit_:  # what can be seen before the run is said before it
        ev.main(["--data", str(data), "--methods", "none", "--no-progress",
                 "--json", str(tmp_path / "file" / "r.json")])
    assert exit_.value.code == 2 and "is not a writable folder" in capsys.readouterr().err
    rc = ev.main(["--data", str(data), "--methods", "none", "--no-progress", "--json", "/proc/illexp_r.json",
                  "--markdown", str(tmp_path / "r.md")])
    out, err = capsys.readouterr()
    assert rc == 2 and "none" in out  # the table is printed first
    assert err.strip().splitlines()[-1].startswith("error: cannot write the results: ")
    assert (tmp_path / "r.md").is_file()  # the JSON's failure does not keep the Markdown from being written
