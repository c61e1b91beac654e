"""Process titles, so that `ps` shows what each process of the pool is doing.

setproctitle is a declared dependency, but a title is a nicety: without the
module the pool runs the same, untitled.
"""

from __future__ import annotations

from collections.abc import Callable

_setproctitle: Callable[[str], None] | None
try:
    from setproctitle import setproctitle as _setproctitle
except ImportError:  # pragma: no cover - setproctitle is installed with skiplock
    _setproctitle = None

PREFIX = "skiplock"


def set_title(text: str) -> None:
    if _setproctitle is not None:
        _setproctitle(f"{PREFIX}: {text}")


def master_title(workers: int, state: str) -> str:
    suffix = "" if state == "running" else f" · {state}"
    return f"master · {workers} worker{'s' if workers != 1 else ''}{suffix}"


def worker_title(slot: int, job_type: str | None = None, job_id: str | None = None) -> str:
    if job_type is None:
        return f"worker {slot} · idle"
    return f"worker {slot} · {job_type} job {job_id}"
