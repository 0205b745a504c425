"""training/revive_gates.py: a spatial-attention gate shut on every input is found and reopened, output kept."""

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
from training.revive_gates import largest_gate, reopen  # noqa: E402
from training.revive_gates import main as revive_main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = {"attention_width": 4, "attention_depth": 3, "widths": [8, 16, 32, 64], "padding": "replicate",
        "head": "tone"}
SHUT = "enhancement.decode.2"


def model_with_a_shut_gate() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(TINY)
    torch.nn.init.normal_(model.enhancement.fusion[3].weight, std=0.1)  # not the identity: outputs can differ
    with torch.no_grad():
        gate = model.get_submodule(SHUT).spatial_attention.conv
        gate.weight.zero_()
        gate.bias.fill_(-40.0)  # sigmoid(-40) ~ 4e-18: shut on every pixel, as found in the shipped mixed_fast
    return model.eval()


def frames(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def gate_grad(model: torch.nn.Module) -> float:
    model.train()
    model.zero_grad()
    out, _ = model(frames())
    out.square().mean().backward()
    return float(model.get_submodule(SHUT).spatial_attention.conv.weight.grad.abs().max())


def test_a_shut_gate_learns_nothing_until_reopened_and_reopening_keeps_the_output():
    model = model_with_a_shut_gate()
    gates = largest_gate(model, [frames()], None)
    assert gates[SHUT] < 1e-6 and all(g > 0.01 for n, g in gates.items() if n != SHUT)
    assert gate_grad(model) < 1e-12  # the saturated sigmoid passes no gradient: training cannot fix it
    model.eval()
    with torch.no_grad():
        before = model(frames(1))[0]
        reopen(model, [SHUT])
        torch.testing.assert_close(model(frames(1))[0], before, atol=1e-6, rtol=0)
    assert largest_gate(model, [frames()], None)[SHUT] == pytest.approx(0.5)
    # Trainable again: the projection learns at once, the gate after one step.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gate_grad(model)
    assert model.get_submodule(SHUT).project[0].weight.grad.abs().max() > 0
    opt.step()
    assert gate_grad(model) > 1e-8


def test_cli_reopens_and_writes_a_file_with_the_same_output(tmp_path, capsys):
    cfg = tiny_config(tmp_path, max_steps=1)
    src, out = tmp_path / "shut.pt", tmp_path / "open.pt"
    save_model(src, model_with_a_shut_gate(), TINY, "tiny", {})
    rc = revive_main([str(src), "--config", str(cfg), "--out", str(out), "--batches", "2", "--batch-size", "2"])
    printed = capsys.readouterr().out
    assert rc == 0 and f"reopened {SHUT}" in printed, printed
    old, _ = load_model(src)
    new, info = load_model(out)
    assert info["meta"]["gates_reopened"] == [SHUT]
    with torch.no_grad():
        # fp16 weights in the file: the same network up to that rounding.
        torch.testing.assert_close(new(frames(2))[0], old(frames(2))[0], atol=2e-3, rtol=0)
    # Nothing shut any more: nothing to do, nothing written.
    again = tmp_path / "again.pt"
    assert revive_main([str(out), "--config", str(cfg), "--out", str(again), "--batches", "2"]) == 0
    assert "nothing written" in capsys.readouterr().out and not again.exists()


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"nope")
    rc = revive_main([str(bad), "--config", str(tiny_config(tmp_path, max_steps=1)), "--out", str(tmp_path / "o.pt")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error:")
    for threshold in ("nan", "inf", "-1"):  # no gate, or every gate, "shut", silently
        with pytest.raises(SystemExit):
            revive_main([str(bad), "--config", "c.yaml", "--out", str(tmp_path / "o.pt"), "--threshold", threshold])
        assert "--threshold: must be a number in (0, 1)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["mixed_fast", "mixed", "under", "over"])
def test_no_shipped_model_has_a_shut_gate(name):
    """Every ACAB's spatial gate opens somewhere on real photos at several exposures (fast mode for mixed_fast,
    as the node runs it). A shut gate outputs a constant and can never learn again (revive_gates.py)."""
    from shipped import shipped_model
    from skimage import data

    from illexp_ros.core.degradation import expose

    model, info = load_model(shipped_model(name))
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    frames = [torch.nn.functional.interpolate(  # a quarter of the size: the gates, not the detail, matter here
        torch.from_numpy(expose(p.astype("float32") / 255, stops).transpose(2, 0, 1).copy())[None].float(),
        scale_factor=0.25, mode="area") for p in photos for stops in (-3.0, 0.0, 2.0)]
    gates = largest_gate(model, frames, info["meta"].get("fast_short_side"))
    assert len(gates) == 7 and min(gates.values()) > 1e-3, gates
