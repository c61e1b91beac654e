"""Flow-control features together on one job (docs/jobs.md, "Flow control at a glance"):
a sequence's next job still waits for its rate window and for a slot of its concurrency
key once its turn comes, and the combinations that cannot hold are refused."""

from __future__ import annotations

import pytest

from skiplock.queue_core import InvalidJob, claim, complete, enqueue
from skiplock.queue_core.features.why import explain


def test_a_sequences_next_job_waits_for_its_rate_window_then_for_a_slot() -> None:
    # One start an hour for the key: the first job takes the token, so the second,
    # once the first ends, has its turn but not its window.
    first = enqueue("C_SEQ", {"n": 1}, sequence="acct:1", rate="1/h", rate_key="api:1")
    second = enqueue("C_SEQ", {"n": 2}, sequence="acct:1", rate="1/h", rate_key="api:1")
    assert [w.split(" (")[0] for w in explain(second)] == ["waiting for its turn in sequence acct:1"]
    [job] = claim("w", limit=10, types=["C_SEQ"])
    assert job.id == first
    complete(job)
    assert claim("w", limit=10, types=["C_SEQ"]) == []
    # Its token is free an hour after the first start: it is let in, due then.
    [why] = explain(second)
    assert why.startswith("let in by its rate key api:1; it may start at 20"), why
    # A sequence behind a concurrency key whose one slot another job holds.
    holder = enqueue("C_SLOT", {}, concurrency_key="tenant:1", concurrency=1)
    a = enqueue("C_SLOT", {"n": 1}, sequence="acct:2", concurrency_key="tenant:1", concurrency=1)
    b = enqueue("C_SLOT", {"n": 2}, sequence="acct:2", concurrency_key="tenant:1", concurrency=1)
    assert explain(a) == ["waiting for a slot of key tenant:1 (1 of 1 taken)"]
    order = []
    while jobs := claim("w", limit=10, types=["C_SLOT"]):
        assert len(jobs) == 1  # one slot: never two at once
        order.append(jobs[0].id)
        complete(jobs[0])
    assert order == [holder, a, b]


@pytest.mark.parametrize("options, refused", [
    ({"fair_key": "f", "concurrency_key": "k", "concurrency": 1}, "fair key"),
    ({"fair_key": "f", "rate": "1/s", "rate_key": "r"}, "fair key"),
    ({"debounce": "1s", "debounce_key": "d", "sequence": "s"}, "debounce"),
    ({"debounce": "1s", "debounce_key": "d", "fair_key": "f"}, "debounce"),
    ({"debounce": "1s", "debounce_key": "d", "rate": "1/s", "rate_key": "r"}, "debounce"),
])
def test_the_combinations_that_cannot_hold_are_refused_in_one_sentence(
        options: dict[str, object], refused: str) -> None:
    with pytest.raises(InvalidJob, match=refused):
        enqueue("C_BAD", {}, **options)  # type: ignore[arg-type]
