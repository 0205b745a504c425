"""Where the runtime keeps generated artefacts (ONNX exports, TensorRT engines): one folder per kind."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(kind: str) -> Path:
    """$ILLEXP_CACHE_DIR/<kind>, else $XDG_CACHE_HOME/illexp_ros/<kind>, else ~/.cache/illexp_ros/<kind>."""
    root = os.environ.get("ILLEXP_CACHE_DIR")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "illexp_ros"
    path = base / kind
    path.mkdir(parents=True, exist_ok=True)
    return path
