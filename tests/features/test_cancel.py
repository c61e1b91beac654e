"""Cancel through the API and the command line, on a real database (the pool's side is
in test_cancel_pool.py)."""

from __future__ import annotations

import re

from click.testing import CliRunner

from skiplock import cancel, cancel_many, cancel_matching, claim, complete, enqueue
from skiplock.cli import main
from skiplock.queue_core import config
from skiplock.queue_core.features.cancel import CancelOutcome, end_cancelled
from tests.queue_core.helpers import row

WHEN = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_a_pending_job_ends_failed_with_who_and_when_and_is_never_claimed():
    job_id = enqueue("CANCEL_ME", {})
    result = cancel(job_id, by="alice")
    assert (result.outcome, result.status) == (CancelOutcome.CANCELLED, "FAILED")
    r = row(job_id)
    assert r.st == "FAILED" and r.completedAt is not None and r.cancelledBy == "alice"
    assert re.fullmatch(rf"cancelled by alice at {WHEN} while pending \(0 attempt\(s\) made\)",
                        r.lastError)
    assert claim("w") == []


def test_a_finished_job_is_left_alone_and_the_answer_says_so():
    job_id = enqueue("CANCEL_ME", {})
    [job] = claim("w")
    assert complete(job, {"ok": 1})
    result = cancel(job_id, by="alice")
    assert (result.outcome, result.status) == (CancelOutcome.FINISHED, "COMPLETED")
    r = row(job_id)
    assert r.st == "COMPLETED" and r.cancelledBy is None and r.result == {"ok": 1}
    again = enqueue("CANCEL_ME", {})
    cancel(again, by="alice")
    assert cancel(again, by="bob").outcome is CancelOutcome.FINISHED
    assert row(again).cancelledBy == "alice"  # the first cancel stands


def test_a_running_job_keeps_running_until_its_master_ends_it_fenced():
    job_id = enqueue("CANCEL_ME", {}, max_attempts=5)
    [job] = claim("w1")
    result = cancel(job_id, by="bob")
    assert (result.outcome, result.status) == (CancelOutcome.CANCELLING, "PROCESSING")
    assert row(job_id).st == "PROCESSING"
    assert not complete(job.ref.__class__(job.id, "someone-else", job.attempts), None)
    assert end_cancelled(job)
    r = row(job_id)
    assert r.st == "FAILED" and r.lockedBy is None
    assert re.fullmatch(rf"cancelled by bob at {WHEN} while running \(worker w1, attempt 1 of 5\)",
                        r.lastError)
    assert not end_cancelled(job)  # fenced: once only
    assert not complete(job, None)  # the handler's completion cannot commit any more


def test_a_job_that_completed_before_its_master_read_the_cancel_stays_completed():
    job_id = enqueue("CANCEL_ME", {})
    [job] = claim("w1")
    cancel(job_id, by="bob")
    assert complete(job, None)
    assert not end_cancelled(job)
    assert row(job_id).st == "COMPLETED"


def test_unknown_ids_are_reported_in_order():
    a = enqueue("CANCEL_ME", {})
    results = cancel_many(["nope", a, "nope"], by="x")
    assert [(r.job_id, r.outcome) for r in results] == [
        ("nope", CancelOutcome.NOT_FOUND), (a, CancelOutcome.CANCELLED)]


def test_cancel_by_type_and_user_with_a_dry_run_first():
    mine = [enqueue("CANCEL_ME", {"n": i}, user_id="u1") for i in range(3)]
    other_user = enqueue("CANCEL_ME", {}, user_id="u2")
    other_type = enqueue("KEEP_ME", {}, user_id="u1")
    [running] = claim("w", types=["CANCEL_ME"])
    dry = cancel_matching(job_type="CANCEL_ME", user_id="u1", by="x", dry_run=True)
    assert {r.job_id for r in dry} == set(mine) and all(r.dry_run for r in dry)
    assert {row(i).st for i in mine} <= {"PENDING", "PROCESSING"}
    done = cancel_matching(job_type="CANCEL_ME", user_id="u1", by="x")
    outcomes = {r.job_id: r.outcome for r in done}
    assert outcomes.pop(running.id) is CancelOutcome.CANCELLING
    assert set(outcomes.values()) == {CancelOutcome.CANCELLED}
    assert row(other_user).st == "PENDING" and row(other_type).st == "PENDING"


def _cli(*args: str):
    config.clear_cache()
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_the_command_says_what_happened_to_each_job_and_exits_1_for_unknown_ids():
    done = enqueue("CANCEL_ME", {})
    [job] = claim("w")
    assert complete(job, None)
    pending = enqueue("CANCEL_ME", {})
    result = _cli("cancel", pending, done, "missing-id", "--by", "ops")
    assert result.exit_code == 1
    assert f"{pending}: cancelled (was pending, never started)" in result.output
    assert f"{done}: already finished (COMPLETED), nothing changed" in result.output
    assert "missing-id: no such job" in result.output
    assert row(pending).cancelledBy == "ops"


def test_the_command_dry_run_changes_nothing_and_usage_errors_exit_2():
    job_id = enqueue("CANCEL_ME", {}, user_id="u9")
    result = _cli("cancel", "--user-id", "u9", "--dry-run")
    assert result.exit_code == 0
    assert f"{job_id}: would be cancelled" in result.output
    assert row(job_id).st == "PENDING"
    assert _cli("cancel").exit_code == 2
    assert _cli("cancel", job_id, "--type", "X").exit_code == 2
    result = _cli("cancel", "--type", "CANCEL_ME", "--json")
    assert '"outcome": "cancelled"' in result.output and row(job_id).st == "FAILED"
    assert row(job_id).cancelledBy.startswith("cli:")


def test_cleanup_deletes_old_cancelled_jobs_through_the_finished_index():
    from sqlalchemy import text

    from skiplock.queue_core import cleanup, sql
    from skiplock.queue_core.database import db
    from tests.queue_core.helpers import count
    from tests.queue_core.helpers import sql as run_sql

    old = enqueue("CANCEL_ME", {})
    cancel(old, by="x")
    recent = enqueue("CANCEL_ME", {})
    cancel(recent, by="x")
    run_sql('UPDATE "WorkerJob" SET "completedAt" = now() - interval \'8 days\' WHERE id = :id',
            id=old)
    with db.get_engine().connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))  # a tiny table: can the index serve?
        plan = "\n".join(r[0] for r in conn.execute(
            text("EXPLAIN " + sql.CLEANUP_BATCH.text),
            {"statuses": ["COMPLETED", "DEAD_LETTER", "FAILED"], "older_than_s": 1.0,
             "batch": 10}))
    assert "WorkerJob_finished_idx" in plan, plan
    assert cleanup("7d") == 1
    assert count("id = :id", id=old) == 0 and count("id = :id", id=recent) == 1


def test_a_retried_dead_letter_carries_no_stale_cancel_request():
    # A cancel that arrived while the last attempt was failing stays on the dead letter;
    # the operator's retry must run the job, not end it at its next claim.
    from skiplock import fail
    from skiplock.queue_core import retry_dead

    job_id = enqueue("CANCEL_ME", {}, max_attempts=1)
    [job] = claim("w1")
    assert cancel(job_id, by="bob").outcome is CancelOutcome.CANCELLING
    assert fail(job, "boom", retry=True) == "DEAD_LETTER"
    assert row(job_id).cancelRequestedAt is not None
    assert retry_dead([job_id]) == [job_id]
    r = row(job_id)
    assert (r.st, r.cancelRequestedAt, r.cancelledBy) == ("PENDING", None, None)
    [again] = claim("w2")
    assert again.cancel_requested_at is None
    assert complete(again, {"ran": True})
    assert row(job_id).st == "COMPLETED"


def test_a_cancelled_job_can_be_retried_by_id_but_not_in_bulk():
    from skiplock.queue_core import retry_dead

    first = enqueue("CANCEL_ME", {})
    second = enqueue("CANCEL_ME", {})
    for job_id in (first, second):
        cancel(job_id, by="alice")
    assert retry_dead(all_dead=True) == []  # a bulk retry of dead letters undoes no cancel
    assert retry_dead(job_type="CANCEL_ME") == []
    assert row(first).st == "FAILED"
    assert retry_dead([first]) == [first]
    r = row(first)
    assert (r.st, r.attempts, r.completedAt, r.cancelRequestedAt, r.cancelledBy) == (
        "PENDING", 0, None, None, None)
    [job] = claim("w")
    assert job.id == first and complete(job, None)
    result = _cli("retry", second)
    assert result.exit_code == 0 and "retried 1 jobs" in result.output
    assert row(second).st == "PENDING"


def test_a_job_cancelled_at_its_claim_after_a_retry_can_be_retried_again():
    # The path the cancel took before: the request survived the retry, the next claim
    # ended the job FAILED before it started; retrying that must still work.
    from skiplock.queue_core import retry_dead

    job_id = enqueue("CANCEL_ME", {}, max_attempts=1)
    [job] = claim("w1")
    cancel(job_id, by="bob")
    assert end_cancelled(job, started=False)
    assert row(job_id).st == "FAILED"
    assert retry_dead([job_id]) == [job_id]
    [again] = claim("w2")
    assert again.cancel_requested_at is None and complete(again, None)
