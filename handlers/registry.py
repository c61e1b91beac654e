"""The job-type registry: which function runs which job type.

A handler is `fn(payload, job_id: str) -> JobResult`, where the payload is the
JSON object, or, for a type registered with `payload=Model` (a dataclass or a
pydantic model: queue_core/payload_models.py), the model instance. Raising is a
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

from skiplock.queue_core import payload_models, payloads
from skiplock.queue_core.errors import ConfigurationError, InvalidJob
from skiplock.queue_core.features import fairness, limits, policy, rates, sequences


@dataclass(frozen=True)
class JobResult:
    success: bool
    data: Any = None
    error: str | None = None
    should_retry: bool = True
    snooze_s: float | None = None  # run again this much later, attempt given back

    @classmethod
    def snooze(cls, seconds: float) -> JobResult:
        """Run the job again in `seconds` without spending an attempt (queue_core/features/snooze.py)."""
        return cls(False, error=f"snoozed for {seconds}s",
                   snooze_s=policy.check_delay(seconds, "a snooze"))


# The payload is a dict, or the model instance of a typed registration.
Handler = Callable[[Any, str], JobResult]
F = TypeVar("F", bound=Handler)
# A payload model: a dataclass or a pydantic model class (queue_core/payload_models.py).
ModelClass = type[Any]


@dataclass(frozen=True)
class Registration:
    type: str
    fn: Handler
    timeout_s: float | None = None
    concurrency: int | None = None  # at most this many at once per key (queue_core/features/limits.py)
    concurrency_key: limits.KeyFrom = None
    max_snoozes: int = policy.DEFAULT_MAX_SNOOZES
    payload: ModelClass | None = None  # the model the handler is given its payload as
    fair_key: limits.KeyFrom = None  # queue_core/features/fairness.py
    rate: str | None = None  # at most this many starts per key and window (queue_core/features/rates.py)
    rate_key: limits.KeyFrom = None

    def payload_for(self, data: Any) -> Any:
        """A stored payload as this handler takes it: checked against its type's model,
        the model instance for a typed registration, else the JSON object
        (InvalidPayload names the field)."""
        checked = payloads.parse_payload(self.type, data)
        return checked if self.payload is not None else data


_registry: dict[str, Registration] = {}


def register_handler(job_type: str, fn: Handler, *, timeout_s: float | None = None,
                     concurrency: int | None = None,
                     concurrency_key: limits.KeyFrom = None, max_attempts: int | None = None,
                     backoff: policy.Backoff = None, max_snoozes: int | None = None,
                     payload: ModelClass | None = None,
                     sequence_key: sequences.KeyFrom | None = None,
                     on_sequence_failure: str | None = None,
                     fair_key: limits.KeyFrom = None, rate: str | None = None,
                     rate_key: limits.KeyFrom = None) -> None:
    """Run `fn` for jobs of `job_type`; a later registration replaces an earlier one.

    `payload=Model` (a dataclass or a pydantic model): the payload is checked
    against it at enqueue, in every process that registered it, and again before
    the job runs; `fn` receives the model instance.
    `concurrency=N`: at most N jobs of the type run at once per key, on every
    host; the key is `TYPE:payload[concurrency_key]` (a payload field, or a
    function of the payload's JSON object), or the type alone without
    `concurrency_key`.
    `rate="10/m"`: at most 10 jobs of the type start per minute per key, on every
    host; the key is `TYPE:payload[rate_key]` (a field or a function, as for
    `concurrency_key`), or the type alone (queue_core/features/rates.py).
    `max_attempts`, `backoff`, `max_snoozes`: the type's retry policy
    (queue_core/features/policy.py).
    `sequence_key`: the type's jobs of one key run one at a time in enqueue order;
    the key is `TYPE:payload[sequence_key]` (a payload field) or what a function of
    the payload returns; `on_sequence_failure`: "hold" (default) or "pass"
    (queue_core/features/sequences.py).
    `fair_key`: the type's jobs take turns with the other keys' by weight, keyed
    `TYPE:payload[fair_key]` (a payload field, or a function of the payload)
    (queue_core/features/fairness.py)."""
    if not isinstance(job_type, str) or not job_type.strip():
        raise InvalidJob("job type must be a non-empty string")
    if not callable(fn):
        raise InvalidJob(f"handler for {job_type} is not callable")
    if timeout_s is not None and timeout_s <= 0:
        raise InvalidJob(f"timeout of {job_type} must be positive")
    try:
        model = None if payload is None else payload_models.model_of(payload)
    except TypeError as exc:
        raise InvalidJob(f"payload of {job_type}: {exc}") from None
    if rate is not None:
        rates.canonical(rate)  # checked before anything is registered
    if fair_key is not None and concurrency is not None:
        raise InvalidJob(f"{job_type}: fair_key and concurrency cannot be combined")
    if fair_key is not None and rate is not None:
        raise InvalidJob(f"{job_type}: fair_key and rate cannot be combined")
    sequences.check_type_sequence(job_type, sequence_key, on_sequence_failure)
    limits.set_type_limit(job_type, concurrency, concurrency_key)
    sequences.set_type_sequence(job_type, sequence_key, on_sequence_failure)
    fairness.set_type_key(job_type, fair_key)
    rates.set_type_rate(job_type, rate, rate_key)
    policy.set_policy(job_type, max_attempts=max_attempts, backoff=backoff,
                      max_snoozes=max_snoozes)
    payloads.set_payload_model(job_type, model)
    _registry[job_type] = Registration(job_type, fn, timeout_s, concurrency, concurrency_key,
                                       policy.policy(job_type).max_snoozes, payload,
                                       fair_key=fair_key,
                                       rate=None if rate is None else rates.canonical(rate),
                                       rate_key=rate_key)


def handler(job_type: str, *, timeout_s: float | None = None, concurrency: int | None = None,
            concurrency_key: limits.KeyFrom = None, max_attempts: int | None = None,
            backoff: policy.Backoff = None, max_snoozes: int | None = None,
            payload: ModelClass | None = None, sequence_key: sequences.KeyFrom | None = None,
            on_sequence_failure: str | None = None,
            fair_key: limits.KeyFrom = None, rate: str | None = None,
            rate_key: limits.KeyFrom = None) -> Callable[[F], F]:
    """Decorator form of `register_handler`."""

    def decorate(fn: F) -> F:
        register_handler(job_type, fn, timeout_s=timeout_s, concurrency=concurrency,
                         concurrency_key=concurrency_key, max_attempts=max_attempts,
                         backoff=backoff, max_snoozes=max_snoozes, payload=payload,
                         sequence_key=sequence_key, on_sequence_failure=on_sequence_failure,
                         fair_key=fair_key, rate=rate, rate_key=rate_key)
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
    payloads.set_payload_model(job_type, None)
    limits.set_type_limit(job_type, None)
    sequences.set_type_sequence(job_type, None)
    fairness.set_type_key(job_type, None)
    rates.set_type_rate(job_type, None)
    policy.set_policy(job_type)


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
