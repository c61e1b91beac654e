"""A child is forked safely, and dies with its master.

`fork_blocking` forks with the pool's signals blocked: a TERM sent to a
brand-new process waits for that process's own handler instead of running the
master's (inherited across the fork) in it. The master's children and the
process that loads the handler modules (pool/served.py) are forked this way.

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
from collections.abc import Iterable

PR_SET_PDEATHSIG = 1


def fork_blocking(signals: Iterable[int], fds: Iterable[int] = ()) -> tuple[int, set[int]]:
    """`os.fork()` with `signals` blocked: (the pid, the mask to restore). Both processes
    restore the mask themselves (the new one once its own handlers are set). If the
    fork fails, the mask is restored, `fds` (the pipes made for the new process) are
    closed, and the error is raised."""
    saved_mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        return os.fork(), saved_mask
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        for fd in fds:
            os.close(fd)
        raise


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
