"""A job type's retry policy and snooze bound: `@handler(TYPE, max_attempts=, backoff=,
max_snoozes=)`.

- `max_attempts`: the default of `enqueue` for the type (an explicit
  `max_attempts=` still wins). It is written on the row at enqueue by a
  process that registered the handler, and the pools store it in the type's
  policy (queue_core/features/type_policies.py), which the insert trigger
  applies to rows from any other producer.
- `backoff`: the delay before the next try once `attempts` tries failed: a
  number of seconds (always the same), a list (the n-th failure waits the
  n-th delay; the last one repeats), or a function of `attempts`. Jitter of
  +/-10 % is added as for the default schedule (queue_core/backoff.py). It
  applies to failures the worker settles (the handler raised or returned a
  failure); a crash that the master settles uses the default schedule. An
  operator's backoff (`skiplock policy set TYPE --backoff 1,5,30`, stored in
  "WorkerTypePolicy") replaces the registered one in workers that start (or
  are reloaded with HUP) after it was set.
- `max_snoozes`: how often one job may ask to run again later
  (`JobResult.snooze(seconds)`) before it is dead-lettered (default 100).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from skiplock.queue_core.backoff import JITTER, backoff_s
from skiplock.queue_core.errors import InvalidJob

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_MAX_SNOOZES = 100
MAX_DELAY_S = 7 * 86400.0

Backoff = float | Sequence[float] | Callable[[int], float] | None


@dataclass(frozen=True)
class TypePolicy:
    max_attempts: int | None = None
    backoff: Backoff = None
    max_snoozes: int = DEFAULT_MAX_SNOOZES


_policies: dict[str, TypePolicy] = {}


def check_delay(seconds: object, what: str) -> float:
    if (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds) or not 0 <= seconds <= MAX_DELAY_S):
        raise InvalidJob(f"{what} must be a number of seconds between 0 and {MAX_DELAY_S:g}, "
                         f"not {seconds!r}")
    return float(seconds)


def set_policy(job_type: str, *, max_attempts: int | None = None, backoff: Backoff = None,
               max_snoozes: int | None = None) -> None:
    """Set (or, with no arguments, clear) the policy of `job_type`."""
    if max_attempts is None and backoff is None and max_snoozes is None:
        _policies.pop(job_type, None)
        return
    if max_attempts is not None and (isinstance(max_attempts, bool)
                                     or not isinstance(max_attempts, int)
                                     or not 1 <= max_attempts <= 1000):
        raise InvalidJob(f"max_attempts of {job_type} must be between 1 and 1000")
    if isinstance(backoff, (int, float)):
        check_delay(backoff, f"backoff of {job_type}")
    elif isinstance(backoff, Sequence):
        if not backoff or isinstance(backoff, str):
            raise InvalidJob(f"backoff of {job_type} must list at least one delay")
        for delay in backoff:
            check_delay(delay, f"each backoff delay of {job_type}")
    elif backoff is not None and not callable(backoff):
        raise InvalidJob(f"backoff of {job_type} must be seconds, a list, or a function")
    if max_snoozes is not None and (isinstance(max_snoozes, bool)
                                    or not isinstance(max_snoozes, int) or max_snoozes < 0):
        raise InvalidJob(f"max_snoozes of {job_type} must be a non-negative integer")
    _policies[job_type] = TypePolicy(
        max_attempts, backoff, DEFAULT_MAX_SNOOZES if max_snoozes is None else max_snoozes)


def override_backoff(job_type: str, backoff: float | Sequence[float]) -> None:
    """An operator's backoff for `job_type` (from "WorkerTypePolicy"), over the
    registered one; the rest of the type's policy stays."""
    current = _policies.get(job_type, TypePolicy())
    _policies[job_type] = TypePolicy(current.max_attempts, backoff, current.max_snoozes)


def policy(job_type: str | None) -> TypePolicy:
    return _policies.get(job_type or "", TypePolicy())


def registered_max_attempts(job_type: str) -> int | None:
    """The max_attempts registered in this process for `job_type`, if any."""
    registered = _policies.get(job_type)
    return None if registered is None else registered.max_attempts


def backoff_for(job_type: str | None, attempts: int,
                rand: Callable[[], float] = random.random) -> float:
    """Seconds before the next try of a `job_type` job whose `attempts` tries failed."""
    rule = policy(job_type).backoff
    if rule is None:
        return backoff_s(attempts, rand)
    if callable(rule):
        base = check_delay(rule(attempts), "the backoff function's delay")
    elif isinstance(rule, Sequence):
        base = float(rule[min(max(attempts, 1), len(rule)) - 1])
    else:
        base = float(rule)
    return base * (1.0 - JITTER + 2.0 * JITTER * rand())
