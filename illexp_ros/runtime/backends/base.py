"""What every backend provides: a check of whether it can run here, and runners that enhance frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from illexp_ros.core.networks import IllExpNet

Logger = Callable[[str], None]
# The most CPU threads a caller may ask for (the node's `threads` parameter, the tools' --threads): a tool given
# 100000 started 22,000 threads and stopped answering SIGTERM.
MAX_THREADS = 256


class Runner(Protocol):
    """One loaded network on one backend."""

    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
        """frame: H x W x 3 uint8, C-contiguous. short_side > 0: fast mode at that internal short side.
        Returns (a new H x W x 3 uint8 frame in the same colour order, H x W uint8 exposure map or None)."""
        ...

    def close(self) -> None: ...


class Backend:
    """Base class. Subclasses set `name`, `default_short_side`, and implement unavailable_reason / load."""

    name = "base"
    default_short_side = 128  # internal short side of fast mode when the caller gives 0
    needs_model = True

    def __init__(self, logger: Logger, threads: int = 0) -> None:
        self.log = logger
        self.threads = threads

    @staticmethod
    def unavailable_reason() -> str | None:
        """None when the backend can run here, else one line naming what is missing / what to install."""
        raise NotImplementedError

    def load(self, model: IllExpNet | None, info: dict[str, Any]) -> Runner:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the backend holds beyond its runners."""
