"""The instant wake-up: LISTEN on the channel every insert of a job notifies.

A child waits for its next poll on the socket of a dedicated connection, so a
new job wakes it at once instead of after up to `--poll-max`. docs/lessons.md:
LISTEN does not work through PgBouncer in transaction mode, so `--no-listen`
turns this off and the adaptive polling alone must do (it does: a notification
only shortens a wait). A broken connection (database restart) is dropped and
re-opened on a later wait; meanwhile polling goes on.

The connection is in psycopg2's asynchronous mode, and it also carries the
batch statement a busy child sends ahead of its batch's last job
(pool/ahead.py): a busy child does not listen, an idle one sends nothing, so
one connection does both. A notification that arrives while a statement runs
is kept by the driver and read at the next wait.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from skiplock.queue_core.database import bounds, db
from skiplock.queue_core.sql import NOTIFY_CHANNEL

log = logging.getLogger("skiplock.worker")


class Listener:
    def __init__(self) -> None:
        self.conn: Any = None  # a psycopg2 connection, detached from the engine's pool

    def fileno(self) -> int | None:
        return self.conn.fileno() if self.conn is not None else None

    def connect(self) -> None:
        """Open the connection and LISTEN; raises on failure (the caller backs off)."""
        if self.conn is not None:
            return
        conn = db.open_async()
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
                bounds.wait(conn)
        except Exception:
            conn.close()
            raise
        self.conn = conn

    def consume(self) -> bool:
        """Read what arrived; True if a job was announced. A dead connection is dropped."""
        if self.conn is None:
            return False
        try:
            self.conn.poll()
        except Exception as exc:  # the server went away: poll alone until it is back
            log.debug("LISTEN connection lost: %s", exc)
            self.close()
            return False
        announced = bool(self.conn.notifies)
        self.conn.notifies.clear()
        return announced

    def close(self) -> None:
        if self.conn is not None:
            # Closing a broken connection may fail; it is gone anyway.
            with contextlib.suppress(Exception):
                self.conn.close()
            self.conn = None
