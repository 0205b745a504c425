"""Matching a stereo camera's left and right frames by their header stamps.

message_filters (ROS's synchronisers) is not on PyPI, so the stereo node matches frames itself, as
message_filters' ExactTime and ApproximateTime policies would for two topics with one frame each: a frame
waits (at most `queue_size` per side) until the other side's frame with the same stamp arrives, or, with a
tolerance, the waiting frame of the other side whose stamp is nearest within it. Hardware-synchronised
stereo drivers stamp both views of an exposure alike, so the default tolerance is 0 (exact), as in
stereo_image_proc (its `approximate_sync` is off by default).

Every frame ends in exactly one of: a pair; unpaired (pushed out of a full queue, or stamped before a pair
that was made: its partner cannot come any more from a camera whose stamps grow). Frames that arrive out of
order are paired by stamp all the same. After a jump back in time (a looping bag), frames of the earlier
stamps wait until the queue pushes them out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
SIDES = ("left", "right")
MAX_SYNC_TOLERANCE_S = 1.0  # the largest stamp difference a pair may have (the node's sync_tolerance_s range)
MAX_SYNC_QUEUE = 100  # the most frames of a side that may wait (the node's sync_queue_size range)


@dataclass
class Pairing(Generic[Item]):
    pair: tuple[Item, Item] | None  # (left, right) when this frame completed a pair
    unpaired: int  # frames given up on by this call (either side)


class StampPairer(Generic[Item]):
    """Left and right frames in, (left, right) pairs out. Not thread-safe: one caller (the executor)."""

    def __init__(self, tolerance_ns: int = 0, queue_size: int = 5) -> None:
        if tolerance_ns < 0 or queue_size < 1:
            raise ValueError(f"tolerance must be >= 0 and queue_size >= 1, got {tolerance_ns} and {queue_size}")
        self.tolerance_ns = int(tolerance_ns)
        self.queue_size = int(queue_size)
        self._waiting: tuple[deque, deque] = (deque(), deque())  # (stamp_ns, item), oldest first, per side

    def add(self, side: int, stamp_ns: int, item: Item) -> Pairing[Item]:
        """Offer a frame of `side` (0 left, 1 right) stamped `stamp_ns`."""
        own, other = self._waiting[side], self._waiting[1 - side]
        best = None
        for i, (stamp, _) in enumerate(other):
            distance = abs(stamp - stamp_ns)
            if distance <= self.tolerance_ns and (best is None or distance < best[1]):
                best = (i, distance)
        if best is None:
            own.append((stamp_ns, item))
            unpaired = 0
            if len(own) > self.queue_size:
                own.popleft()
                unpaired = 1
            return Pairing(None, unpaired)
        partner_stamp, partner = other[best[0]]
        del other[best[0]]
        # Frames stamped before the pair, on either side, cannot be paired any more: their partners would have
        # come before this pair's frames (a camera's stamps grow). Frames stamped after it stay, whatever order
        # they arrived in.
        unpaired = self._give_up_before(other, partner_stamp) + self._give_up_before(own, stamp_ns)
        pair = (item, partner) if side == 0 else (partner, item)
        return Pairing(pair, unpaired)

    @staticmethod
    def _give_up_before(queue: deque, stamp_ns: int) -> int:
        kept = [entry for entry in queue if entry[0] >= stamp_ns]
        given_up = len(queue) - len(kept)
        if given_up:
            queue.clear()
            queue.extend(kept)
        return given_up

    def waiting(self) -> int:
        """Frames waiting for their partner, both sides."""
        return len(self._waiting[0]) + len(self._waiting[1])

    def clear(self) -> int:
        """Give up on every waiting frame; returns how many there were."""
        n = self.waiting()
        for queue in self._waiting:
            queue.clear()
        return n
