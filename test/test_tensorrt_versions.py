"""The TensorRT backend's decisions per Torch-TensorRT version, and its error paths, without TensorRT installed.

Neither tensorrt nor torch_tensorrt can be installed here, so the tests put stand-in modules into sys.modules.
The stand-ins follow the signatures and the checks of Torch-TensorRT's source for the versions named; they are
not the real thing, and what runs on a GPU stays covered only by test_runtime_tools.py's CUDA tests."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import sys
import types

import pytest
import torch

import illexp_ros.runtime.backends.tensorrt as trt_backend
from illexp_ros.runtime.backends.tensorrt import (
    TensorRtBackend,
    build_engine,
    compile_kwargs,
    import_trt,
    outside_profile,
    save_supports_dynamic_shapes,
    trt_unavailable_reason,
    version_unavailable_reason,
)
from illexp_ros.runtime.enhancer import select_backend
from illexp_ros.runtime.errors import BackendUnavailableError, EnhancerError
from illexp_ros.runtime.export import main as export_main
from illexp_ros.runtime.model_io import load_model

PROFILE = ((16, 16), (32, 48), (64, 96))  # (H, W) min/opt/max, multiples of the tiny model's stride (8)


# -- stand-ins ---------------------------------------------------------------------------------------------------
def save_2_11(module, file_path="", *, extra_files=None, output_format="exported_program", inputs=None,
              arg_inputs=None, kwarg_inputs=None, retrace=True, pickle_protocol=2, dynamic_shapes=None, **kwargs):
    """torch_tensorrt.save's parameters from 2.11 on (dynamic_shapes named)."""


def save_2_10(module, file_path="", *, extra_files=None, output_format="exported_program", inputs=None,
              arg_inputs=None, kwarg_inputs=None, retrace=True, pickle_protocol=2, **kwargs):
    """torch_tensorrt.save's parameters in 2.9 and 2.10: no dynamic_shapes, but **kwargs takes anything."""


def fake_trt(monkeypatch, version: str, loaded=None) -> types.ModuleType:
    """Put stand-ins for tensorrt and torch_tensorrt `version` into sys.modules and pretend CUDA is there.

    compile() follows 2.10-2.12: use_explicit_typing defaults to True and enabled_precisions with it is an
    AssertionError. save() has 2.11's parameters, records what it was given and keeps the module per file;
    load(path).module() returns that module, or loaded(module) when `loaded` is given."""
    tt = types.ModuleType("torch_tensorrt")
    tt.__spec__ = importlib.machinery.ModuleSpec("torch_tensorrt", None)
    tt.__version__ = version
    tt.saved, tt.calls = {}, {}

    class Input:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    def compile(exported_program, inputs=None, *, arg_inputs=None, use_explicit_typing=True,
                enabled_precisions=None, min_block_size=5, **kwargs):
        assert not (use_explicit_typing and enabled_precisions), \
            "enabled_precisions should not be used when use_explicit_typing=True"
        tt.calls["compile"] = {"inputs": inputs, "min_block_size": min_block_size, **kwargs}
        return exported_program.module()

    def save(module, file_path="", *, extra_files=None, output_format="exported_program", inputs=None,
             arg_inputs=None, kwarg_inputs=None, retrace=True, pickle_protocol=2, dynamic_shapes=None, **kwargs):
        assert not (inputs and arg_inputs), "'arg_inputs' and 'inputs' should not be used at the same time."
        tt.calls["save"] = {"output_format": output_format, "arg_inputs": arg_inputs, "inputs": inputs,
                            "retrace": retrace, "dynamic_shapes": dynamic_shapes, **kwargs}
        with open(file_path, "wb") as f:
            f.write(b"stand-in program")
        tt.saved[file_path] = module

    def load(file_path):
        module = tt.saved[file_path]
        return types.SimpleNamespace(module=lambda: loaded(module) if loaded else module)

    tt.Input, tt.save, tt.load = Input, save, load
    tt.dynamo = types.SimpleNamespace(compile=compile)
    trt = types.ModuleType("tensorrt")
    trt.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    trt.__version__ = "10.13.0"
    monkeypatch.setitem(sys.modules, "torch_tensorrt", tt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_backend, "cuda_unavailable_reason", lambda: None)
    return tt


class BrokenInstall(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """torch_tensorrt is found on the path, but importing it fails the way a broken native install does."""

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name == "torch_tensorrt" else None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory\n"
                          "(second line of a long loader message)")


# -- finding 1: enabled_precisions with explicit typing -----------------------------------------------------------
@pytest.mark.parametrize("version", ["2.10.0", "2.10.1+cu128", "2.11.0", "2.12.0a0+git1234", "2.13.0", "3.0.0"])
def test_compile_kwargs_pass_no_precision_option_from_2_10(version):
    kwargs = compile_kwargs(version)
    assert "enabled_precisions" not in kwargs and "use_explicit_typing" not in kwargs
    assert kwargs["min_block_size"] == 1


@pytest.mark.parametrize("version", ["2.8.0", "2.9.0", "2.9.1+cu128"])
def test_compile_kwargs_ask_for_fp16_before_explicit_typing(version):
    assert compile_kwargs(version) == {"min_block_size": 1, "enabled_precisions": {torch.half}}


def test_build_compiles_and_saves_with_what_2_12_documents(monkeypatch, tmp_path, tiny_path):
    # The whole build on the CPU against the 2.10-2.12 compile() check; the old code passed enabled_precisions.
    tt = fake_trt(monkeypatch, "2.12.0")
    model, _ = load_model(tiny_path)
    out = tmp_path / "engines" / "tiny.ep"
    assert build_engine(model, PROFILE, out, device="cpu", half=False) == out
    assert out.read_bytes() == b"stand-in program"
    assert "enabled_precisions" not in tt.calls["compile"]
    save = tt.calls["save"]
    assert save["dynamic_shapes"] is not None and save["inputs"] is None and save["retrace"] is True
    assert tuple(save["arg_inputs"][0].shape) == (1, 3, 32, 48)  # the example at the opt size
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


# -- finding 2: save() without dynamic_shapes ---------------------------------------------------------------------
@pytest.mark.parametrize(("version", "supported"), [
    ("2.9.0", False), ("2.10.0", False), ("2.10.2+cu130", False), ("2.11.0", True), ("2.11.0a0+gitabc", True),
    ("2.12.1", True), ("2.13.0", True), ("3.1.0", True), ("1.4.0", False), ("unknown", False), ("", False)])
def test_save_supports_dynamic_shapes_from_2_11(version, supported):
    assert save_supports_dynamic_shapes(version) is supported


def test_version_decides_not_a_kwargs_catch_all():
    # Both signatures take **kwargs (every release does): the old _kwargs_accepted passed dynamic_shapes to either.
    reason = version_unavailable_reason("2.10.0", inspect.signature(save_2_10))
    assert reason and "2.10.0" in reason and "dynamic" in reason and ">= 2.11" in reason and "\n" not in reason
    assert version_unavailable_reason("2.10.0", inspect.signature(save_2_11)) is not None  # the version decides
    assert version_unavailable_reason("2.11.0", inspect.signature(save_2_11)) is None
    # A build that claims 2.11 but whose save() does not name dynamic_shapes is not trusted either.
    assert "dynamic_shapes" in version_unavailable_reason("2.11.0", inspect.signature(save_2_10))


def test_torch_tensorrt_2_10_is_unavailable_so_auto_falls_back(monkeypatch):
    fake_trt(monkeypatch, "2.10.0")
    reason = trt_unavailable_reason()
    assert reason and "torch_tensorrt 2.10.0" in reason and "dynamic" in reason
    lines = []
    chosen = select_backend("auto", lines.append)
    assert "tensorrt" not in chosen and chosen
    assert any("tensorrt: torch_tensorrt 2.10.0" in line for line in lines)
    with pytest.raises(BackendUnavailableError, match="2.10.0"):
        select_backend("tensorrt", lines.append)
    fake_trt(monkeypatch, "2.11.0")
    assert trt_unavailable_reason() is None


def test_a_saved_program_with_a_fixed_shape_fails_the_build(monkeypatch, tmp_path, tiny_path):
    # What 2.9/2.10 wrote: a program that only runs at the example's size. It must fail inside the build (where
    # backend auto can still fall back), not at the first frame of another size, and leave no file behind.
    def fixed_shape(module):
        def run(x):
            if tuple(x.shape[-2:]) != PROFILE[1]:
                raise RuntimeError(f"Expected input at dim 2 to be 32, but got {x.shape[2]}\nguard details ...")
            return module(x)
        return run

    fake_trt(monkeypatch, "2.11.0", loaded=fixed_shape)
    model, _ = load_model(tiny_path)
    out = tmp_path / "engines" / "tiny.ep"
    with pytest.raises(RuntimeError, match="Expected input at dim 2"):
        build_engine(model, PROFILE, out, device="cpu", half=False)
    assert list(out.parent.iterdir()) == []


# -- finding 3: build errors in illexp_export --------------------------------------------------------------------
@pytest.mark.parametrize("error", [
    RuntimeError("[TensorRT] ERROR: network build failed\nTraceback (most recent call last): ..."),
    AssertionError("enabled_precisions should not be used when use_explicit_typing=True"),
    BackendUnavailableError("torch_tensorrt is installed but does not import (ImportError: libnvinfer.so.10)"),
])
def test_export_tensorrt_build_error_is_one_line_and_exit_2(monkeypatch, tmp_path, tiny_path, capsys, error):
    def failing_build(*args, **kwargs):
        raise error

    monkeypatch.setattr("illexp_ros.runtime.export.trt_unavailable_reason", lambda: None)
    monkeypatch.setattr(trt_backend, "build_engine", failing_build)
    out = tmp_path / "t.ep"
    rc = export_main(["--model", str(tiny_path), "--format", "tensorrt", "--fp16", "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("illexp_export: error:")
    assert str(error).splitlines()[0] in err[0]
    assert not out.exists()


def test_backend_load_reports_a_build_failure_in_one_line(monkeypatch, tmp_path, tiny_path):
    model, info = load_model(tiny_path)
    monkeypatch.setattr(trt_backend, "engine_path", lambda sha, profile: tmp_path / "e.ep")

    def failing_build(*args, **kwargs):
        raise RuntimeError("first line\nsecond line")

    monkeypatch.setattr(trt_backend, "build_and_load", failing_build)
    with pytest.raises(EnhancerError) as err:
        TensorRtBackend(lambda line: None).load(model, info)
    assert not isinstance(err.value, BackendUnavailableError)
    assert "RuntimeError: first line" in str(err.value) and "\n" not in str(err.value)


# -- finding 4: a broken install -----------------------------------------------------------------------------------
def test_broken_torch_tensorrt_install_is_unavailable_not_an_import_error(monkeypatch, tiny_path):
    monkeypatch.delitem(sys.modules, "torch_tensorrt", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenInstall(), *sys.meta_path])
    monkeypatch.setattr(trt_backend, "cuda_unavailable_reason", lambda: None)
    with pytest.raises(BackendUnavailableError, match="libnvinfer") as err:
        import_trt()
    assert "\n" not in str(err.value)
    reason = trt_unavailable_reason()
    assert reason and "does not import" in reason and "libnvinfer" in reason and "\n" not in reason
    with pytest.raises(BackendUnavailableError, match="does not import"):
        select_backend("tensorrt", lambda line: None)
    # The backend's own load (the old code's first line was a bare `import torch_tensorrt`).
    model, info = load_model(tiny_path)
    with pytest.raises(BackendUnavailableError, match="libnvinfer"):
        TensorRtBackend(lambda line: None).load(model, info)


def test_an_input_outside_the_profile_says_what_helps():
    """Fast mode helps with inputs above the profile, not with those below it (it was suggested for both)."""
    assert outside_profile(32, 48, PROFILE) is None and outside_profile(16, 96, PROFILE) is None
    above = outside_profile(64, 128, PROFILE)
    assert above.startswith("network input 128x64 is outside the TensorRT engine's profile 16x16-48x32-96x64")
    assert above.endswith("ILLEXP_TRT_PROFILE=MINWxMINH,OPTWxOPTH,MAXWxMAXH and restart, or use fast mode")
    below = outside_profile(8, 48, PROFILE)
    assert "use fast mode" not in below and below.endswith("or raise internal_short_side if fast mode is on")
    assert "use fast mode" not in outside_profile(8, 128, PROFILE)  # below on one side: fast mode keeps it
