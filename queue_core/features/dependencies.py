"""Jobs that wait for other jobs: `enqueue(..., depends_on=[ids])` (fan-in).

A dependent waits, PENDING with "heldBack" false and "waitingFor" counting
the parents it still waits for, outside the claim's index (migration
0016_dependencies). The statement that ends its last parent makes it ready
in the same transaction, through the trigger on "WorkerJob": no resolver
process, no lag; it is claimable from that commit on, and idle workers are
woken with it.

What a parent that does not complete (dead-lettered, cancelled, deleted)
does to a dependent is the edge's policy: "cancel" (default) ends it FAILED,
its "lastError" naming the parent, and its own dependents after it; "run"
counts the edge as done; "hold" keeps it waiting with a note in "lastError"
until the parent completes after a retry, or a person runs it anyway
(`skiplock retry ID`, `release_waiting`).

Cycles cannot be written: a job depends only on jobs that exist already and
on earlier jobs of the same `enqueue_many` call (`depends_on=[0, 2]`, their
positions). An unknown id is refused, the whole call with it.

Writing a dependent locks its existing parents (in id order) until its
transaction commits, so a parent cannot end between the read of its status
and the commit of the edge, which its trigger would then not see. Enqueue
dependents in short transactions: a parent's completion waits for that lock.
A job enqueued with an idempotency key that exists already is the existing
job, and gets no new parents.

A dependent reads what its parents returned: `parent_results(job_id)`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from skiplock.queue_core import sql
from skiplock.queue_core.database import steps
from skiplock.queue_core.database.arrays import text_array
from skiplock.queue_core.database.borrowed import BorrowedConnection
from skiplock.queue_core.database.db import (
    Joinable,
    ServerBound,
    binds_on_server,
    connect,
    translate_errors,
)
from skiplock.queue_core.enqueue import Enqueued, Statement, _Row, keyed_steps
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import sequences

ACTIVE = ("PENDING", "PROCESSING")

Target = Connection | ServerBound | BorrowedConnection
# What a graph's write runs once its jobs are in, before the ends of parents already
# over are applied: given the ids it inserted, its own steps.
AfterInsert = Callable[[set[str]], Generator[Statement, Any, None]]
Graph = Generator[Statement, Any, tuple[Enqueued, set[str]]]
BEGIN, COMMIT, ROLLBACK = text("BEGIN"), text("COMMIT"), text("ROLLBACK")


def write(rows: Sequence[_Row], conn: Joinable | None, batch: Any,
          trace: str | None) -> Enqueued:
    """`enqueue`'s write when a job has parents or a batch is open: in one transaction
    (the caller's with `conn`), jobs, edges and the ends of parents already over;
    `trace` is the context they were enqueued in (queue_core/tracing.py)."""
    if batch is None:
        with connect(conn) as c:
            if not autocommits(c):
                return run(c, graph_steps(rows, trace))[0]
            # A caller's connection in autocommit (Django's outside `atomic()`) would
            # commit each statement alone: the lock on a parent would be gone before the
            # edge is written, and a parent that ended meanwhile would strand its
            # dependent. The write is one transaction all the same.
            c.execute(BEGIN)
            try:
                done = run(c, graph_steps(rows, trace))[0]
            except BaseException:
                with contextlib.suppress(Exception):  # the caller's connection stays usable
                    c.execute(ROLLBACK)
                raise
            c.execute(COMMIT)
            return done
    if conn is not None and conn is not batch.conn and conn is not batch.given:
        raise InvalidJob("inside `with skiplock.batch(...)`, enqueue without conn (or with "
                         "the batch's own conn): its members are written in the batch's "
                         "transaction")
    with translate_errors():
        done, created = run(batch.conn, graph_steps(rows, trace, member=True))
    batch.joined(done.ids, created)
    return done


def autocommits(c: Any) -> bool:
    """Whether `c` is a caller's driver connection in autocommit, where each statement
    commits alone (psycopg2's and psycopg 3's `autocommit`, Django's connection outside
    `atomic()`)."""
    return isinstance(c, BorrowedConnection) and bool(getattr(c.raw, "autocommit", False))


def run(c: Any, graph: Graph) -> tuple[Enqueued, set[str]]:
    """Perform a graph's steps on the blocking connection `c`, inside its transaction."""
    target = on_server(c)
    return steps.run(graph, lambda step: target.execute(*step))


def on_server(c: Any) -> Target:
    """`c` as the queue's statements are sent on it (a driver that binds on the server
    takes one statement per query string)."""
    return ServerBound(c) if isinstance(c, Connection) and binds_on_server(c) else c


def graph_steps(rows: Sequence[_Row], trace: str | None, *, member: bool = False,
                fresh: frozenset[str] | set[str] = frozenset(),
                after_insert: AfterInsert | None = None) -> Graph:
    """The steps that insert `rows` with their edges, inside one transaction; they
    return what was enqueued and the ids this write inserted. The blocking path
    (`write`) and the async one (queue_core/aio.py) run these same steps
    (queue_core/database/steps.py).

    `member`: every row is a batch member (marked as having a dependent, the
    callback). `fresh`: ids of jobs this transaction wrote, pending for sure and
    seen by nobody else, which need no lock. `after_insert(created)`'s steps run
    before the ends of parents already over are applied (a batch writes its row
    there, which the callback's readiness reads)."""
    statuses: dict[str, str] = {}
    external = sorted({ref for r in rows for ref, _ in r.parents or ()
                       if isinstance(ref, str)} - set(fresh))
    if external:
        statuses.update((yield from _lock(external)))
    referenced = {ref for r in rows for ref, _ in r.parents or () if isinstance(ref, int)}
    waiting = [None if r.parents is None else len(r.parents) for r in rows]
    flagged = [True if member or i in referenced else None for i in range(len(rows))]

    def extra(positions: list[int]) -> dict[str, str]:
        return {"waiting_for": "{" + ",".join("NULL" if waiting[i] is None else str(waiting[i])
                                              for i in positions) + "}",
                "has_dependents": "{" + ",".join("t" if flagged[i] else "NULL"
                                                 for i in positions) + "}",
                **sequences.columns([rows[i].sequence for i in positions],
                                    [rows[i].sequence_policy for i in positions])}

    ids, created = yield from keyed_steps(rows, trace, sql.INSERT_GRAPH_JOBS, extra)
    parents: list[str] = []
    children: list[str] = []
    policies: list[str] = []
    late: set[str] = set()  # earlier jobs of the call whose key existed: not ours, locked
    recount: dict[str, int] = {}
    for i, r in enumerate(rows):
        if not r.parents or ids[i] not in created:
            continue
        seen: set[str] = set()
        for ref, policy in r.parents:
            parent = ids[ref] if isinstance(ref, int) else ref
            if isinstance(ref, int) and parent not in created:
                late.add(parent)
            if parent in seen:  # an id given twice, once by position and once by id
                continue
            seen.add(parent)
            parents.append(parent)
            children.append(ids[i])
            policies.append(policy)
        if len(seen) != len(r.parents):
            recount[ids[i]] = len(r.parents) - len(seen)
    if late:
        statuses.update((yield from _lock(sorted(late))))
    for child, less in recount.items():
        yield sql.SET_WAITING_FOR, {"id": child, "less": less}
    if parents:
        yield sql.INSERT_EDGES, {"parents": text_array(parents),
                                 "children": text_array(children),
                                 "policies": text_array(policies)}
    if after_insert is not None:
        yield from after_insert(created)
    ended = sorted({p for p in parents if statuses.get(p, "PENDING") not in ACTIVE})
    if ended:
        yield sql.RESOLVE_ENDED, {"parents": text_array(ended),
                                  "statuses": text_array([statuses[p] for p in ended]),
                                  "children": text_array(sorted(set(children)))}
    return Enqueued(ids, len(created)), created


def _lock(ids: list[str]) -> Generator[Statement, Any, dict[str, str]]:
    found = {r.id: r.status for r in (yield sql.LOCK_PARENTS, {"ids": text_array(ids)})}
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3
                                          else "")
        raise InvalidJob(f"cannot enqueue: depends_on names no job with id {shown}; a job "
                         "can depend only on jobs that exist and on earlier jobs of the "
                         "same call")
    return found


# -- reading the graph ----------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """A parent or a dependent of a job, and the edge between them."""

    id: str
    type: str | None  # None: the job was deleted
    status: str | None
    policy: str  # what the parent's failure does to the dependent: cancel, run, hold
    resolved_at: datetime | None  # when the parent's end was applied to the dependent
    result: Any = None  # a parent's result (for parents only)


def _edges(statement: Any, params: dict[str, Any], conn: Joinable | None) -> list[Edge]:
    with connect(conn) as c:
        rows = list(c.execute(statement, params))
    return [Edge(r.id, r.type, r.status, r.policy, r.resolved_at,
                 None if r.result_json is None else json.loads(r.result_json)) for r in rows]


def parents(job_id: str, conn: Joinable | None = None) -> list[Edge]:
    """The jobs `job_id` depends on, by id, with their status and result."""
    return _edges(sql.PARENTS_OF, {"id": job_id}, conn)


def dependents(job_id: str, conn: Joinable | None = None, limit: int = 1000) -> list[Edge]:
    """The jobs that depend on `job_id` (the first `limit`, by id)."""
    return _edges(sql.DEPENDENTS_OF, {"id": job_id, "limit": limit}, conn)


def parent_results(job_id: str, conn: Joinable | None = None) -> dict[str, Any]:
    """What each parent of `job_id` that completed returned, by parent id.

    A handler calls it with its own job id: `skiplock.parent_results(job_id)`. A
    parent that did not complete (a dependent with the policy "run" runs anyway)
    is left out; `parents(job_id)` tells every one's status."""
    return {e.id: e.result for e in parents(job_id, conn) if e.status == "COMPLETED"}


def release_waiting(ids: Iterable[str], conn: Joinable | None = None) -> list[str]:
    """Let waiting dependents run now, without the parents they still wait for (a
    held one, say); returns the ids released (the others were not waiting)."""
    with connect(conn) as c:
        return [r.id for r in c.execute(sql.RELEASE_WAITING, {"ids": text_array(list(ids))})]
