"""illexp_bench and illexp_export, and the export graph the TensorRT backend compiles (traced here on the CPU);
the GPU backends themselves are exercised only where CUDA exists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tiny_models import TINY, max_diff, random_frame

from illexp_ros.core.networks import fold_batchnorm
from illexp_ros.runtime import Enhancer
from illexp_ros.runtime.backends.tensorrt import DEFAULT_PROFILE, export_program, trt_unavailable_reason
from illexp_ros.runtime.bench import main as bench_main
from illexp_ros.runtime.export import main as export_main
from illexp_ros.runtime.model_io import load_model

HAS_CUDA = torch.cuda.is_available()


def test_bench_json_has_the_documented_shape(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench_main(["--backend", "onnxruntime,passthrough", "--both", "--sizes", "64x48", "--frames", "3",
                     "--warmup", "1", "--threads", "1", "--model-config", json.dumps(TINY), "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert set(report) == {"results", "floors", "machine"}
    assert len(report["results"]) == 4  # 2 backends x (full, fast) x 1 size
    for r in report["results"]:
        assert set(r) == {"backend", "fast", "size", "median_ms", "p99_ms", "fps", "peak_mem_mb"}
        assert r["backend"] in ("onnxruntime", "passthrough") and isinstance(r["fast"], bool)
        assert r["size"] == "64x48"
        assert 0 < r["median_ms"] <= r["p99_ms"] and r["fps"] > 0 and r["peak_mem_mb"] > 0
    assert {(r["backend"], r["fast"]) for r in report["results"]} == {
        ("onnxruntime", False), ("onnxruntime", True), ("passthrough", False), ("passthrough", True)}
    assert {f["name"] for f in report["floors"]} == {"numpy_copy", "opencv_clahe"}
    for f in report["floors"]:
        assert set(f) == {"name", "size", "median_ms"} and f["size"] == "64x48" and f["median_ms"] > 0
    assert report["machine"]["cpu_count"] >= 1
    assert "| onnxruntime | yes | 64x48 |" in capsys.readouterr().out


def test_bench_fast_loads_only_the_fast_model(capsys):
    """--fast built the Enhancer in full mode first: the paper-sized model loaded too (seconds, and its memory in
    the fast rows' peak_mem_mb)."""
    assert bench_main(["--backend", "torch_cpu", "--fast", "--sizes", "64x48", "--frames", "1", "--warmup", "0",
                       "--threads", "1", "--no-floors"]) == 0
    loaded = [line for line in capsys.readouterr().out.splitlines() if "[runtime] loaded" in line]
    assert len(loaded) == 1 and "mixed_fast.pt" in loaded[0], loaded


def test_bench_profile_times_each_stage_of_the_cpu_pipeline(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench_main(["--backend", "onnxruntime,passthrough", "--both", "--sizes", "160x120", "--frames", "3",
                     "--warmup", "1", "--threads", "1", "--model-config", json.dumps(TINY), "--no-floors",
                     "--profile", "--json", str(out)])
    assert rc == 0
    by_mode = {(r["backend"], r["fast"]): r for r in json.loads(out.read_text())["results"]}
    fast = by_mode[("onnxruntime", True)]["stages_ms"]
    assert list(fast) == ["downscale", "net_in", "network", "guided_fit", "upsample_coefficients", "apply"]
    assert all(v >= 0 for v in fast.values()) and fast["network"] > 0
    assert sum(fast.values()) <= by_mode[("onnxruntime", True)]["median_ms"] * 1.5
    assert set(by_mode[("onnxruntime", False)]["stages_ms"]) == {"net_in", "network", "to_uint8"}
    assert "stages_ms" not in by_mode[("passthrough", True)]  # not a CPU pipeline backend
    printed = capsys.readouterr().out
    assert "| backend | fast | size | downscale | net_in | network |" in printed
    assert "| onnxruntime | yes | 160x120 |" in printed


@pytest.mark.parametrize(("args", "expected"), [
    (["--sizes", "640by480"], "WIDTHxHEIGHT"),
    (["--sizes", "0x480"], "must be at least 1x1"),
    (["--model-config", "[1, 2]"], "must be a JSON object"),
    (["--json", "."], "is a folder"),
    (["--threads", "-1"], "--threads must be in 0..256, got -1"),
    (["--threads", "100000"], "--threads must be in 0..256, got 100000"),
])
def test_bench_rejects_bad_arguments_before_it_runs(capsys, args, expected):
    with pytest.raises(SystemExit) as err:
        bench_main(args)
    assert err.value.code == 2
    assert expected in capsys.readouterr().err


def test_bench_help_names_the_node_benchmark_and_the_soak(capsys):
    from illexp_ros.bench_cli import main as bench_main

    with pytest.raises(SystemExit):
        bench_main(["--help"])
    help_text = capsys.readouterr().out
    assert "illexp_bench --node" in help_text and "--soak" in help_text


def test_bench_rejects_bad_arguments(capsys):
    rc = bench_main(["--backend", "torch_cpu", "--model", "/nonexistent/m.pt", "--sizes", "32x32", "--frames", "1"])
    assert rc == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines[-1].startswith("illexp_bench: error:") and "/nonexistent/m.pt" in err_lines[-1]


def test_export_onnx_loads_in_onnxruntime(tmp_path, tiny_path, capsys):
    import onnx
    import onnxruntime as ort

    out = tmp_path / "tiny.onnx"
    assert export_main(["--model", str(tiny_path), "--format", "onnx", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert onnx.load(str(out)).opset_import[0].version >= 17
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    model, _ = load_model(tiny_path)
    for h, w in ((40, 56), (24, 88)):  # dynamic H and W (multiples of 8)
        x = np.random.default_rng(h).random((1, 3, h, w), dtype=np.float32)
        got, em = session.run(None, {"input": x})
        with torch.inference_mode():
            want, want_em = model.forward_aligned(torch.from_numpy(x))
        assert got.shape == (1, 3, h, w)
        assert np.abs(got - want.numpy()).max() < 1e-3 and np.abs(em - want_em.numpy()).max() < 1e-3  # << 1/255


def test_export_torchscript_runs(tmp_path, tiny_path):
    out = tmp_path / "tiny.ts"
    assert export_main(["--model", str(tiny_path), "--format", "torchscript", "--opt", "64x48",
                        "--out", str(out)]) == 0
    traced = torch.jit.load(str(out))
    model, _ = load_model(tiny_path)
    x = torch.rand(1, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        # The export is the BatchNorm-folded network (what the runtime runs): equal to it, and to the model up
        # to the fold's float rounding (which the random tiny net amplifies to ~5e-4 at worst).
        assert torch.allclose(traced(x)[0], fold_batchnorm(model).forward_aligned(x)[0], atol=1e-4)
        assert torch.allclose(traced(x)[0], model.forward_aligned(x)[0], atol=2e-3)


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "{tmp}/missing.pt", "--out", "{tmp}/x.onnx"], "missing.pt"),
    (["--opset", "13", "--out", "{tmp}/x.onnx"], "--opset must be in 17.."),
    (["--opset", "99", "--out", "{tmp}/x.onnx"], "--opset must be in 17.."),  # torch printed its graph, then raised
    (["--opt", "641x480", "--out", "{tmp}/x.onnx"], "--opt must be a positive multiple of 8"),
    (["--out", "{tmp}"], "is a folder"),
    (["--format", "torchscript", "--out", "{tmp}"], "is a folder"),
    (["--out", "{tmp}/file/x.onnx"], "cannot write {tmp}/file/x.onnx"),  # its folder is a file
    (["--format", "torchscript", "--out", "/proc/illexp_x.ts"], "cannot write /proc/illexp_x.ts"),  # a traceback
])
def test_export_errors_are_one_line_with_status_2(tmp_path, tiny_path, capsys, args, expected):
    (tmp_path / "file").write_text("in the way")
    args = [a.format(tmp=tmp_path) for a in args]
    base = ["--model", str(tiny_path), "--format", "onnx"]
    assert export_main(base + args) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("illexp_export: error: "), err
    assert expected.format(tmp=tmp_path) in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing half-written left


def test_export_refuses_to_write_over_its_model(tmp_path, tiny_path, capsys):
    """--out equal to --model replaced the model file with its TorchScript export (status 0)."""
    model = tmp_path / "m.pt"
    model.write_bytes(tiny_path.read_bytes())
    (tmp_path / "link.pt").symlink_to(model)
    for out in (model, tmp_path / "link.pt"):
        assert export_main(["--model", str(model), "--format", "torchscript", "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (f"illexp_export: error: --out {out} is the model file itself: "
                                                   "give another file to write")
    assert model.read_bytes() == tiny_path.read_bytes()


@pytest.mark.skipif(trt_unavailable_reason() is None, reason="TensorRT is available here: the error path is moot")
def test_export_tensorrt_without_cuda_fails_clearly(tmp_path, tiny_path, capsys):
    rc = export_main(["--model", str(tiny_path), "--format", "tensorrt", "--fp16", "--out", str(tmp_path / "t.ep")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tensorrt" in err[0] and ("CUDA" in err[0] or "torch_tensorrt" in err[0])
    assert not (tmp_path / "t.ep").exists()


def test_tensorrt_export_graph_has_dynamic_stride_multiple_sizes(tiny_path):
    # What build_engine hands to torch_tensorrt.dynamo.compile, traced on the CPU in float32.
    model, _ = load_model(tiny_path)
    program, example, _ = export_program(model, ((16, 16), (32, 48), (64, 96)), device="cpu", half=False)
    assert tuple(example.shape) == (1, 3, 32, 48)
    module = program.module()
    folded = fold_batchnorm(model)  # what the program is (BatchNorm folded, safe in fp16)
    for h, w in ((16, 24), (64, 96), (40, 16)):
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
        with torch.inference_mode():
            got, want, unfolded = module(x)[0], folded.forward_aligned(x)[0], model.forward_aligned(x)[0]
        assert got.shape == (1, 3, h, w) and torch.allclose(got, want, atol=1e-4)
        assert torch.allclose(got, unfolded, atol=2e-3)  # the fold's rounding, amplified by the random tiny net
    assert DEFAULT_PROFILE[2] == (1088, 1920)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU with CUDA (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("fast", [False, True])
def test_torch_cuda_runs_any_size(tiny_path, fast):
    # Numerical parity with torch_cpu is checked on the shipped models (test_cuda_backend.py): this random tiny
    # net amplifies fp16 rounding chaotically (max difference 255 seen on an H200), so here only the plumbing.
    cuda = Enhancer.from_model(str(tiny_path), backend="torch_cuda", fast=fast, internal_short_side=48)
    for h, w in ((121, 163), (50, 70), (121, 163)):
        out = cuda.enhance(random_frame(h, w, seed=2), "bgr")
        assert out.shape == (h, w, 3) and out.dtype == np.uint8


@pytest.mark.cuda
@pytest.mark.skipif(trt_unavailable_reason() is not None,
                    reason=f"TensorRT backend unavailable: {trt_unavailable_reason()}")
def test_tensorrt_matches_torch_cpu(tiny_path):
    frame = random_frame(120, 160, seed=4)
    trt = Enhancer.from_model(str(tiny_path), backend="tensorrt")
    cpu = Enhancer.from_model(str(tiny_path), backend="torch_cpu")
    assert max_diff(trt.enhance(frame), cpu.enhance(frame)) <= 4
