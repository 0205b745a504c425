"""The `max_rate_hz` limit: which incoming frames to correct, keeping to a schedule rather than to gaps."""

from __future__ import annotations

SLACK = 0.1  # fraction of a period a frame may come early, so camera jitter does not skip frames


class RateLimiter:
    """accept(now) is True for frames to correct. A 30 Hz camera limited to 15 Hz gives every other frame,
    even with jitter; after a pause the schedule restarts at the next frame. rate_hz 0 = accept all."""

    def __init__(self, rate_hz: float = 0.0) -> None:
        self.rate_hz = rate_hz

    @property
    def rate_hz(self) -> float:
        return self._rate_hz

    @rate_hz.setter
    def rate_hz(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"rate must be >= 0 Hz, got {value}")
        self._rate_hz = float(value)
        self._next_due = float("-inf")

    def accept(self, now: float) -> bool:
        if self._rate_hz <= 0:
            return True
        period = 1.0 / self._rate_hz
        if now < self._next_due - SLACK * period:
            return False
        behind = now - self._next_due > period
        self._next_due = now + period if behind else self._next_due + period
        return True
