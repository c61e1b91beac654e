"""Which job types a pool serves, decided in one place.

A pool claims only the types it serves (docs/operations.md, "Routing: which
pool runs which types"): jobs of any other type stay PENDING, untouched, for
a pool that serves them. `served_types` is the one rule; the master computes
the set once at start (and again on HUP), hands it to every child it forks,
which filters each of its claims by it, and records it in the process table,
where the other masters and `skiplock stats` read it.

The handler modules (`--handlers`) are imported by the children, after the
fork, so that a HUP loads new code into new children and the master never
runs an application's import-time code. The master learns what they register
from a `Probe`: a short-lived process forked like a child, which imports the
modules, runs `served_types` on the registry it ends up with, writes the
answer into a pipe and exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from skiplock import handlers
from skiplock.handlers import registry
from skiplock.pool import lifeline, protocol
from skiplock.pool.postmortem import describe_status
from skiplock.pool.proctitle import set_title
from skiplock.queue_core.config import Settings
from skiplock.queue_core.errors import ConfigurationError, InvalidJob
from skiplock.queue_core.features import type_policies

# How long importing the handler modules may take before the master gives up.
PROBE_TIMEOUT_S = 60.0


def served_types(settings: Settings, *, builtin_available: bool = True) -> frozenset[str]:
    """The job types a pool with `settings` serves, given the handlers registered in
    this process now: every registered type, or the `types` named (each must have a
    handler), less `exclude_types`. With `builtin_available` False the built-in
    handlers that are still the built-in ones (`skiplock.handlers.builtin_types`)
    are left out: they need their domain tables. Raises ConfigurationError for a
    `types` entry no handler here serves, and for a pool that would serve nothing."""
    registered = set(registry.registered_types())
    unavailable = set() if builtin_available else set(handlers.builtin_types())
    if settings.types:
        unknown = [t for t in settings.types if t not in registered]
        if unknown:
            raise ConfigurationError(
                f"SKIPLOCK_TYPES / --types names {_names(unknown)}, which no registered "
                f"handler serves (registered: {_names(sorted(registered)) or 'none'}; "
                "--handlers MODULE adds more)")
        missing = [t for t in settings.types if t in unavailable]
        if missing:
            raise ConfigurationError(
                f"SKIPLOCK_TYPES / --types names {_names(missing)}, whose built-in handler "
                "needs the domain tables, which this database does not have")
        served = set(settings.types)
    else:
        served = registered - unavailable
    served -= set(settings.exclude_types)
    if not served:
        # The usual way here: a fresh database and no --handlers, so only the built-in
        # handlers, whose domain only the demo installs.
        demo = ("; the built-in handlers serve their types only where their demo domain is "
                "installed (`skiplock migrate --demo`)") if unavailable & registered else ""
        raise ConfigurationError(
            "this pool would serve no job type (registered: "
            f"{_names(sorted(registered)) or 'none'}; SKIPLOCK_TYPES: "
            f"{_names(settings.types) or 'all'}; SKIPLOCK_EXCLUDE_TYPES: "
            f"{_names(settings.exclude_types) or 'none'}){demo}; name your handler modules "
            "with --handlers")
    return frozenset(served)


def _names(types: list[str]) -> str:
    return ", ".join(types)


@dataclass(frozen=True)
class Answer:
    """What a probe found: the served set, or why there is none."""

    served: frozenset[str] | None
    error: str | None = None
    boot_failure: bool = False  # a handler module did not import (else a bad setting)
    # The served types' storable `@handler(...)` options, as "WorkerTypePolicy" rows
    # (queue_core/features/type_policies.py): the master writes them.
    policies: tuple[dict[str, Any], ...] = ()

    def result(self) -> frozenset[str]:
        if self.served is None:
            raise ConfigurationError(self.error or "the handler modules could not be loaded")
        return self.served


class Probe:
    """A process forked to load the handler modules and compute `served_types`.

    `poll()` returns None until it answered (the master's loop waits on `fileno()`
    with its other pipes); `wait(timeout)` blocks for the answer, for the start."""

    def __init__(self, settings: Settings, *, builtin_available: bool = True,
                 close_fds: Callable[[], None] = lambda: None) -> None:
        self.started = time.monotonic()
        self.buffer = b""
        self.answer: Answer | None = None
        master = os.getpid()
        read_fd, write_fd = os.pipe()
        # As for a child: none of the master's signal handlers may run in the probe.
        pid, saved_mask = lifeline.fork_blocking(protocol.POOL_SIGNALS, (read_fd, write_fd))
        if pid == 0:  # the probe: never returns into the caller's code
            code = 1
            try:
                os.close(read_fd)
                close_fds()
                set_title("loading the handler modules")
                signal.set_wakeup_fd(-1)
                for sig in protocol.POOL_SIGNALS:
                    signal.signal(sig, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes through the master
                signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
                if lifeline.die_with_parent(master):
                    _answer(write_fd, settings, builtin_available)
                    code = 0
            finally:
                os._exit(code)
        signal.pthread_sigmask(signal.SIG_SETMASK, saved_mask)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.pid, self.fd = pid, read_fd

    def fileno(self) -> int:
        return self.fd

    def poll(self) -> Answer | None:
        """The answer once the probe wrote it and exited; None while it works."""
        if self.answer is not None:
            return self.answer
        while True:
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return None
            if not chunk:
                break
            self.buffer += chunk
        self._finish()
        return self.answer

    def wait(self, timeout_s: float = PROBE_TIMEOUT_S) -> Answer:
        deadline = self.started + timeout_s
        while (answer := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                self.cancel()
                return Answer(None, f"importing the handler modules took longer than "
                                    f"{timeout_s:g} s", boot_failure=True)
            select.select([self.fd], [], [], left)
        return answer

    def cancel(self) -> None:
        if self.answer is None:
            with contextlib.suppress(ProcessLookupError):  # it just ended by itself
                os.kill(self.pid, signal.SIGKILL)
            self._finish(cancelled=True)

    def _finish(self, cancelled: bool = False) -> None:
        os.close(self.fd)
        _, status = os.waitpid(self.pid, 0)
        if cancelled:
            self.answer = Answer(None, "cancelled")
            return
        try:
            data = json.loads(self.buffer)
            served = data.get("served")
            self.answer = Answer(frozenset(served) if served is not None else None,
                                 data.get("error"), bool(data.get("boot_failure")),
                                 tuple(data.get("policies") or ()))
        except ValueError:
            self.answer = Answer(None, "the process that loads the handler modules "
                                       f"{describe_status(status)}", boot_failure=True)


def _answer(fd: int, settings: Settings, builtin_available: bool) -> None:
    data: dict[str, object]
    try:
        registry.load_handler_modules(settings.handlers)
    except ConfigurationError as exc:
        data = {"error": str(exc), "boot_failure": True}
    else:
        try:
            served = served_types(settings, builtin_available=builtin_available)
            data = {"served": sorted(served), "policies": type_policies.boot_rows(served)}
        except (ConfigurationError, InvalidJob) as exc:
            data = {"error": str(exc)}
    payload = json.dumps(data).encode()
    while payload:
        payload = payload[os.write(fd, payload):]
    os.close(fd)
