"""A child dies with its master.

docs/lessons.md: children must die with their master (celery #102 had orphans for
years). Linux's PR_SET_PDEATHSIG delivers SIGKILL to the child the moment the
master's thread ends; the check of `os.getppid()` in the child's loop covers
the race before `prctl` ran and systems without it. A SIGKILLed child's
transaction rolls back and its job is rescued by stuck recovery, since nobody
sends its heartbeats any more.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Ask the kernel to SIGKILL us when the parent goes; False if it is already gone."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the getppid() check remains
        pass
    return parent_alive(parent_pid)


def parent_alive(parent_pid: int) -> bool:
    return os.getppid() == parent_pid
