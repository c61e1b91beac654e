"""The served set (pool/served.py): the one rule, and the probe that runs it where the
handler modules are imported. In this process, no pool: the probe is a real fork."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from skiplock.handlers import builtin_types, registry
from skiplock.handlers.registry import JobResult, Registration
from skiplock.pool.served import Probe, served_types
from skiplock.queue_core.config import load_settings
from skiplock.queue_core.errors import ConfigurationError
from skiplock.queue_core.payloads import BUILTIN_TYPES


def settings(**values: Any) -> Any:
    return load_settings(**values)


def _ok(payload: dict[str, Any], job_id: str) -> JobResult:
    return JobResult(True)


@pytest.fixture
def own_types(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two application types registered for the test (and forgotten after it)."""
    for name in ("APP_A", "APP_B"):
        monkeypatch.setitem(registry._registry, name, Registration(name, _ok))
    return ["APP_A", "APP_B"]


def test_a_pool_serves_its_registered_types_narrowed_by_types_and_exclude_types(own_types):
    everything = served_types(settings())
    assert set(own_types) | set(BUILTIN_TYPES) <= everything
    assert everything == frozenset(registry.registered_types())
    assert served_types(settings(types=["APP_A"])) == {"APP_A"}
    assert served_types(settings(exclude_types=["APP_A", "NOT_REGISTERED"])) == \
        everything - {"APP_A"}
    assert served_types(settings(types=["APP_A", "APP_B"], exclude_types=["APP_B"])) == \
        {"APP_A"}


def test_a_types_entry_without_a_handler_and_an_empty_set_are_refused(own_types):
    with pytest.raises(ConfigurationError, match=r"--types names NOPE, OTHER, which no "
                                                 r"registered handler serves \(registered: "):
        served_types(settings(types=["APP_A", "NOPE", "OTHER"]))
    with pytest.raises(ConfigurationError, match="this pool would serve no job type"):
        served_types(settings(types=["APP_A"], exclude_types=["APP_A"]))


def test_without_their_domain_the_builtin_handlers_are_not_served_unless_replaced(
    own_types, monkeypatch
):
    assert set(BUILTIN_TYPES) <= builtin_types()
    served = served_types(settings(), builtin_available=False)
    assert served == frozenset(registry.registered_types()) - builtin_types()
    assert set(own_types) <= served and not set(BUILTIN_TYPES) & served
    # An application's own handler for a built-in type is no longer the built-in one.
    monkeypatch.setitem(registry._registry, "GENERATE_REVIEW",
                        Registration("GENERATE_REVIEW", _ok))
    assert "GENERATE_REVIEW" not in builtin_types()
    assert "GENERATE_REVIEW" in served_types(settings(), builtin_available=False)
    with pytest.raises(ConfigurationError, match="INTERPRET_EVENT, whose built-in handler"):
        served_types(settings(types=["INTERPRET_EVENT"]), builtin_available=False)


def test_the_probe_imports_the_modules_in_a_process_of_its_own():
    answer = Probe(settings(handlers=["tests.pool.routing_handlers"])).wait()
    assert answer.served is not None and "ROUTE_B" in answer.served
    assert not answer.boot_failure
    # The caller imported nothing: the master never runs an application's import.
    assert "tests.pool.routing_handlers" not in sys.modules
    assert "ROUTE_B" not in registry.registered_types()

    broken = Probe(settings(handlers=["tests.pool.broken_handlers"])).wait()
    assert broken.served is None and broken.boot_failure
    assert broken.error is not None and "this handler module is broken on purpose" in broken.error
    refused = Probe(settings(handlers=["tests.pool.routing_handlers"],
                             types=["ROUTE_B", "NOPE"])).wait()
    assert refused.served is None and not refused.boot_failure
    with pytest.raises(ConfigurationError, match="--types names NOPE"):
        refused.result()
