"""The prefork worker pool: one master, N children.

`run(settings)` runs the master in the calling process until it is told to
stop (a signal, or `until()` returning True) and returns the exit status;
`skiplock worker` is a thin shell over it. It must be called from the main
thread (signal handlers), and handlers registered before the call are seen by
the children, which are forked from the caller.
"""

from __future__ import annotations

# This folder is installed as `skiplock.pool` (skiplock/pool links here). Imported
# by its bare name (the repository's root on sys.path), it would load a second copy
# of every module, with its own engine, registry and settings: refuse at once.
if __name__ != "skiplock.pool":
    raise ImportError(f"import skiplock.pool, not {__name__}: the repository's "
                      "top-level folders are parts of the one package `skiplock`")

from collections.abc import Callable, Iterable

from skiplock.pool.observer import ChildInfo, NullObserver, PoolObserver, PoolSnapshot
from skiplock.queue_core.config import Settings

__all__ = ["ChildInfo", "NullObserver", "PoolObserver", "PoolSnapshot", "run"]


def run(
    settings: Settings,
    *,
    observers: Iterable[PoolObserver] = (),
    until: Callable[[], bool] | None = None,
) -> int:
    """Run the pool until it stops; 0 after a stop on request, 3 if a child could not boot."""
    from skiplock.pool.master import Master  # the master pulls in the database layer; keep `pool` light

    return Master(settings, observers, until).run()
