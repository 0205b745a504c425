"""Ctrl-C and `kill` for the command-line tools (bag tool, demo, node benchmark, soak): both end the tool through
its cleanup (finally blocks that stop a node process or remove a partial output) and its "interrupted" line.
Signal handling only, nothing heavy: the bag tool imports this before it checks a bag."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


def raise_interrupt(signum: int, frame: object) -> None:
    """A signal handler: KeyboardInterrupt, as Ctrl-C's."""
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupted_by_signals() -> Iterator[None]:
    """Within the block SIGTERM, and SIGINT unless it came in ignored (a script's background job: a Ctrl-C meant
    for the script's foreground must not stop it), raise KeyboardInterrupt; afterwards the caller's handlers are
    as they were (a tool's main() called from Python, in tests)."""
    caught = [signal.SIGTERM] + ([signal.SIGINT] if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN else [])
    previous = {sig: signal.signal(sig, raise_interrupt) for sig in caught}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
