"""Frame counters and latency statistics of the node, and their diagnostic_msgs/DiagnosticArray form.

Counters are totals since start; FPS is over the time since the previous snapshot (the diagnostics period,
1 s); latency percentiles are over the last LATENCY_WINDOW published frames (the node leaves out the first
frame of each new size, which carries one-off set-up work); stamp ages leave out zero stamps and stamps ahead
of the node's clock. A statistic without samples is left out of the DiagnosticArray (never nan).
Every frame that reaches the node ends up in exactly one of: published, dropped (replaced by a newer frame
before the worker got to it, skipped by max_rate_hz, or lost before reaching the node, counted from gaps in
the publisher's sequence numbers), rejected (bad input) or failed (the Enhancer raised).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

LATENCY_WINDOW = 256


@dataclass(frozen=True)
class StatsSnapshot:
    received: int
    published: int
    dropped: int
    dropped_in_transport: int
    rejected: int
    failed: int
    fps_in: float
    fps_out: float
    latency_p50_ms: float
    latency_p99_ms: float
    stamp_age_p50_ms: float  # now - header.stamp at publish; meaningful only with a shared clock
    received_in_period: int
    problems_in_period: int


class FrameStats:
    """Thread-safe counters: the subscription callback and the worker thread both update them."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=window)
        self._ages: deque[float] = deque(maxlen=window)
        self._counts = dict(received=0, published=0, dropped=0, dropped_in_transport=0, rejected=0, failed=0)
        self._last_counts = dict(self._counts)
        self._last_time = time.monotonic()

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n
            if name == "dropped_in_transport":
                self._counts["dropped"] += n

    def published(self, latency_s: float | None, stamp_age_s: float | None) -> None:
        """Count a published frame; latency None = count it but keep it out of the latency statistics."""
        with self._lock:
            self._counts["published"] += 1
            if latency_s is not None:
                self._latencies.append(latency_s)
            # A stamp ahead of this clock (another machine's clock, a bag replayed with its recorded stamps
            # after a jump) has no meaningful age: kept out rather than reported as a negative one.
            if stamp_age_s is not None and stamp_age_s >= 0.0:
                self._ages.append(stamp_age_s)

    def restart_period(self) -> None:
        """The next snapshot's rates count from now (the node starts taking frames again)."""
        with self._lock:
            self._last_counts, self._last_time = dict(self._counts), time.monotonic()

    def snapshot(self) -> StatsSnapshot:
        """Totals, plus rates since the previous snapshot."""
        with self._lock:
            now = time.monotonic()
            period = max(now - self._last_time, 1e-6)
            counts, last = dict(self._counts), self._last_counts
            lat = np.array(self._latencies) * 1e3 if self._latencies else np.array([np.nan])
            age = np.array(self._ages) * 1e3 if self._ages else np.array([np.nan])
            self._last_counts, self._last_time = dict(counts), now
        return StatsSnapshot(
            **counts,
            fps_in=(counts["received"] - last["received"]) / period,
            fps_out=(counts["published"] - last["published"]) / period,
            latency_p50_ms=float(np.percentile(lat, 50)),
            latency_p99_ms=float(np.percentile(lat, 99)),
            stamp_age_p50_ms=float(np.percentile(age, 50)),
            received_in_period=counts["received"] - last["received"],
            problems_in_period=(counts["rejected"] - last["rejected"]) + (counts["failed"] - last["failed"]),
        )


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.2f}"
    return str(value)


def diagnostic_array(snap: StatsSnapshot, name: str, hardware_id: str, input_topic: str,
                     extra: dict[str, object], stamp, warnings: list[str] | tuple[str, ...] = ()) -> DiagnosticArray:
    """One DiagnosticStatus: WARN when no frame came in, or bad / failed frames, during the last period, or when
    the node has `warnings` of its own (each appended to the message)."""
    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if snap.problems_in_period:
        status.level = DiagnosticStatus.WARN
        status.message = f"{snap.problems_in_period} bad or failed frames in the last period"
    elif snap.received_in_period == 0:
        status.level = DiagnosticStatus.WARN
        status.message = f"no frames received on {input_topic}"
    else:
        status.level = DiagnosticStatus.OK
        status.message = f"correcting {snap.fps_out:.1f} fps"
    if warnings:
        status.level = DiagnosticStatus.WARN
        status.message = "; ".join([status.message, *warnings])
    # A statistic with no samples yet (no latency before the second frame of a size, no age when every stamp is
    # zero) is left out instead of published as nan.
    values = {k: v for k, v in asdict(snap).items()
              if not k.endswith("_in_period") and not (isinstance(v, float) and v != v)}
    values.update(extra)
    status.values = [KeyValue(key=k, value=_fmt(v)) for k, v in values.items()]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


def summary_line(snap: StatsSnapshot, backend: str, model: str) -> str:
    return (f"in {snap.fps_in:.1f} fps, out {snap.fps_out:.1f} fps, latency p50 {snap.latency_p50_ms:.1f} ms "
            f"p99 {snap.latency_p99_ms:.1f} ms, published {snap.published}, dropped {snap.dropped}, "
            f"rejected {snap.rejected}, failed {snap.failed} (backend {backend}, model {model})")
