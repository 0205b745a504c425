"""passthrough: frames come back as copies (no network). For testing the plumbing, and as the node's off switch."""

from __future__ import annotations

from typing import Any

import numpy as np

from illexp_ros.core.networks import IllExpNet
from illexp_ros.runtime.backends.base import Backend


class PassthroughRunner:
    def run(self, frame: np.ndarray, bgr: bool, want_map: bool, short_side: int
            ) -> tuple[np.ndarray, np.ndarray | None]:
        return frame.copy(), (np.zeros(frame.shape[:2], np.uint8) if want_map else None)

    def close(self) -> None:
        pass


class PassthroughBackend(Backend):
    name = "passthrough"
    default_short_side = 0
    needs_model = False

    @staticmethod
    def unavailable_reason() -> str | None:
        return None

    def load(self, model: IllExpNet | None, info: dict[str, Any]) -> PassthroughRunner:
        return PassthroughRunner()
