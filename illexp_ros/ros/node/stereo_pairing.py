"""Matching a stereo camera's left and right frames by their header stamps.

message_filters (ROS's synchronisers) is not on PyPI, so the stereo node matches frames itself, as
message_filters' ExactTime and ApproximateTime policies would for two topics with one frame each: a frame
waits (at most `queue_size` per side) until the other side's frame with the same stamp arrives, or, with a
tolerance, the waiting frame of the other side whose stamp is nearest within it. Hardware-synchronised
stereo drivers stamp both views of an exposure alike, so the default tolerance is 0 (exact), as in
stereo_image_proc (its `approximate_sync` is off by default).

Every frame ends in exactly one of: a pair; unpaired (pushed out of a full queue, or stamped before a pair
that was made: its partner cannot come any more from a camera whose stamps grow). Frames that arrive out of
order are paired by stamp all the same. A stamp more than 1 s before the newest of its side is a jump back in
time (a looping bag, a restarted simulation): the frames waiting from before the jump (stamped more than 1 s after
the new stamp) are given up at once, counted unpaired, and the Pairing says so; otherwise they would stay queued,
or pair with a frame of the next pass that carries their stamp.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
SIDES = ("left", "right")
MAX_SYNC_TOLERANCE_S = 1.0  # the largest stamp difference a pair may have (the node's sync_tolerance_s range)
MAX_SYNC_QUEUE = 100  # the most frames of a side that may wait (the node's sync_queue_size range)
# A jump back: checked per side, so a view that lags the other by seconds is none; within one camera's stream,
# transport reorders frames by milliseconds, not by a second.
JUMP_BACK_NS = 1_000_000_000


@dataclass
class Pairing(Generic[Item]):
    pair: tuple[Item, Item] | None  # (left, right) when this frame completed a pair
    unpaired: int  # frames given up on by this call (either side), those of a jump back included
    jumped_back_ns: int = 0  # > 0: this frame's stamp jumped back this far from its side's newest (see above)
    given_up_at_jump: int = 0  # of `unpaired`, the frames from before that jump


class StampPairer(Generic[Item]):
    """Left and right frames in, (left, right) pairs out. Not thread-safe: one caller (the executor)."""

    def __init__(self, tolerance_ns: int = 0, queue_size: int = 5) -> None:
        if tolerance_ns < 0 or queue_size < 1:
            raise ValueError(f"tolerance must be >= 0 and queue_size >= 1, got {tolerance_ns} and {queue_size}")
        self.tolerance_ns = int(tolerance_ns)
        self.queue_size = int(queue_size)
        self._waiting: tuple[deque, deque] = (deque(), deque())  # (stamp_ns, item), oldest first, per side
        self._newest: list[int | None] = [None, None]  # the newest stamp offered per side since its last jump

    def add(self, side: int, stamp_ns: int, item: Item) -> Pairing[Item]:
        """Offer a frame of `side` (0 left, 1 right) stamped `stamp_ns`."""
        jumped_back_ns, stale = self._check_jump_back(side, stamp_ns)
        pairing = self._pair(side, stamp_ns, item)
        if jumped_back_ns:
            return Pairing(pairing.pair, pairing.unpaired + stale, jumped_back_ns, stale)
        return pairing

    def _check_jump_back(self, side: int, stamp_ns: int) -> tuple[int, int]:
        """(how far `stamp_ns` jumped back, frames from before the jump given up); (0, 0) without a jump."""
        newest = self._newest[side]
        if newest is None or stamp_ns >= newest - JUMP_BACK_NS:
            self._newest[side] = stamp_ns if newest is None else max(newest, stamp_ns)
            return 0, 0
        self._newest[side] = stamp_ns
        # Both sides: the other side's frames from before the jump would otherwise wait for partners that come only
        # with the next pass. Frames near the new stamps (the other side may have jumped first) stay.
        stale = sum(self._give_up(queue, lambda stamp: stamp > stamp_ns + JUMP_BACK_NS)
                    for queue in self._waiting)
        return newest - stamp_ns, stale

    def _pair(self, side: int, stamp_ns: int, item: Item) -> Pairing[Item]:
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
        unpaired = (self._give_up(other, lambda stamp: stamp < partner_stamp)
                    + self._give_up(own, lambda stamp: stamp < stamp_ns))
        pair = (item, partner) if side == 0 else (partner, item)
        return Pairing(pair, unpaired)

    @staticmethod
    def _give_up(queue: deque, stale: Callable[[int], bool]) -> int:
        """Remove the frames whose stamp is `stale`; returns how many."""
        kept = [entry for entry in queue if not stale(entry[0])]
        given_up = len(queue) - len(kept)
        if given_up:
            queue.clear()
            queue.extend(kept)
        return given_up

    def waiting(self) -> int:
        """Frames waiting for their partner, both sides."""
        return len(self._waiting[0]) + len(self._waiting[1])

    def clear(self) -> int:
        """Give up on every waiting frame and forget the newest stamps (a new stream starts afresh); returns how many
        frames there were."""
        n = self.waiting()
        for queue in self._waiting:
            queue.clear()
        self._newest = [None, None]
        return n
