"""Per-type policies in the database: what a boot and an operator write, and what the insert
trigger makes of rows that leave them unset, whoever wrote them (here: plain SQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from skiplock import enqueue, enqueue_many
from skiplock.handlers import JobResult, register_handler, unregister_handler
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import rates, type_policies
from tests.queue_core.helpers import row, sql


def _ok(payload: Any, job_id: str) -> JobResult:
    return JobResult(True)


def psql(job_type: str, payload: str, **columns: Any) -> str:
    """A row as psql (or Prisma, which sends maxAttempts 3) writes it; returns its id."""
    names = "".join(f', "{c}"' for c in columns)
    values = "".join(f", :{c}" for c in columns)
    return str(sql(f'INSERT INTO "WorkerJob" (type, payload{names}) '
                   f"VALUES (:t, CAST(:p AS jsonb){values}) RETURNING id",
                   t=job_type, p=payload, **columns)[0][0])


@pytest.fixture
def booted() -> Iterator[None]:
    """A pool's boot of P_USER (2 per user, 5 attempts, backoff [1, 5]) and P_TYPE (1 at a
    time for the type), from registrations this process then forgets."""
    register_handler("P_USER", _ok, concurrency=2, concurrency_key="user", max_attempts=5,
                     backoff=[1, 5])
    register_handler("P_TYPE", _ok, concurrency=1)
    rows = type_policies.boot_rows(["P_USER", "P_TYPE"])
    unregister_handler("P_USER")
    unregister_handler("P_TYPE")
    type_policies.write_boot(["P_USER", "P_TYPE"], rows, "host-a")
    yield


def test_a_boot_writes_the_storable_options_and_a_row_from_sql_gets_them(booted: None) -> None:
    shown = {p.type: (p.values, p.source) for p in type_policies.type_policies()}
    assert shown == {
        "P_TYPE": ({"concurrencyLimit": 1}, "boot"),
        "P_USER": ({"concurrencyLimit": 2, "concurrencyKeyField": "user", "maxAttempts": 5,
                    "backoff": [1, 5]}, "boot")}
    a, b, c = (psql("P_USER", '{"user": 42}') for _ in range(3))
    assert [(row(i).concurrencyKey, row(i).concurrencyLimit, row(i).maxAttempts)
            for i in (a, c)] == [("P_USER:42", 2, 5)] * 2
    assert [row(i).heldBack for i in (a, b, c)] == [None, None, True]  # the slots let two in
    explicit = psql("P_USER", '{"user": 42}', concurrencyKey="mine", concurrencyLimit=7,
                    maxAttempts=9)
    unkeyed = psql("P_USER", '{"other": 1}')
    whole = psql("P_TYPE", "{}")
    assert (row(explicit).concurrencyKey, row(explicit).concurrencyLimit,
            row(explicit).maxAttempts) == ("mine", 7, 9)
    assert (row(unkeyed).concurrencyKey, row(unkeyed).maxAttempts) == (None, 5)
    assert (row(whole).concurrencyKey, row(whole).concurrencyLimit) == ("P_TYPE", 1)
    # Python's enqueue in a process that did not register the type: the same result,
    # and an explicit 3 is a 3 (from psql, 3 is the column's default).
    [py, three] = enqueue_many([{"type": "P_USER", "payload": {"user": 42}},
                                {"type": "P_USER", "payload": {"user": 42}, "max_attempts": 3}])
    assert (row(py).concurrencyKey, row(py).maxAttempts, row(py).heldBack) == (
        "P_USER:42", 5, True)
    assert (row(three).maxAttempts, row(psql("P_USER", "{}", maxAttempts=3)).maxAttempts) == (
        3, 5)
    assert row(enqueue("P_USER", {}, max_attempts=3)).maxAttempts == 3


def test_one_statement_of_mixed_types_and_a_policy_written_between_two_statements() -> None:
    mixed = enqueue_many([{"type": t, "payload": {"user": "u"}}
                          for t in ("P_NONE", "P_LATER", "P_NONE", "P_LATER")])
    assert [row(i).concurrencyKey for i in mixed] == [None] * 4
    type_policies.set_type_policy("P_LATER", {"concurrencyLimit": 3,
                                              "concurrencyKeyField": "user"}, "ops")
    mixed = enqueue_many([{"type": t, "payload": {"user": "u"}}
                          for t in ("P_NONE", "P_LATER", "P_NONE", "P_LATER")])
    assert [row(i).concurrencyKey for i in mixed] == [None, "P_LATER:u"] * 2


def test_an_operators_values_survive_the_next_boot_until_reset(booted: None) -> None:
    type_policies.set_type_policy("P_USER", {"concurrencyLimit": 1, "rate": "10/m"}, "ops")
    [mine] = type_policies.type_policies("P_USER")
    assert (mine.source, mine.updated_by, mine.values["concurrencyLimit"],
            mine.values["concurrencyKeyField"], mine.values["rate"]) == (
        "operator", "ops", 1, "user", "10/60s")
    register_handler("P_USER", _ok, concurrency=2, concurrency_key="user")
    try:
        type_policies.write_boot(["P_USER"], type_policies.boot_rows(["P_USER"]), "host-b")
    finally:
        unregister_handler("P_USER")
    assert type_policies.type_policies("P_USER") == [mine]
    job = psql("P_USER", '{"user": 7}')
    assert (row(job).concurrencyLimit, row(job).rate, row(job).rateKey) == (1, "10/60s",
                                                                             "P_USER")
    assert type_policies.reset_type_policy("P_USER") == "operator"
    assert type_policies.type_policies("P_USER") == []
    # A boot of a type that has no storable option any more forgets its boot row.
    type_policies.write_boot(["P_TYPE"], [], "host-c")
    assert type_policies.type_policies("P_TYPE") == []


def test_a_unique_window_from_the_policy_keeps_a_second_job_of_the_key_out() -> None:
    type_policies.set_type_policy("P_ONCE", {"uniqueFor": "active"}, "ops")
    first = enqueue("P_ONCE", {}, idempotency_key="k1")
    assert (row(first).uniqueKey, row(first).idempotencyKey) == ("k1", None)
    assert enqueue("P_ONCE", {}, idempotency_key="k1") == first  # found by its scoped key
    sql("""UPDATE "WorkerJob" SET status = 'COMPLETED' WHERE id = :id""", id=first)
    again = psql("P_ONCE", "{}", idempotencyKey="k1")
    assert again != first and row(first).uniqueKey is None


@pytest.mark.parametrize("values, error", [
    ({"concurrencyLimit": 0}, "between 1 and 10000"),
    ({"concurrencyKeyField": "user"}, "needs a concurrency limit"),
    ({"rate": "ten a minute"}, "rate must be N/s, N/m, N/h"),
    ({"rateKeyField": "user"}, "needs a rate"),
    ({"backoff": "fast"}, "seconds or a list"),
    ({"uniqueFor": "forever"}, "unique_for"),
    ({"maxAttempts": 0}, "between 1 and 1000"),
])
def test_bad_values_are_refused_and_change_nothing(values: dict[str, Any], error: str) -> None:
    with pytest.raises(InvalidJob, match=error):
        type_policies.set_type_policy("P_BAD", values, "ops")
    assert type_policies.type_policies("P_BAD") == []


def test_an_operators_values_reach_a_process_that_registered_the_type() -> None:
    from skiplock.queue_core.features import policy

    register_handler("P_REG", _ok, concurrency=1, concurrency_key="user", max_attempts=4,
                     backoff=2)
    try:
        [registered] = enqueue_many([{"type": "P_REG", "payload": {"user": "a"}}])
        type_policies.set_type_policy("P_REG", {"concurrencyLimit": 3, "maxAttempts": 6,
                                                "concurrencyKeyField": "user",
                                                "backoff": [1, 5]}, "ops")
        overridden = enqueue("P_REG", {"user": "a"})
        explicit = enqueue("P_REG", {"user": "a"}, concurrency_key="own", max_attempts=2)
        assert [(row(i).concurrencyKey, row(i).concurrencyLimit, row(i).maxAttempts)
                for i in (registered, overridden, explicit)] == [
            ("P_REG:a", 1, 4), ("P_REG:a", 3, 6), ("own", 3, 2)]
        # A worker booting now takes the operator's backoff over the registered one.
        assert type_policies.apply_operator_backoff() == ["P_REG"]
        assert policy.policy("P_REG").backoff == [1, 5]
    finally:
        unregister_handler("P_REG")


def test_rates_in_canonical_form_and_what_a_registration_can_store() -> None:
    from types import SimpleNamespace

    assert [rates.canonical(r) for r in ("10/m", "5/s", "100/h", "10/30s",
                                                      "10/60s", "2/5m")] == [
        "10/60s", "5/1s", "100/3600s", "10/30s", "10/60s", "2/300s"]
    keyed = SimpleNamespace(rate="10/m", rate_key="userId")
    by_function = SimpleNamespace(rate="10/m", rate_key=lambda p: p["userId"])
    unreadable = SimpleNamespace(rate="ten a minute", rate_key=None)
    assert type_policies.registered_values("P_RATE", keyed) == {"rate": "10/60s",
                                                                "rateKeyField": "userId"}
    assert type_policies.registered_values("P_RATE", by_function) == {}
    assert type_policies.registered_values("P_RATE", unreadable) == {}
    register_handler("P_FN", _ok, concurrency=1, concurrency_key=lambda p: p.get("u"),
                     backoff=lambda attempts: 1.0)
    try:
        assert type_policies.boot_rows(["P_FN"]) == []  # a function cannot be stored
    finally:
        unregister_handler("P_FN")
