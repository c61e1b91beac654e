"""The chaos soak's sequences (queue_core/features/sequences.py): CHAOS_WORK jobs in a few
keys, some of them failing for good under the policy pass, a rare one under hold.

Invariant, from the effects log (every moment a run is alive, even cut off from the
database) and the status transitions: in each key, taken in enqueue order
("sequenceNo"), a job starts only after its predecessor ended, and none of its runs
overlaps one of its predecessor's; behind a dead letter with the policy hold, no job
starts at all. The jobs that wait behind such a dead letter are PENDING with
"heldBack" false, which the soak counts as held already (chaos.WAITING, not stranded
while their key's head is active or held): `held` adds none.
"""

from __future__ import annotations

import collections
from typing import Any

from sqlalchemy import text

from skiplock.queue_core import enqueue_many

KEYS = 4


def enqueue(soak: Any, conn: Any) -> int:
    """One to three jobs of one key; one in twenty fails for good (pass), one in eighty
    fails and holds its key."""
    rng = soak.job_rng
    key = f"seq:{rng.randrange(KEYS)}"
    jobs = []
    for _ in range(rng.randint(1, 3)):
        draw = rng.random()
        fail = draw < 0.05 + 1 / 80
        policy = "hold" if draw < 1 / 80 else "pass"
        jobs.append({"type": "CHAOS_WORK", "max_attempts": 8, "sequence": key,
                     "on_sequence_failure": policy,
                     "payload": {**soak.payload(), **({"fail": True} if fail else {})}})
    enqueue_many(jobs, conn=conn)
    return len(jobs)


def _spans(soak: Any) -> dict[str, tuple[float, float]]:
    """Per job, the first and last moment any of its runs was alive."""
    spans: dict[str, tuple[float, float]] = {}
    if soak.effects.exists():
        for line in soak.effects.read_text().splitlines():
            job_id, _, at = line.split()
            t = float(at)
            first, last = spans.get(job_id, (t, t))
            spans[job_id] = (min(first, t), max(last, t))
    return spans


def check(soak: Any, conn: Any) -> tuple[bool, str]:
    rows = conn.execute(text(
        """SELECT j.id, j."sequenceKey" AS key, j.status::text AS status,
                  coalesce(j."sequencePolicy", 'hold') AS policy,
                  (SELECT min(at) FROM chaos_transitions
                   WHERE job_id = j.id AND new_status = 'PROCESSING') AS started,
                  (SELECT max(at) FROM chaos_transitions WHERE job_id = j.id
                   AND new_status IN ('COMPLETED', 'DEAD_LETTER', 'FAILED')) AS ended
           FROM "WorkerJob" AS j WHERE j."sequenceKey" IS NOT NULL
           ORDER BY j."sequenceKey", j."sequenceNo" """)).all()
    spans = _spans(soak)
    lines: dict[str, list[Any]] = collections.defaultdict(list)
    for r in rows:
        lines[r.key].append(r)
    early = overlapping = behind_hold = 0
    for jobs in lines.values():
        for before, after in zip(jobs, jobs[1:], strict=False):
            held = before.status == "DEAD_LETTER" and before.policy == "hold"
            if held and (after.started is not None or after.status != "PENDING"):
                behind_hold += 1
            if after.started is not None and (before.ended is None
                                              or after.started < before.ended):
                early += 1
            if (before.id in spans and after.id in spans
                    and spans[after.id][0] < spans[before.id][1]):
                overlapping += 1
    waiting = sum(1 for r in rows if r.status == "PENDING")
    ok = not (early or overlapping or behind_hold)
    return ok, (f"sequences: {len(lines)} keys, {len(rows)} jobs, {waiting} still waiting "
                f"behind a dead letter (hold); started before the previous job of their key "
                f"ended {early}; runs overlapping the previous job's {overlapping}; started "
                f"behind a held dead letter {behind_hold}")


def held(conn: Any) -> int:
    """None beyond chaos.WAITING's: a job behind a held dead letter waits with "heldBack"
    false, and the soak counts it there."""
    return 0
