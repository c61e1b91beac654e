"""`python -m bench drivers`: what `enqueue(conn=)` costs on each kind of application connection.

Each kind (SQLAlchemy sessions on psycopg2 and psycopg 3, plain psycopg2 and
psycopg 3 connections) enqueues one unkeyed job, one keyed job, then commits,
`--rounds` times; the figures are the medians of the enqueue calls alone (the
caller's commit is the caller's), and the rate of one `enqueue_many` of
`--batch` jobs. On psycopg 3 under SQLAlchemy each insert goes without its
NOTIFY (one statement per query) and the table's trigger sends it instead: the
difference between the two session lines shows that path's cost.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
import psycopg2
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.common import scratch_database
from skiplock.queue_core import enqueue, enqueue_many
from skiplock.queue_core.database.urls import libpq_dsn


def _kinds(url: str) -> dict[str, Callable[[], tuple[Any, Callable[[], None]]]]:
    engines = {d: create_engine(make_url(url).set(drivername=f"postgresql+{d}"))
               for d in ("psycopg2", "psycopg")}
    dsn = libpq_dsn(url)

    def session(driver: str) -> Callable[[], tuple[Any, Callable[[], None]]]:
        def open_() -> tuple[Any, Callable[[], None]]:
            s = Session(engines[driver])
            return s, s.close
        return open_

    def plain(module: Any) -> Callable[[], tuple[Any, Callable[[], None]]]:
        def open_() -> tuple[Any, Callable[[], None]]:
            conn = module.connect(dsn)
            return conn, conn.close
        return open_

    return {"session, psycopg2": session("psycopg2"), "session, psycopg 3": session("psycopg"),
            "psycopg2": plain(psycopg2), "psycopg 3": plain(psycopg)}


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench drivers")
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    with scratch_database() as url:
        print(f"{'connection':<20} {'enqueue':>9} {'keyed':>9} {'enqueue_many':>16}")
        for name, open_ in _kinds(url).items():
            conn, close = open_()
            try:
                plain_s, keyed_s = [], []
                for i in range(args.rounds):
                    start = time.perf_counter()
                    enqueue("BENCH", {"i": i}, conn=conn)
                    plain_s.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    enqueue("BENCH", {"i": i}, conn=conn, idempotency_key=f"{name}:{i}")
                    keyed_s.append(time.perf_counter() - start)
                    conn.commit()
                jobs = [{"type": "BENCH", "payload": {"i": i}} for i in range(args.batch)]
                start = time.perf_counter()
                enqueue_many(jobs, conn=conn)
                batch_s = time.perf_counter() - start
                conn.commit()
            finally:
                close()
            print(f"{name:<20} {statistics.median(plain_s) * 1e6:>6.0f} us "
                  f"{statistics.median(keyed_s) * 1e6:>6.0f} us "
                  f"{args.batch / batch_s:>10,.0f} jobs/s")
