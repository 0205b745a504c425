"""Where the runtime keeps generated artefacts (ONNX exports, TensorRT engines): one folder per kind."""

from __future__ import annotations

import os
from pathlib import Path

from illexp_ros.runtime.errors import EnhancerError

CACHE_ENV = "ILLEXP_CACHE_DIR"


def cache_dir(kind: str) -> Path:
    """$ILLEXP_CACHE_DIR/<kind>, else $XDG_CACHE_HOME/illexp_ros/<kind>, else ~/.cache/illexp_ros/<kind>, created
    if missing; EnhancerError when it cannot be."""
    if os.environ.get(CACHE_ENV):
        base = Path(os.environ[CACHE_ENV])
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]) / "illexp_ros"
    else:
        try:
            base = Path.home() / ".cache" / "illexp_ros"
        except RuntimeError as exc:  # no HOME and no passwd entry: a container run under an arbitrary uid
            raise EnhancerError(f"no home folder for the cache ({exc}); set {CACHE_ENV} to a writable folder") \
                from exc
    path = base / kind
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only home on a robot, a file in the way
        raise EnhancerError(f"cannot create the cache folder {path} ({exc.strerror or exc}); "
                            f"set {CACHE_ENV} to a writable folder") from exc
    return path
