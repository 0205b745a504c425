"""Fast mode: the OpenCV guided upsampling against core/fast.py, the GPU backends' torch frame pipeline (run on
the CPU) against the CPU pipeline, and the quality cost of fast mode with the shipped model."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from shipped import shipped_model
from tiny_models import make_tiny_model, max_diff, random_frame

from illexp_ros.core.degradation import degrade
from illexp_ros.core.fast import DEFAULT_FIT, GuidedFit, fast_forward, guided_upsample
from illexp_ros.core.metrics import psnr
from illexp_ros.runtime import Enhancer
from illexp_ros.runtime.cpu_pipeline import CpuPipeline
from illexp_ros.runtime.errors import ModelLoadError
from illexp_ros.runtime.guided_filter import guided_upsample_np
from illexp_ros.runtime.model_io import load_model
from illexp_ros.runtime.torch_pipeline import TorchFramePipeline


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]


@pytest.mark.parametrize("low_hw,full_hw", [((12, 16), (48, 64)), ((13, 17), (50, 71)), ((20, 20), (20, 20))])
def test_opencv_guided_upsampling_matches_core_fast(low_hw, full_hw):
    rng = np.random.default_rng(1)
    full_in = cv2.GaussianBlur(rng.random((*full_hw, 3), dtype=np.float32), (5, 5), 0)
    full_in = (full_in - full_in.min()) / (full_in.max() - full_in.min())
    low_in = cv2.resize(full_in, low_hw[::-1], interpolation=cv2.INTER_AREA)
    # A tone curve plus a spatially varying gain plus noise: the fit has something real to capture.
    ramp = np.linspace(0.6, 1.4, low_hw[1], dtype=np.float32)[None, :, None]
    low_out = np.clip(np.sqrt(low_in) * ramp + rng.normal(0, 0.02, low_in.shape).astype(np.float32), 0, 1)
    got = guided_upsample_np(low_in, low_out, full_in)
    want = guided_upsample(chw(low_in), chw(low_out), chw(full_in))[0].numpy().transpose(1, 2, 0)
    assert got.shape == (*full_hw, 3)
    assert np.abs(got - want).max() < 1e-4
    assert np.abs(got - full_in).max() > 0.1  # it did transfer a correction


@pytest.fixture(scope="module")
def tiny_model(tiny_path):
    return load_model(tiny_path)[0]


def cpu_pipeline(model) -> CpuPipeline:
    def network(x):
        with torch.inference_mode():
            out, em = model.forward_aligned(torch.from_numpy(x))
        return out.numpy(), em.numpy()

    return CpuPipeline(network, model.stride_multiple)


@pytest.mark.parametrize("bgr", [False, True])
@pytest.mark.parametrize(("short_side", "size"), [
    (0, (37, 53)),
    (32, (64, 96)),  # -> 32x48, an exact 2x area reduction
    (32, (75, 103)),  # -> 32x40: 2.34x and 2.58x, where torch's own "area" mode is not OpenCV's INTER_AREA
])
def test_torch_frame_pipeline_matches_cpu_pipeline(tiny_model, bgr, short_side, size):
    # The torch_cuda / tensorrt backends' device pipeline, here on the CPU in float32 (no GPU needed).
    torch_pipe = TorchFramePipeline(tiny_model.forward_aligned, tiny_model.stride_multiple, "cpu")
    np_pipe = cpu_pipeline(tiny_model)
    frame = random_frame(*size, seed=7)
    out_t, em_t = torch_pipe.run(frame, bgr, True, short_side)
    out_n, em_n = np_pipe.run(frame, bgr, True, short_side)
    assert out_t.shape == frame.shape and em_t.shape == size
    assert max_diff(out_t, out_n) <= 2
    assert max_diff(em_t, em_n) <= 2
    again, _ = torch_pipe.run(frame, bgr, False, short_side)  # cached state reused
    assert np.array_equal(again, out_t)


@pytest.mark.parametrize("size", [(96, 128), (100, 130)])  # 2x and 2.08x / 2.03x down to 48 x 64
def test_enhancer_fast_mode_matches_core_fast_forward(tiny_path, tiny_model, size):
    frame = random_frame(*size, seed=11)
    enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", fast=True, internal_short_side=48, threads=1)
    out = enh.enhance(frame)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        ref, _ = fast_forward(tiny_model, x, short_side=48)
    ref = (ref[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    assert max_diff(out, ref) <= 2
    full = Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1).enhance(frame)
    assert max_diff(out, full) > 2  # fast mode really ran at the lower resolution


@pytest.mark.parametrize("kind", ["under", "over"])
def test_fast_mode_psnr_cost_on_a_synthetic_pair(kind):
    from skimage import data

    path = shipped_model("mixed")
    ref = cv2.resize(data.astronaut(), (320, 240), interpolation=cv2.INTER_AREA)
    params = (1.0, 0.35, 1.6) if kind == "under" else (1.0, 1.8, 0.6)
    degraded = (degrade(ref.astype(np.float32) / 255.0, *params) * 255.0 + 0.5).astype(np.uint8)
    enh = Enhancer.from_model(str(path), backend="onnxruntime", threads=2)
    full_psnr = psnr(enh.enhance(degraded), ref)
    enh.fast = True
    fast_psnr = psnr(enh.enhance(degraded), ref)
    print(f"{kind}: degraded {psnr(degraded, ref):.2f} dB, full {full_psnr:.2f} dB, fast "
          f"(short side {enh.internal_short_side}, model {enh.model_name}) {fast_psnr:.2f} dB")
    assert full_psnr - fast_psnr <= 1.5


def reference_fast_path(pipeline: CpuPipeline, frame: np.ndarray, bgr: bool, short_side: int) -> np.ndarray:
    """Fast mode as the CPU pipeline computed it before its full-resolution passes were banded and fused
    (README "Benchmark"): the whole frame in float, one area resize, the guided upsampling in float, then
    clamp and round. Same network call as the pipeline."""
    from illexp_ros.core.fast import internal_size
    from illexp_ros.runtime.cpu_pipeline import channels_first_view, channels_last_view, fill_replicate_pad, padded

    h, w = frame.shape[:2]
    hl, wl = internal_size(h, w, short_side)
    full = frame.astype(np.float32) / np.float32(255.0)
    low_in = cv2.resize(full, (wl, hl), interpolation=cv2.INTER_AREA)
    net_in = np.empty((1, 3, padded(hl, pipeline.multiple), padded(wl, pipeline.multiple)), np.float32)
    net_in[0, :, :hl, :wl] = channels_first_view(low_in, bgr)
    fill_replicate_pad(net_in, hl, wl)
    out, _ = pipeline.network(net_in)
    low_out = np.ascontiguousarray(channels_last_view(out[0, :, :hl, :wl], bgr))
    corrected = guided_upsample_np(low_in, low_out, full)
    return np.round(np.clip(corrected, 0.0, 1.0) * 255.0).astype(np.uint8)


def real_photo(width: int, height: int, name: str) -> np.ndarray:
    from skimage import data as skdata

    rgb = getattr(skdata, name)()
    return np.ascontiguousarray(cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)[..., ::-1])


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (1920, 1080), (1283, 721)])
def test_banded_fast_path_matches_the_reference_within_rounding(size, workers):
    """The banded, fused fast path (threads over row bands) against the plain float computation, with the
    shipped fast model on real photographs: every pixel within 1/255. (1283 x 721: no band borders line up
    with the area cells, one band.)"""
    model, _ = load_model(shipped_model("mixed_fast"))
    pipeline = cpu_pipeline(model)
    pipeline = CpuPipeline(pipeline.network, model.stride_multiple, workers=workers)
    for name in ("chelsea", "coffee", "astronaut"):
        photo = real_photo(*size, name)
        # The photos as they are (the shipped model leaves well-exposed frames nearly alone) and two stops
        # darker, which it must brighten: so the comparison is not between two near-copies of the input.
        for frame, must_change in ((photo, False), ((photo // 4).astype(np.uint8), True)):
            got, _ = pipeline.run(frame, bgr=True, want_map=False, short_side=64)
            want = reference_fast_path(pipeline, frame, bgr=True, short_side=64)
            assert got.shape == frame.shape and got.dtype == np.uint8
            assert max_diff(got, want) <= 1, (name, size, must_change)
            if must_change:
                assert got.mean() > frame.mean() + 20, (name, size)  # it did correct something
    pipeline.clear()


@pytest.mark.parametrize("backend", ["torch_cpu", "onnxruntime"])
def test_fast_mode_runs_the_guided_fit_the_model_file_records(tmp_path, backend):
    # A file records the fit it was trained through; the runtime must run that fit, not the code's default.
    fit = GuidedFit(1, 1e-2)
    assert fit != DEFAULT_FIT
    recorded = make_tiny_model(tmp_path / "fit.pt", seed=3, meta={"guided_radius": 1, "guided_eps": 1e-2})
    plain = make_tiny_model(tmp_path / "plain.pt", seed=3)
    model, info = load_model(recorded)
    assert info["guided_fit"] == fit and load_model(plain)[1]["guided_fit"] == DEFAULT_FIT
    frame = random_frame(96, 128, seed=5)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255.0

    def reference(f: GuidedFit) -> np.ndarray:
        with torch.inference_mode():
            ref, _ = fast_forward(model, x, 48, *f)
        return (ref[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)

    outs = {}
    for name, path in (("recorded", recorded), ("plain", plain)):
        enh = Enhancer.from_model(str(path), backend=backend, fast=True, internal_short_side=48, threads=1)
        outs[name] = enh.enhance(frame)
        enh.close()
    assert max_diff(outs["recorded"], reference(fit)) <= 2
    assert max_diff(outs["plain"], reference(DEFAULT_FIT)) <= 2
    assert max_diff(outs["recorded"], outs["plain"]) > 2  # the two fits really differ on this frame


def test_torch_frame_pipeline_runs_the_fit_it_is_given(tiny_model):
    # The GPU backends' pipeline (here on the CPU) with a non-default fit agrees with the CPU pipeline's.
    fit = GuidedFit(1, 1e-2)
    torch_pipe = TorchFramePipeline(tiny_model.forward_aligned, tiny_model.stride_multiple, "cpu", fit=fit)
    base = cpu_pipeline(tiny_model)
    np_pipe = CpuPipeline(base.network, tiny_model.stride_multiple, fit=fit)
    frame = random_frame(64, 96, seed=8)
    out_t, _ = torch_pipe.run(frame, False, False, 32)
    assert max_diff(out_t, np_pipe.run(frame, False, False, 32)[0]) <= 2
    assert max_diff(out_t, base.run(frame, False, False, 32)[0]) > 2


@pytest.mark.parametrize("meta, expected", [({"guided_radius": 0}, "radius"), ({"guided_radius": 2.5}, "radius"),
                                            ({"guided_eps": 0}, "eps"), ({"guided_eps": "small"}, "eps")])
def test_a_file_with_an_invalid_guided_fit_is_a_clear_load_error(tmp_path, meta, expected):
    path = make_tiny_model(tmp_path / "bad_fit.pt", meta=meta)
    with pytest.raises(ModelLoadError, match=f"invalid guided fit.*{expected}"):
        load_model(path)
