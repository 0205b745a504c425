"""Enhancer: backend parity, colour order, resolutions, auto routing, settings and the errors it raises."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from dds_helpers import wait_until_ended
from shipped import shipped_model
from tiny_models import make_tiny_model, max_diff, random_frame

from illexp_ros.runtime import (
    BackendUnavailableError,
    Enhancer,
    EnhancerError,
    ModelLoadError,
    available_backends,
)
from illexp_ros.runtime.model_io import load_model


def reference_output(path, frame_rgb: np.ndarray) -> np.ndarray:
    """The model's own forward (which pads internally) on an RGB frame, rounded to uint8."""
    model, _ = load_model(path)
    x = torch.from_numpy(frame_rgb).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        out, _ = model(x)
    return (out[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


@pytest.mark.parametrize("size", [(37, 53), (61, 45)])
def test_onnxruntime_matches_torch_cpu_on_odd_sizes(tiny_path, size):
    frame = random_frame(*size, seed=size[0])
    ort_enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    cpu_enh = Enhancer.from_model(str(tiny_path), backend="torch_cpu", threads=1)
    out_ort = ort_enh.enhance(frame)
    out_cpu = cpu_enh.enhance(frame)
    assert out_ort.shape == frame.shape and out_ort.dtype == np.uint8
    assert out_ort.std() > 40.0, "the tiny model's output is too flat for a meaningful comparison"
    assert max_diff(out_ort, out_cpu) <= 2
    # Both also agree with the model's own padded forward: pre/post-processing is right, not only consistent.
    assert max_diff(out_cpu, reference_output(tiny_path, frame)) <= 2
    em = ort_enh.exposure_map(frame)
    assert em.shape == size and em.dtype == np.uint8
    assert max_diff(em, cpu_enh.exposure_map(frame)) <= 2
    ort_enh.close()
    cpu_enh.close()


@pytest.mark.parametrize("fast", [False, True])
def test_bgr_and_rgb_give_the_same_correction(tiny_path, fast):
    enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", fast=fast, internal_short_side=24, threads=1)
    frame = random_frame(72, 96, seed=3)
    out_rgb, em_rgb = enh.enhance_with_map(frame, color_order="rgb")
    out_bgr, em_bgr = enh.enhance_with_map(np.ascontiguousarray(frame[..., ::-1]), color_order="bgr")
    assert max_diff(out_bgr[..., ::-1], out_rgb) <= 1
    assert max_diff(em_bgr, em_rgb) <= 1
    # and the order matters: an RGB frame declared as BGR is corrected differently
    assert max_diff(enh.enhance(frame, color_order="bgr")[..., ::-1], out_rgb) > 1


def test_resolution_changes_between_calls(tiny_path):
    enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    sizes = [(40, 56), (33, 47), (64, 48), (17, 90), (25, 31), (40, 56)]  # more than the buffer cache holds
    frames = [random_frame(h, w, seed=i) for i, (h, w) in enumerate(sizes)]
    first = [enh.enhance(f) for f in frames]
    for f, out in zip(frames, first):
        assert out.shape == f.shape
    fresh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    for f, out in zip(reversed(frames), reversed(first)):
        assert np.array_equal(enh.enhance(f), out)
        assert np.array_equal(fresh.enhance(f), out)
    for mode_fast in (True, False):  # fast on/off between calls, still correct sizes
        enh.fast = mode_fast
        assert enh.enhance(frames[2]).shape == frames[2].shape


def test_output_is_a_new_array(tiny_path):
    enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    frame = random_frame(24, 32)
    a = enh.enhance(frame)
    b = enh.enhance(frame)
    assert a is not b and not np.shares_memory(a, b) and not np.shares_memory(a, frame)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("fast", [False, True])
def test_warm_frames_allocate_only_the_output(tiny_path, fast):
    enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", fast=fast, internal_short_side=32, threads=1)
    frame = random_frame(240, 320, seed=5)
    enh.enhance(frame)
    enh.enhance(frame)
    tracemalloc.start()
    out = enh.enhance(frame)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # A float32 copy of the frame would be 4x the output; numpy and OpenCV allocations are traced.
    assert peak < 1.5 * out.nbytes + 64 * 1024


def test_onnxruntime_holds_buffers_for_the_documented_number_of_resolutions(tiny_path):
    """A stream that keeps changing size: ONNX Runtime's I/O bindings are dropped with the pipeline's buffers
    (they kept the network's input and outputs of 8 resolutions alive, twice MAX_CACHED_RESOLUTIONS)."""
    from illexp_ros.runtime.cpu_pipeline import MAX_CACHED_RESOLUTIONS

    enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", fast=False, threads=1)
    sizes = [(96 + k, 128) for k in range(3 * MAX_CACHED_RESOLUTIONS)]  # one in 100 more pixels each
    tracemalloc.start()
    try:
        for h, w in sizes[:MAX_CACHED_RESOLUTIONS]:
            enh.enhance(random_frame(h, w))
        held_first, _ = tracemalloc.get_traced_memory()
        for h, w in sizes[MAX_CACHED_RESOLUTIONS:]:
            enh.enhance(random_frame(h, w))
        held_last, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert enh.buffered_resolutions() == MAX_CACHED_RESOLUTIONS
    assert held_last < 1.3 * held_first, (held_first, held_last)  # 1.08x here; 1.76x before


def test_buffered_resolutions_does_not_wait_for_the_frame_in_progress(tiny_path):
    """The node's diagnostics timer asks once a second, on the executor that also answers parameter requests; it
    waited for the frame lock, i.e. up to a whole frame (seconds in full mode at 1080p on a CPU)."""
    import threading

    enh = Enhancer.from_model(str(tiny_path), backend="torch_cpu", fast=False, threads=1)
    enh.enhance(random_frame(32, 48))
    answer = []
    with enh._lock:  # as a frame being corrected holds it
        asker = threading.Thread(target=lambda: answer.append(enh.buffered_resolutions()), daemon=True)
        asker.start()
        asker.join(5.0)
        assert answer == [1], "buffered_resolutions() waited for the frame lock"
    enh.close()
    assert enh.buffered_resolutions() == 0


def test_an_unknown_model_name_lists_the_shipped_ones():
    """The message named only under, over and mixed; mixed_fast and the fast specialists load by name too."""
    from illexp_ros.runtime.errors import ModelLoadError
    from illexp_ros.runtime.model_io import resolve_model_path

    with pytest.raises(ModelLoadError, match=r"shipped names are .*mixed_fast.*under_fast"):
        resolve_model_path("mixed_fasst")


def test_a_folder_or_file_named_like_a_shipped_model_does_not_shadow_it(tmp_path, monkeypatch):
    """`illexp_bag process` run beside a bag named `mixed` said "model file not found: mixed" (and a text file of
    that name was read as a corrupt model): the default routes looked in the working folder first."""
    from illexp_ros.runtime.model_io import resolve_model_path

    shipped = {name: resolve_model_path(name) for name in ("mixed", "under_fast")}
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mixed").mkdir()
    (tmp_path / "under_fast").write_text("notes")
    assert {name: resolve_model_path(name) for name in shipped} == shipped
    enh = Enhancer.from_model("default", backend="torch_cpu", mode="auto", fast=True)
    out = enh.enhance(random_frame(32, 48))
    assert out.shape == (32, 48, 3) and set(enh.model_name.split("+")) == {"mixed_fast", "under_fast", "over_fast"}
    (tmp_path / "own").write_bytes(shipped["mixed"].read_bytes())  # a model file without a suffix, by name
    assert resolve_model_path("own") == Path("own")


def test_passthrough_copies_without_a_model():
    enh = Enhancer.from_model("/nonexistent/model.pt", backend="passthrough")
    frame = random_frame(10, 12)
    out, em = enh.enhance_with_map(frame, color_order="bgr")
    assert np.array_equal(out, frame) and not np.shares_memory(out, frame)
    assert em.shape == (10, 12) and em.dtype == np.uint8
    assert enh.backend_name == "passthrough" and enh.last_route == "passthrough"


@pytest.fixture()
def shipped_dir(tmp_path, monkeypatch, tiny_path):
    """A models dir with under/over/mixed (different random weights) searched before the source tree's."""
    for i, name in enumerate(("under", "over", "mixed")):
        make_tiny_model(tmp_path / f"{name}.pt", seed=10 + i)
    monkeypatch.setenv("ILLEXP_MODELS_DIR", str(tmp_path))
    return tmp_path


def test_auto_mode_routes_frames(shipped_dir):
    from skimage import data

    from illexp_ros.core.degradation import degrade

    enh = Enhancer.from_model("default", backend="onnxruntime", mode="auto", threads=1)
    assert enh.model_name == "under+over+mixed"
    ref = data.astronaut()[::8, ::8].copy()  # 64 x 64, well exposed
    ref_f = ref.astype(np.float32) / 255.0
    dark = (degrade(ref_f, 1.0, 0.25, 1.8) * 255 + 0.5).astype(np.uint8)
    bright = (degrade(ref_f, 1.0, 2.5, 0.5) * 255 + 0.5).astype(np.uint8)

    out = enh.enhance(ref)
    assert enh.last_route == "well-exposed"
    assert np.array_equal(out, ref) and out is not ref
    assert not enh.exposure_map(ref).any()

    out_dark = enh.enhance(dark)
    assert enh.last_route == "under"
    under_only = Enhancer.from_model("default", backend="onnxruntime", mode="under", threads=1)
    assert np.array_equal(out_dark, under_only.enhance(dark))
    enh.enhance(bright)
    assert enh.last_route == "over"

    enh.mode = "mixed"
    out = enh.enhance(ref)
    assert enh.last_route == "mixed" and not np.array_equal(out, ref)


def test_default_falls_back_to_mixed_when_under_is_not_shipped(tmp_path, monkeypatch):
    from illexp_ros.runtime import model_io

    make_tiny_model(tmp_path / "mixed.pt")
    # Only tmp_path: the source tree's models/ ships under.pt, which must not be found here.
    monkeypatch.setattr(model_io, "models_dirs", lambda: [tmp_path])
    lines = []
    enh = Enhancer.from_model("default", backend="torch_cpu", mode="under", logger=lines.append, threads=1)
    enh.enhance(random_frame(16, 16))
    assert enh.last_route == "mixed"
    assert any("under" in line and "mixed.pt" in line for line in lines)


def test_fast_variant_file_is_used_in_fast_mode(tmp_path):
    make_tiny_model(tmp_path / "net.pt", seed=1)
    make_tiny_model(tmp_path / "net_fast.pt", seed=2, meta={"fast_short_side": 40})
    enh = Enhancer.from_model(str(tmp_path / "net.pt"), backend="onnxruntime", threads=1)
    frame = random_frame(64, 80)
    enh.enhance(frame)
    assert enh.last_route == "net" and enh.model_name == "net"
    enh.fast = True
    out = enh.enhance(frame)
    assert enh.last_route == "net_fast" and enh.model_name == "net_fast"
    # The fast model runs at the internal size it was fine-tuned at (its meta) unless one is set.
    assert enh.internal_short_side == 40
    enh.internal_short_side = 24
    assert enh.internal_short_side == 24 and not np.array_equal(enh.enhance(frame), out)


def test_settings_validate(tiny_path):
    enh = Enhancer.from_model(str(tiny_path), backend="torch_cpu", threads=1)
    with pytest.raises(ValueError, match="mode"):
        enh.mode = "night"
    with pytest.raises(ValueError, match="fast"):
        enh.fast = "yes"
    with pytest.raises(ValueError, match="mode"):
        enh.mode = None  # switch(mode=None) means "unchanged"; the property must not
    with pytest.raises(ValueError, match="fast"):
        enh.fast = None
    with pytest.raises(ValueError, match="internal_short_side"):
        enh.internal_short_side = -1
    with pytest.raises(ValueError, match="color_order"):
        enh.enhance(random_frame(8, 8), color_order="yuv")
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        enh.enhance(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        enh.enhance(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="backend"):
        Enhancer.from_model(str(tiny_path), backend="opencl")
    assert enh.mode == "mixed" and enh.fast is False
    enh.internal_short_side = 48
    assert enh.internal_short_side == 48
    enh.close()
    with pytest.raises(EnhancerError, match="closed"):
        enh.enhance(random_frame(8, 8))


def test_missing_model_file_names_the_file(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(ModelLoadError, match="nope.pt"):
        Enhancer.from_model(str(missing), backend="torch_cpu")


def test_truncated_model_file_names_the_file(tmp_path, tiny_path):
    broken = tmp_path / "broken.pt"
    data = tiny_path.read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="broken.pt") as err:
        Enhancer.from_model(str(broken), backend="onnxruntime")
    assert "corrupt" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_model_file_whose_weights_do_not_fit_its_config_is_one_line(tmp_path, tiny_path):
    payload = torch.load(tiny_path, map_location="cpu", weights_only=True)
    payload["state_dict"] = {k: v for i, (k, v) in enumerate(payload["state_dict"].items()) if i % 2}
    torch.save(payload, tmp_path / "half.pt")
    with pytest.raises(ModelLoadError, match="half.pt does not match its config: .*Missing key") as err:
        Enhancer.from_model(str(tmp_path / "half.pt"), backend="torch_cpu")
    assert "\n" not in str(err.value) and "\t" not in str(err.value) and len(str(err.value)) < 500


def test_missing_backend_package_is_named(monkeypatch, tiny_path):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name in ("onnxruntime", "torch_tensorrt"):
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(BackendUnavailableError, match="pip install onnxruntime"):
        Enhancer.from_model(str(tiny_path), backend="onnxruntime")
    assert "onnxruntime" not in available_backends()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(BackendUnavailableError, match="torch_tensorrt is not installed"):
        Enhancer.from_model(str(tiny_path), backend="tensorrt")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the GPU backends are available")
def test_gpu_backends_unavailable_without_cuda(tiny_path):
    for name in ("torch_cuda", "tensorrt"):
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            Enhancer.from_model(str(tiny_path), backend=name)


def test_auto_backend_logs_its_choice(tiny_path):
    lines = []
    enh = Enhancer.from_model(str(tiny_path), backend="auto", logger=lines.append, threads=1)
    assert enh.backend_name == available_backends()[0]
    assert any(line.startswith(f"backend auto -> {enh.backend_name}") for line in lines)
    if not torch.cuda.is_available():
        assert any("skipped" in line and "torch_cuda" in line for line in lines)


def test_onnx_cache_is_reused_and_repaired(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLEXP_CACHE_DIR", str(tmp_path / "cache"))
    lines = []
    Enhancer.from_model(str(tiny_path), backend="onnxruntime", logger=lines.append, threads=1)
    assert any("exported" in line for line in lines)
    cached = list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    assert len(cached) == 1
    lines.clear()
    Enhancer.from_model(str(tiny_path), backend="onnxruntime", logger=lines.append, threads=1)
    assert not any("exported" in line for line in lines)
    cached[0].write_bytes(b"not an onnx file")
    enh = Enhancer.from_model(str(tiny_path), backend="onnxruntime", logger=lines.append, threads=1)
    assert any("did not load" in line for line in lines)
    assert enh.enhance(random_frame(16, 24)).shape == (16, 24, 3)


def test_a_cache_folder_that_cannot_be_made_is_one_clear_error_and_auto_goes_on(tiny_path, tmp_path, monkeypatch):
    (tmp_path / "file").write_text("in the way")
    monkeypatch.setenv("ILLEXP_CACHE_DIR", str(tmp_path / "file"))  # e.g. a read-only home on the robot
    with pytest.raises(EnhancerError, match=r"cannot create the cache folder .*file/onnx \(Not a directory\); "
                                            r"set ILLEXP_CACHE_DIR to a writable folder"):
        Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    enh = Enhancer.from_model(str(tiny_path), backend="auto", threads=1)
    assert enh.backend_name != "onnxruntime" and enh.enhance(random_frame(8, 8)).shape == (8, 8, 3)


def test_no_home_folder_for_the_cache_is_one_clear_error(tiny_path, monkeypatch):
    """A container run under a uid with no passwd entry and no HOME: pathlib cannot find a home (RuntimeError)."""
    from pathlib import Path as PathClass

    for name in ("ILLEXP_CACHE_DIR", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(PathClass, "home", classmethod(no_home))
    with pytest.raises(EnhancerError, match="no home folder for the cache .*; set ILLEXP_CACHE_DIR to a writable"):
        Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    assert Enhancer.from_model(str(tiny_path), backend="auto", threads=1).backend_name == "torch_cpu"


def test_a_cache_entry_that_cannot_be_written_is_one_clear_error(tiny_path, tmp_path, monkeypatch):
    monkeypatch.setenv("ILLEXP_CACHE_DIR", str(tmp_path / "cache"))
    Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    cached.write_bytes(b"not an onnx file")  # so this process exports it again, through its temporary file...
    cached.with_name(f".{cached.name}.{os.getpid()}.tmp").mkdir()  # ...which cannot be written
    with pytest.raises(EnhancerError, match=f"cannot write the ONNX export {cached.name} to the cache folder"):
        Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)


def test_temporary_files_left_by_a_killed_export_are_removed_at_the_next_export(tiny_path, tmp_path, monkeypatch):
    """An exporter killed outright (SIGKILL, the OOM killer, the export timeout) cannot remove its temporary file;
    the next export of that entry does, unless the file is recent enough to belong to an export still running."""
    monkeypatch.setenv("ILLEXP_CACHE_DIR", str(tmp_path / "cache"))
    Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    (cached,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    cached.unlink()
    left = cached.with_name(f".{cached.name}.4242.tmp")
    running = cached.with_name(f".{cached.name}.4343.tmp")
    other = cached.with_name(".another_opset17.onnx.4242.tmp")
    for f in (left, running, other):
        f.write_bytes(b"half an export")
    hour_ago = time.time() - 3600
    for f in (left, other):
        os.utime(f, (hour_ago, hour_ago))
    Enhancer.from_model(str(tiny_path), backend="onnxruntime", threads=1)
    assert cached.is_file() and not left.exists()
    assert running.exists() and other.exists()  # maybe still being written; another entry's is not ours


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the export child ends with its parent on Linux")
@pytest.mark.parametrize("parent_ends", ["while the child imports", "during the export"])
def test_an_export_child_ends_with_the_process_that_started_it(tmp_path, parent_ends):
    """A node stopped while its ONNX export runs in a child leaves no process behind (it used to run on, write the
    export and only then end) and no temporary file. Ended during the export (the child's SIGTERM handler is in
    place, so it has set PR_SET_PDEATHSIG), only the kernel's signal can stop it; ended earlier, the child's
    check of its parent does."""
    out = tmp_path / "net.onnx"
    # The shipped fast model: its export takes about a second here, long enough to end the parent during it.
    model = shipped_model("mixed_fast")
    wait_for_handler = parent_ends == "during the export"
    parent = textwrap.dedent(f"""
        import os, threading, time
        from pathlib import Path
        from illexp_ros.runtime.onnx_export import export_in_child
        threading.Thread(target=export_in_child, args=(Path({str(model)!r}), Path({str(out)!r}), 17),
                         daemon=True).start()
        me, kids = os.getpid(), []
        while not kids:  # the export child: the process whose parent is this one
            time.sleep(0.01)
            for entry in os.listdir("/proc"):
                try:
                    if entry.isdigit() and int(open(f"/proc/{{entry}}/stat").read().rsplit(")", 1)[1].split()[1]) == me:
                        kids.append(entry)
                except OSError:
                    pass
        def catches_sigterm(pid):
            status = open(f"/proc/{{pid}}/status").read()
            return int(status.split("SigCgt:")[1].split()[0], 16) >> 14 & 1
        while {wait_for_handler} and not catches_sigterm(kids[0]):
            time.sleep(0.005)
        if {wait_for_handler}:
            time.sleep(0.05)  # past prctl and the parent check, into loading the model
        print(kids[0], flush=True)
        os._exit(0)  # as a node ends once its worker's join times out
    """)
    started = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, timeout=60)
    child = int(started.stdout.split()[0])
    assert wait_until_ended(child, 30.0), "the export child outlived its parent by 30 s"
    assert not out.exists(), "the export child went on to write the export after its parent ended"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_shipped_mixed_model_loads():
    enh = Enhancer.from_model(str(shipped_model("mixed")), backend="onnxruntime", threads=1)
    frame = random_frame(48, 64)
    assert enh.enhance(frame).shape == frame.shape

