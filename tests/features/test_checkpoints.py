"""Checkpoints on a real database, in-process: what `skiplock.checkpoint` accepts, and
how every way a run ends short of a completion hands the next run its checkpoint
(the pool's side: tests/features/test_checkpoints_pool.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

import skiplock
from skiplock import claim, complete, enqueue, fail, testing
from skiplock.cli import main
from skiplock.queue_core import config, get_job, retry_dead
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import checkpoints
from skiplock.queue_core.features.checkpoints import MAX_CHECKPOINT_BYTES
from skiplock.queue_core.features.snooze import snooze
from skiplock.queue_core.jobs import JobRef
from skiplock.queue_core.lifecycle import (
    complete_and_claim,
    complete_many,
    interrupt,
    renew_leases,
)
from tests.features import checkpoint_handlers
from tests.queue_core.helpers import row, sql


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    checkpoints.reset()
    sql(checkpoint_handlers.TABLE)
    yield
    checkpoints.reset()


def stored(job_id: str) -> object:
    [(text,)] = sql('SELECT checkpoint::text FROM "WorkerJob" WHERE id = :id', id=job_id)
    return None if text is None else json.loads(text)


# -- what a checkpoint may be ------------------------------------------------------


@pytest.mark.parametrize("state", [
    0, 12.5, "page-7", True, [1, "two"], {"next": 90, "cursor": "évé 😀", "s": "a\\u0000b"},
    "x" * (MAX_CHECKPOINT_BYTES - 2),  # its quotes make it exactly the limit
])
def test_a_json_value_up_to_the_limit_is_a_checkpoint(state: object) -> None:
    checkpoints.begin("j", None)
    skiplock.checkpoint(state)
    assert skiplock.last_checkpoint() == state
    assert checkpoints.taken("j") == json.dumps(state, ensure_ascii=False,
                                                separators=(",", ":"))


def looped() -> dict[str, object]:
    loop: dict[str, object] = {}
    loop["self"] = loop
    return loop


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("state", "why"), [
    ("x" * MAX_CHECKPOINT_BYTES, f"at most {MAX_CHECKPOINT_BYTES} bytes of JSON; this one is "
                                 f"{MAX_CHECKPOINT_BYTES + 2}"),
    ({"cursor": "é" * 5000}, "this one is 10013"),
    (float("nan"), "must be JSON"),
    ({"when": object()}, "must be JSON: Object of type object is not JSON serializable"),
    (looped(), "must be JSON"),
    (10 ** 5000, "must be JSON"),
    (nested(65), "nest at most 64 levels"),
    (nested(5000), "must be JSON: it nests far too deeply"),
    ({"name": "a\x00b"}, "NUL character"),
    ({"name": "\udc80"}, "lone UTF-16 surrogate"),
    ({"\udc80": 1}, "lone UTF-16 surrogate"),
], ids=["too-large", "too-large-in-utf8", "nan", "object", "loop", "huge-int", "deep",
        "far-too-deep", "nul", "surrogate", "surrogate-key"])
def test_what_could_not_come_back_is_refused_at_the_call_with_one_clear_error(
    state: object, why: str,
) -> None:
    checkpoints.begin("j", {"next": 3})
    with pytest.raises(InvalidJob, match="checkpoint") as refused:
        skiplock.checkpoint(state)
    assert why in str(refused.value)
    assert "\n" not in str(refused.value)
    assert skiplock.last_checkpoint() == {"next": 3}  # the last good one stays
    assert checkpoints.taken("j") is None


def test_a_handler_gets_what_its_last_run_left_then_its_own_latest_as_a_copy() -> None:
    assert skiplock.last_checkpoint() is None  # outside a job
    checkpoints.begin("j", {"next": 5})
    assert skiplock.last_checkpoint() == {"next": 5}
    state = {"next": 6}
    skiplock.checkpoint(state)
    state["next"] = 99  # changed after the call: not what was checkpointed
    assert skiplock.last_checkpoint() == {"next": 6}
    assert checkpoints.taken("j") == '{"next":6}'
    assert checkpoints.taken("another job") is None
    checkpoints.begin("k", None)  # the next job starts clean
    assert skiplock.last_checkpoint() is None and checkpoints.taken("j") is None


# -- the row: written fenced, kept, handed to the next run, cleared ----------------


def test_a_failure_writes_the_runs_checkpoint_and_the_retry_is_handed_it() -> None:
    job_id = enqueue("T", {})
    [job] = claim("w")
    assert job.checkpoint is None  # a first run
    assert fail(job, "boom", checkpoint='{"next":40}') == "PENDING"
    assert stored(job_id) == {"next": 40}
    sql('UPDATE "WorkerJob" SET "availableAt" = now()')
    [again] = claim("w")
    assert again.checkpoint == {"next": 40}
    assert fail(again, "boom again") == "PENDING"  # none taken: the row's stays
    assert stored(job_id) == {"next": 40}
    assert fail(again, "late", checkpoint='{"next":1}') is None  # fenced: no longer held
    assert stored(job_id) == {"next": 40}


def test_an_interruption_and_a_snooze_write_it_and_none_keeps_the_rows() -> None:
    job_id = enqueue("T", {})
    [job] = claim("w")
    assert interrupt(job, "deploy", checkpoint='{"next":90}') == "released"
    r = row(job_id)
    assert (r.st, r.attempts, r.interruptions, r.checkpoint) == ("PENDING", 0, 1, {"next": 90})
    sql('UPDATE "WorkerJob" SET "availableAt" = now()')
    [job] = claim("w")
    assert job.checkpoint == {"next": 90} and job.attempts == 1
    assert snooze(job, 0, max_snoozes=5, checkpoint='{"next":95}') == "snoozed"
    assert stored(job_id) == {"next": 95}
    [job] = claim("w")
    assert interrupt(job, "deploy") == "released"
    assert stored(job_id) == {"next": 95}


def test_a_heartbeat_writes_checkpoints_fenced_and_null_keeps_the_last() -> None:
    a, b = enqueue("T", {}), enqueue("T", {})
    jobs = {j.id: j for j in claim("w", limit=2)}
    refs = [jobs[a].ref, jobs[b].ref]
    assert renew_leases(refs, checkpoints={a: '{"next":10}'}).renewed == {a, b}
    assert (stored(a), stored(b)) == ({"next": 10}, None)
    renew_leases(refs)  # nothing reported since: kept
    renew_leases(refs, checkpoints={b: '"cursor \\" \\\\ é"'})  # quoted in the array literal
    assert (stored(a), stored(b)) == ({"next": 10}, 'cursor " \\ é')
    stale = JobRef(a, "w", jobs[a].attempts + 1)  # another attempt's holder
    assert renew_leases([stale], checkpoints={a: '{"next":0}'}).gone == {a}
    assert stored(a) == {"next": 10}


def test_checkpoint_none_is_stored_and_starts_the_next_run_over() -> None:
    job_id = enqueue("T", {})
    [job] = claim("w")
    renew_leases([job.ref], checkpoints={job_id: '{"next":10}'})
    assert fail(job, "x", checkpoint=checkpoints.encode(None)) == "PENDING"
    [(text,)] = sql('SELECT checkpoint::text FROM "WorkerJob" WHERE id = :id', id=job_id)
    assert text == "null"  # written (a JSON null, not SQL's NULL, which would keep it)
    sql('UPDATE "WorkerJob" SET "availableAt" = now()')
    [job] = claim("w")
    assert job.checkpoint is None


def test_a_completion_clears_it_whichever_statement_completes() -> None:
    for _ in range(3):
        enqueue("T", {})
    jobs = claim("w", limit=3)
    renew_leases([j.ref for j in jobs], checkpoints={j.id: '{"next":1}' for j in jobs})
    assert [stored(j.id) for j in jobs] == [{"next": 1}] * 3
    assert complete(jobs[0])  # sql.COMPLETE
    assert complete_many([(jobs[1], None)]) == {jobs[1].id}  # a child's group commit
    done, _ = complete_and_claim([(jobs[2], None)], "w", limit=1)  # ... with its claim
    assert done == {jobs[2].id}
    assert [stored(j.id) for j in jobs] == [None] * 3


def test_the_pools_claim_with_its_completions_hands_the_checkpoint_over() -> None:
    first, second = enqueue("T", {}), enqueue("T", {}, delay=3600)
    [job] = claim("w")
    sql("""UPDATE "WorkerJob" SET checkpoint = '{"next": 7}', "availableAt" = now()
           WHERE id = :id""", id=second)
    done, [claimed] = complete_and_claim([(job, None)], "w", limit=1)
    assert done == {first}
    assert (claimed.id, claimed.checkpoint, claimed.decode_error) == (second, {"next": 7}, None)


def test_a_checkpoint_python_cannot_decode_fails_that_job_alone_and_retry_from_start_drops_it(
) -> None:
    job_id = enqueue("T", {})
    # Written by something other than skiplock.checkpoint, which refuses this.
    sql('UPDATE "WorkerJob" SET checkpoint = CAST(:deep AS jsonb)',
        deep="[" * 2000 + "]" * 2000)
    [job] = claim("w")
    assert job.decode_error is not None
    assert job.decode_error.startswith("the checkpoint cannot be used: it is nested too deeply")
    shown = get_job(job_id).to_dict()
    assert shown["checkpoint"].startswith("<the checkpoint cannot be used")
    assert shown["payload"] == {}
    assert fail(job, job.decode_error, retry=False) == "DEAD_LETTER"
    assert retry_dead([job_id]) == [job_id]
    assert sql('SELECT status::text, checkpoint IS NOT NULL FROM "WorkerJob"') == [
        ("PENDING", True)]  # kept by a plain retry
    sql("""UPDATE "WorkerJob" SET status = 'DEAD_LETTER'""")
    assert retry_dead([job_id], from_start=True) == [job_id]
    [job] = claim("w")
    assert (job.checkpoint, job.decode_error) == (None, None)


def test_skiplock_retry_resumes_a_dead_letter_unless_from_start_and_job_shows_it() -> None:
    a, b = enqueue("T", {}), enqueue("T", {})
    sql("""UPDATE "WorkerJob" SET status = 'DEAD_LETTER', checkpoint = '{"next": 42}'""")
    config.clear_cache()
    shown = CliRunner().invoke(main, ["job", a], catch_exceptions=False).output
    assert 'checkpoint' in shown and '{"next": 42}' in shown
    result = CliRunner().invoke(main, ["retry", a], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["retry", "--all-dead", "--from-start"],
                                catch_exceptions=False)
    assert result.exit_code == 0 and "retried 1 jobs" in result.output, result.output
    assert (stored(a), stored(b)) == ({"next": 42}, None)
    assert [r.st for r in (row(a), row(b))] == ["PENDING", "PENDING"]


# -- inline, as `skiplock.testing.drain` runs jobs -------------------------------------


def resumed_from(job_id: str) -> list[object]:
    return [json.loads(r) if isinstance(r, str) else r for (r,) in sql(
        "SELECT resumed->'resumed' FROM checkpoint_steps WHERE job_id = :j AND resumed IS NOT "
        "NULL ORDER BY at", j=job_id)]


def test_drain_hands_each_retry_the_checkpoint_its_failed_run_took() -> None:
    job_id = enqueue("TEST_FAIL_AFTER_CHECKPOINT", {"runs": 3})
    report = testing.drain(run_scheduled=True)
    assert report.outcomes == {"retried": 2, "completed": 1}
    assert resumed_from(job_id) == [None, {"done": 1}, {"done": 2}]
    r = row(job_id)
    assert (r.st, r.attempts, r.checkpoint, r.result) == ("COMPLETED", 3, None, {"done": 3})


def test_drain_hands_a_snoozed_job_its_checkpoint() -> None:
    job_id = enqueue("TEST_SNOOZE_AFTER_CHECKPOINT", {"pages": 3})
    report = testing.drain(run_scheduled=True)
    assert report.outcomes == {"snoozed": 2, "completed": 1}
    r = row(job_id)
    assert (r.st, r.snoozes, r.result, r.checkpoint) == ("COMPLETED", 2, {"pages": 3}, None)


def test_the_dashboards_job_page_shows_a_checkpoint_and_one_it_cannot_decode() -> None:
    from skiplock.dashboard.app import create_app
    from skiplock.dashboard.settings import DashboardSettings

    client = create_app(DashboardSettings()).test_client()
    resumable, broken = enqueue("T", {}), enqueue("T", {})
    sql("""UPDATE "WorkerJob" SET checkpoint = '{"next": 90}' WHERE id = :id""", id=resumable)
    sql('UPDATE "WorkerJob" SET checkpoint = CAST(:deep AS jsonb) WHERE id = :id',
        deep="[" * 2000 + "]" * 2000, id=broken)
    page = client.get(f"/jobs/{resumable}")
    assert page.status_code == 200
    assert "checkpoint" in page.get_data(as_text=True)
    assert "&#34;next&#34;: 90" in page.get_data(as_text=True)
    page = client.get(f"/jobs/{broken}")
    assert page.status_code == 200
    assert "the checkpoint cannot be used: it is nested too deeply" in page.get_data(as_text=True)
