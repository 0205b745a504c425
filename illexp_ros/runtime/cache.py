"""Where the runtime keeps generated artefacts (ONNX exports, TensorRT engines): one folder per kind."""

from __future__ import annotations

import os
from pathlib import Path

from illexp_ros.runtime.errors import EnhancerError

CACHE_ENV = "ILLEXP_CACHE_DIR"


def cache_dir(kind: str) -> Path:
    """$ILLEXP_CACHE_DIR/<kind>, else $XDG_CACHE_HOME/illexp_ros/<kind>, else ~/.cache/illexp_ros/<kind>, created
    if missing; EnhancerError when it cannot be."""
    root = os.environ.get(CACHE_ENV)
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "illexp_ros"
    path = base / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only home on a robot, a file in the way
        raise EnhancerError(f"cannot create the cache folder {path} ({exc.strerror or exc}); "
                            f"set {CACHE_ENV} to a writable folder") from exc
    return path
