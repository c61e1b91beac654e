"""The job-type registry: which function runs which job type.

A handler is `fn(payload: dict, job_id: str) -> JobResult`. Raising is a
retryable failure whose message is kept in `"lastError"`; returning
`JobResult(success=False, should_retry=False)` sends the job straight to
`DEAD_LETTER`. Modules named with `--handlers` or `SKIPLOCK_HANDLERS` are
imported before the children fork, so every child sees what they register.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from skiplock.queue_core.errors import ConfigurationError, InvalidJob


@dataclass(frozen=True)
class JobResult:
    success: bool
    data: Any = None
    error: str | None = None
    should_retry: bool = True


Handler = Callable[[dict[str, Any], str], JobResult]
F = TypeVar("F", bound=Handler)


@dataclass(frozen=True)
class Registration:
    type: str
    fn: Handler
    timeout_s: float | None = None


_registry: dict[str, Registration] = {}


def register_handler(job_type: str, fn: Handler, *, timeout_s: float | None = None) -> None:
    """Run `fn` for jobs of `job_type`; a later registration replaces an earlier one."""
    if not isinstance(job_type, str) or not job_type.strip():
        raise InvalidJob("job type must be a non-empty string")
    if not callable(fn):
        raise InvalidJob(f"handler for {job_type} is not callable")
    if timeout_s is not None and timeout_s <= 0:
        raise InvalidJob(f"timeout of {job_type} must be positive")
    _registry[job_type] = Registration(job_type, fn, timeout_s)


def handler(job_type: str, *, timeout_s: float | None = None) -> Callable[[F], F]:
    """Decorator form of `register_handler`."""

    def decorate(fn: F) -> F:
        register_handler(job_type, fn, timeout_s=timeout_s)
        return fn

    return decorate


def get_registration(job_type: str) -> Registration | None:
    return _registry.get(job_type)


def get_handler(job_type: str) -> Handler | None:
    registration = _registry.get(job_type)
    return registration.fn if registration else None


def registered_types() -> list[str]:
    return sorted(_registry)


def unregister_handler(job_type: str) -> None:
    """Forget a registration (tests use it to keep the registry clean)."""
    _registry.pop(job_type, None)


def load_handler_modules(names: Iterable[str]) -> list[str]:
    """Import each module so that its handlers register; a module that fails is a config error.

    The current directory is searched first, as `python -m` and gunicorn do: an
    application run from its own folder names its modules (`myapp.jobs`) without
    installing itself into the virtualenv.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    loaded = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # any import-time failure of user code
            raise ConfigurationError(
                f"cannot import handler module {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
        loaded.append(name)
    return loaded
