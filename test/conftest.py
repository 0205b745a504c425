"""Shared test set-up: one ROS domain per test run, localhost-only discovery, few CPU threads."""

import os
import random

# Chosen before anything imports rclpy, so parallel runs (and a developer's own ROS graph) never cross-talk.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


requires_cuda = pytest.mark.skipif(not cuda_available(), reason="needs an NVIDIA GPU with CUDA; none here")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Exported ONNX graphs and engines go to a per-run cache, never the user's ~/.cache."""
    monkeypatch.setenv("ILLEXP_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "illexp_cache"))


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory):
    """A small random model file (test/tiny_models.py) for tests of plumbing, not quality."""
    from tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny.pt")


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (two shared cores; one thread also makes CPU training bit-reproducible)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
