"""Child processes that end with the process that started them (Linux: prctl PR_SET_PDEATHSIG).

A tool killed outright (SIGKILL, the OOM killer, a CI timeout that kills only its pid) runs no clean-up, so a
child it started (the ONNX export, the node of `illexp_demo` and `illexp_bench --node`) would run on, orphaned,
and keep its CPU, its DDS participant and, for a node, its topics. With the parent-death signal the kernel
sends the child SIGTERM when its parent ends, however it ends. Elsewhere than Linux nothing is set up."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel for `sig` when this process's parent ends; True if that is set up (Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    # The C library this process already runs on (find_library("c") needs ldconfig or a compiler, which slim
    # containers lack).
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def parent_already_gone(parent_pid: int) -> bool:
    """Set up the parent-death signal, then say whether `parent_pid` ended before it was set up (the signal then
    never comes: the caller must end now). False off Linux, where nothing is set up."""
    return set_parent_death_signal() and os.getppid() != parent_pid


def ending_with_this_process() -> Callable[[], None] | None:
    """A `preexec_fn` for subprocess.Popen (call Popen from the main thread: the signal comes when the thread
    that started the child ends): the child gets SIGTERM when this process ends, and ends at once if it already
    has. None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()

    def preexec() -> None:
        if parent_already_gone(parent):
            os._exit(128 + signal.SIGTERM)

    return preexec
