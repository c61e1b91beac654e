"""What keeps the periodic statements off the index entries a held snapshot keeps
(queue_core/pacing.py): the heartbeat reads its jobs by id, the mover's passes start
where the last one stopped, and a slow periodic walk runs less often."""

from __future__ import annotations

import re

from skiplock import queue_core as q
from skiplock.pool.history import HistoryMover
from skiplock.pool.recovery import Recovery
from skiplock.queue_core import pacing
from skiplock.queue_core import sql as statements
from skiplock.queue_core.database.arrays import flag_array, number_array, text_array
from skiplock.queue_core.features import history
from tests.queue_core.helpers import plan as explain
from tests.queue_core.helpers import sql
from tests.support import Clock


def test_a_heartbeat_and_a_completion_find_their_jobs_by_id_not_the_processing_index():
    # 200 jobs held by this worker, 200 more finished: the planner, left free to, joined
    # the beat's ids to a walk of the whole PROCESSING index (every entry it keeps,
    # behind a held snapshot every job run since) instead of 200 lookups by id.
    # Statistics from before the jobs were claimed (autovacuum had not analyzed since): the
    # PROCESSING index looks empty, a walk of it as cheap as it gets.
    q.enqueue_many([{"type": "HB_PLAN", "payload": {}} for _ in range(400)])
    q.claim("w", limit=200, types=["HB_PLAN"])
    sql("""UPDATE "WorkerJobLive" SET status = 'COMPLETED', "completedAt" = now(),
           "lockedAt" = NULL, "lockedBy" = NULL WHERE status = 'PROCESSING'""")
    sql('ANALYZE "WorkerJobLive"')
    held = q.claim("w", limit=200, types=["HB_PLAN"])
    params = {"ids": text_array([j.id for j in held]),
              "lockers": text_array([j.locked_by for j in held]),
              "attempts": number_array([j.attempts for j in held]),
              "progress": number_array([None] * len(held)),
              "messages": text_array([None] * len(held)),
              "write": flag_array([False] * len(held)), "checkpoints": "{}"}
    for statement, bound in ((statements.HEARTBEAT, params), (statements.COMPLETE_MANY, {
            "ids": params["ids"], "lockers": params["lockers"], "attempts": params["attempts"],
            "results": text_array([None] * len(held))})):
        plan = explain(statement, bound, big_table=True)
        used = re.findall(r'(?:Index Scan using|Bitmap Index Scan on) "(\w+)"', plan)
        assert used and set(used) == {"WorkerJob_pkey"}, plan
        assert 'Seq Scan on "WorkerJobLive"' not in plan, plan
    assert q.heartbeat(held) == {j.id for j in held}


def test_the_movers_passes_start_where_the_last_stopped_and_the_head_pass_catches_up():
    clock = Clock(1000.0)
    mover = HistoryMover(clock=clock)
    mover.settings = history.Settings(after_s=60.0, dead_after_s=7 * 86400.0, width_s=86400.0)
    kept = q.enqueue("MV_CURSOR", {})
    [job] = q.claim("w", types=["MV_CURSOR"])
    q.complete(job)
    # Kept live for a reason of its own (here: a unique window not over yet).
    sql("""UPDATE "WorkerJobLive" SET "uniqueKey" = 'k', "uniqueUntil" = now() + interval '1 h',
           "completedAt" = now() - interval '2 h' WHERE id = :id""", id=kept)
    moved_first = q.enqueue("MV_CURSOR", {})
    [job] = q.claim("w", types=["MV_CURSOR"])
    q.complete(job)
    sql("""UPDATE "WorkerJobLive" SET "completedAt" = now() - interval '1 h' WHERE id = :id""",
        id=moved_first)
    assert mover.run_once(clock()) == 1  # from the head: the kept job stays
    assert mover.cursor.starts["COMPLETED"] is not None
    # Its window ends: a pass from where the last one stopped does not walk back to it...
    sql("""UPDATE "WorkerJobLive" SET "uniqueUntil" = now() - interval '1 s' WHERE id = :id""",
        id=kept)
    clock.now += history.EVERY_S
    assert mover.run_once(clock()) == 0
    assert _live(kept)
    # ... a pass from the head, a minute later, does.
    clock.now += 60
    assert mover.run_once(clock()) == 1
    assert not _live(kept) and not _live(moved_first)


def _live(job_id: str) -> bool:
    return bool(sql('SELECT count(*) FROM "WorkerJobLive" WHERE id = :id', id=job_id)[0][0])


def test_a_slow_periodic_walk_runs_less_often():
    assert pacing.delay(5.0, 0.002) == 5.0
    assert pacing.delay(5.0, 0.2) == 0.2 / pacing.SHARE
    recovery = Recovery(interval_s=5.0, stuck_timeout_s=30.0)
    recovery.run_once(100.0)
    assert recovery.next_at == 105.0  # a healthy table: the interval


def test_stuck_recovery_looks_at_a_window_and_at_every_lease_once_a_minute():
    recovery = Recovery(interval_s=5.0, stuck_timeout_s=10.0)
    now = 1000.0
    recovery.run_once(now)  # the first look takes in every lease
    assert recovery.since is not None
    behind = q.enqueue("STUCK_WINDOW", {})
    recent = q.enqueue("STUCK_WINDOW", {})
    q.claim("w", limit=2, types=["STUCK_WINDOW"])
    # A lease that ran out long before the window (a transaction that held its write
    # open for hours: no pool's) and one that ran out since the last look.
    sql("""UPDATE "WorkerJobLive" SET "lockedAt" = now() - interval '2 h' WHERE id = :id""",
        id=behind)
    sql("""UPDATE "WorkerJobLive" SET "lockedAt" = now() - interval '15 s' WHERE id = :id""",
        id=recent)
    now += 5
    assert recovery.run_once(now).retried == [recent]
    now += 5
    assert recovery.run_once(now).retried == []
    now += 60
    assert recovery.run_once(now).retried == [behind]
