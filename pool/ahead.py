"""The batch statement sent ahead: it runs on the server while the child runs
its batch's last job.

A child whose jobs touch nothing in the database commits their completions
with the claim of its next batch in one statement (`lifecycle.
complete_and_claim`, pool/completer.py). Sent once the batch has run, the
child would wait for it: planning, two updates, a WAL flush and a round trip,
once per batch. Sent just before the batch's last job, on a connection in
psycopg2's asynchronous mode, it runs on the server while that job runs, and
its answer is read when the job has ended: no thread in the common case (one
would fight the handler for the GIL), no wait (the figures are in
docs/benchmarks.md).

What stays true (pool/completer.py, `send_ahead` and `collect_ahead`):

- The master hears of the completions, and of the claim, only once the answer
  is read: after the commit, as with every other commit.
- A claimed job's lease is dated by the moment the statement was sent
  (`protocol.Claimed.sent_at`), and nobody renews it until the master hears of
  it. So a child sends ahead only before a job expected to end soon
  (`AHEAD_MAX_S`), and a claim whose answer it reads later than
  `stale_after_s` of the lease is given back unrun and uncharged: the master
  might not renew it in time, and the job must not run twice at once. And
  should the job run past twice its expected time, a timer in the child reads
  the answer then and gives the claimed jobs back at once, so that they wait
  neither for it nor on a lease nobody renews.
- An answer lost with the connection is settled like a lost commit: the
  completed jobs are interrupted and whatever the statement may have claimed
  goes back uncharged (`sql.RELEASE_UNSTARTED`), but never the job that ran
  meanwhile.
- It costs no connection: it goes on the child's LISTEN connection
  (pool/listener.py), which waits for notifications only while the child is
  idle. A child run with `--no-listen` opens one connection for it, the
  first time it sends ahead, and keeps it.
"""

from __future__ import annotations

import contextlib
import select
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extensions
from sqlalchemy import exc as sa_exc

from skiplock.queue_core.database import bounds, db

if TYPE_CHECKING:
    from skiplock.pool.listener import Listener

# Sent ahead only before a job expected to run at most this long: its claim
# waits that long for the master to hear of it.
AHEAD_MAX_S = 0.5


def stale_after_s(lease_s: float) -> float:
    """A claim read later than this after it was sent is not started: the master
    must still have a heartbeat's time to renew it before it would fence it."""
    return lease_s / 3


class AheadConnection:
    """An autocommit connection in psycopg2's asynchronous mode: `send` returns as soon
    as the statement is on its way; `receive` waits for its answer. The listener's
    connection when there is a listener, else one of its own."""

    def __init__(self, listener: Listener | None = None) -> None:
        self.listener = listener
        self.raw: Any = None
        self.cursor: Any = None
        self.statement = ""
        self.params: dict[str, Any] = {}
        self.early_error: psycopg2.Error | None = None  # raised by `answered`, for `receive`

    def connect(self) -> None:
        """Open the connection if it is not open (inside `bounds.bounded`)."""
        with db.translate_errors():
            if self.listener is not None:
                self.listener.connect()
                raw = self.listener.conn
            else:
                raw = self.raw if self.raw is not None else db.open_async()
        if raw is not self.raw:  # the listener's was opened again since
            self.raw, self.cursor = raw, raw.cursor()

    def send(self, statement: str, params: dict[str, Any]) -> None:
        """Send one statement of `db.driver_sql` without waiting for its answer (inside
        `bounds.bounded`: its limits go with it)."""
        self.connect()
        self.statement, self.params, self.early_error = statement, params, None
        with db.translate_errors():
            try:
                self.cursor.execute(bounds.statement_prefix() + statement, params)
                self._flush()
            except psycopg2.Error as exc:
                raise self._failed(exc) from exc

    def answered(self) -> bool:
        """Whether the answer of the statement sent is here: `receive` would not wait.
        Never waits itself; an error it meets is `receive`'s to raise."""
        if self.raw is None or self.early_error is not None:
            return True
        try:
            return bool(self.raw.poll() == psycopg2.extensions.POLL_OK)
        except psycopg2.Error as exc:
            self.early_error = exc
            return True

    def receive(self) -> tuple[list[str], list[tuple[Any, ...]]]:
        """The column names and rows of the statement sent (inside `bounds.bounded`)."""
        with db.translate_errors():
            try:
                early, self.early_error = self.early_error, None
                if early is not None:
                    raise early
                bounds.wait(self.raw)
                if self.cursor.description is None:
                    return [], []
                return [d[0] for d in self.cursor.description], list(self.cursor.fetchall())
            except psycopg2.Error as exc:
                raise self._failed(exc) from exc

    def _flush(self) -> None:
        """Push what the driver could not write at once (a long statement) to the
        server now, not when the answer is asked for."""
        left = bounds.time_left()
        while self.raw.poll() == psycopg2.extensions.POLL_WRITE:
            if not select.select([], [self.raw.fileno()], [], left)[1]:
                raise bounds.NoAnswer("no answer within the time bound")

    def _failed(self, exc: psycopg2.Error) -> sa_exc.DBAPIError:
        """The driver's error as SQLAlchemy's, the connection closed when it cannot be
        trusted again. A statement given up on (no answer in time) may still answer
        later on this connection: unlike a green connection's, the driver does not
        close it by itself, so it goes too."""
        lost, error = db.driver_error(exc, self.raw, self.statement, self.params,
                                      lost=isinstance(exc, bounds.NoAnswer))
        if lost:
            self.close()
        return error

    def close(self) -> None:
        """Close the connection (the listener's too: it is the same one)."""
        raw, self.raw, self.cursor = self.raw, None, None
        if self.listener is not None:
            if self.listener.conn is raw:
                self.listener.close()
        elif raw is not None:
            with contextlib.suppress(psycopg2.Error):
                raw.close()
