"""Why a pending job is not claimable: one sentence per reason, in `skiplock job ID`, and the
held jobs counted by reason in `skiplock stats`."""

from __future__ import annotations

import json

from click.testing import CliRunner

from skiplock import enqueue
from skiplock.cli import main
from skiplock.ops.pauses import pause
from skiplock.queue_core import config
from skiplock.queue_core.features.why import count_held, explain
from tests.queue_core.helpers import sql

runner = CliRunner()


def test_each_reason_a_pending_job_waits_for_is_said_and_counted() -> None:
    holder = enqueue("W_LIMITED", {}, concurrency_key="acct:7", concurrency=1)
    slot = enqueue("W_LIMITED", {}, concurrency_key="acct:7", concurrency=1)
    parked = enqueue("W_NOBODY", {})
    sql("""UPDATE "WorkerJob" SET "heldBack" = true WHERE id = :id""", id=parked)
    child = enqueue("W_CHILD", {}, depends_on=[holder])
    later = enqueue("W_PAUSED", {}, delay=3600)
    pause("W_PAUSED")
    assert explain(holder) == []
    assert explain(slot) == ["waiting for a slot of key acct:7 (1 of 1 taken)"]
    assert explain(parked) == [
        "parked: no live pool serves its type W_NOBODY (it runs once one does)"]
    assert explain(child) == [
        "waiting for 1 parent job to end (skiplock job ID lists them)"]
    [not_due, paused] = explain(later)  # two reasons at once
    assert not_due.startswith("not due until 20") and not_due.endswith("Z")
    assert paused == "its type W_PAUSED is paused (skiplock resume W_PAUSED)"
    # A fair key keeps its window (weight 1 x 10) in the queue; the 11th waits its turn.
    fair = [enqueue("W_FAIR", {"i": i}, fair_key="tenant:9") for i in range(11)]
    assert explain(fair[0]) == []
    assert explain(fair[-1]) == [
        "waiting its turn behind the other jobs of fair key tenant:9: at most weight x window "
        "of a key's jobs are in the queue at once, and each one claimed lets the next one in"]
    # A rate of one start an hour: the key's second job waits for its window.
    rated = [enqueue("W_RATED", {"i": i}, rate="1/h", rate_key="api:3") for i in range(2)]
    assert explain(rated[1]) == [
        "waiting for a window of its rate key api:3 (1 starts every 3600 s); it is let in "
        "when a token of that key is free"]
    assert count_held() == {"slot": 1, "parked": 1, "parents": 1, "sequence": 0,
                            "fairTurn": 1, "rateWindow": 1, "debounced": 0, "rateNotDue": 0,
                            "notDue": 1, "paused": 1}

    shown = runner.invoke(main, ["job", slot])
    assert shown.exit_code == 0, shown.output
    assert ("waiting, not claimable now:\n  waiting for a slot of key acct:7 (1 of 1 taken)"
            in shown.output)
    as_json = json.loads(runner.invoke(main, ["job", child, "--json"]).output)
    assert as_json["waitingBecause"] == [
        "waiting for 1 parent job to end (skiplock job ID lists them)"]
    assert "waitingBecause" not in json.loads(runner.invoke(main, ["job", holder, "--json"]).output)
    config.clear_cache()
    stats = runner.invoke(main, ["stats"])
    assert ("pending but not claimable now: 1 waiting for a concurrency slot, 1 parked (no live "
            "pool serves the type), 1 waiting for parents, 1 waiting their fair key's turn, "
            "1 waiting for a rate window, 1 not due yet, 1 paused type"
            in stats.output), stats.output
    figures = json.loads(runner.invoke(main, ["stats", "--json"]).output)
    assert figures["heldByReason"]["slot"] == 1


def test_a_sequences_turn_and_a_debounce_are_said_too() -> None:
    enqueue("W_SEQ", {}, sequence="acct:7")
    second = enqueue("W_SEQ", {}, sequence="acct:7")
    debounced = enqueue("W_DEB", {}, debounce="30s", debounce_key="d1")
    enqueue("W_DEB", {}, debounce="30s", debounce_key="d1")
    assert explain(second) == ["waiting for its turn in sequence acct:7 (number 2)"]
    [said] = explain(debounced)
    assert said.startswith("not due until 20") and said.endswith(
        "debounced by key d1 (each enqueue of the key moves it to that enqueue plus its "
        "debounce; moved by 1 later enqueue)")
    assert {k: n for k, n in count_held().items() if n} == {"sequence": 1, "debounced": 1}
