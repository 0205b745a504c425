"""Command-line value types shared by the training tools: a bad value is argparse's one-line error (exit 2)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= minimum (e.g. --batches 0 would average no batch: BatchNorm statistics
    of 0 / 1, silently)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"  # what argparse names in its messages
    return parse


def thread_count(text: str) -> int:
    """An argparse type for --threads: 0 (torch's default) .. MAX_THREADS, as the node's `threads` parameter."""
    from illexp_ros.runtime.backends.base import MAX_THREADS  # here: importing this module stays free of torch

    value = int_at_least(0)(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be an integer in 0..{MAX_THREADS}, got {value}")
    return value


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1) (NaN or inf would pass a plain float silently)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {value}")
    return value


def cannot_write(path: str | os.PathLike, exc: OSError) -> int:
    """Say on one line that `path` could not be written (the work is done, the file is missing); exit status 2."""
    print(f"error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
    return 2


def output_file(text: str) -> Path:
    """An argparse type: a file to write at the end of a long run, checked now so the work is not lost then: not
    a folder, and in a folder that is writable (or does not exist yet, and will be made)."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: give the file to write")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK)):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {parent} is not a writable folder")
    return path
