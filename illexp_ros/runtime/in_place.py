"""OpenCV writes into C-contiguous arrays only: run an in-place OpenCV operation on any writable numpy frame.

The runtime's post-processing (correction strength, exposure compensation, level smoothing) changes frames in
place to avoid a copy per frame. Frames of the runtime are contiguous, but callers of the public functions may
pass a strided view (a crop, every other column) or a read-only one (np.frombuffer on a message's bytes), on
which OpenCV raises an opaque "Overload resolution failed"."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def opencv_in_place(operation: Callable[[np.ndarray | None], np.ndarray], frame: np.ndarray,
                    name: str = "the frame") -> np.ndarray:
    """`frame` with `operation(dst)`'s result written into it, and returned. `operation` runs an OpenCV call
    with `dst=dst`; for a strided `frame` it gets None (OpenCV allocates) and the result is copied over.
    ValueError, naming `name`, if `frame` is read-only."""
    if not frame.flags.writeable:
        raise ValueError(f"{name} is changed in place, but this array is read-only: pass a writable copy")
    if frame.flags.c_contiguous:
        return operation(frame)
    np.copyto(frame, operation(None))
    return frame
