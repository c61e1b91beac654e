"""Routing with real pools: a pool claims only the types it serves; jobs of the others
wait, PENDING and untouched, are parked out of the claim's index while no pool serves
them, and run as soon as a pool that serves them starts.

The sample handlers serve TEST_* (and the built-in types), never ROUTE_B, which
tests.pool.routing_handlers serves: two deployments sharing one database.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url

from skiplock.cli import main
from skiplock.queue_core import config
from tests.pool.conftest import Jobs, Pool
from tests.support import free_port, scrape, wait_for

ROUTING_HANDLERS = "tests.pool.routing_handlers"


def cli(*args: str) -> Any:
    config.clear_cache()
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    config.clear_cache()
    assert result.exit_code == 0, result.output
    return result.output


def stats() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli("stats", "--json"))
    return data


def masters() -> list[dict[str, Any]]:
    return [p for p in json.loads(cli("ps", "--json")) if p["kind"] == "master"]


def rows(jobs: Jobs, job_type: str) -> list[Any]:
    with jobs.engine.connect() as conn:
        return list(conn.execute(text('SELECT * FROM "WorkerJob" WHERE type = :t ORDER BY id'),
                                 {"t": job_type}).mappings())


def test_a_pool_runs_only_its_types_and_a_pool_that_serves_the_others_runs_them(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    # B first in the claim's order: a pool that claimed every type would take them first.
    unserved = [jobs.enqueue("ROUTE_B", {"i": i}, priority=5) for i in range(2)]
    served = [jobs.enqueue("TEST_RECORD", {"i": i}) for i in range(3)]
    port = free_port()
    first = start_pool("--metrics-port", str(port))
    wait_for(lambda: jobs.all_done(3, "TEST_RECORD"), 20, "the served jobs to complete")
    assert set(jobs.runs()) == set(served)
    for row in rows(jobs, "ROUTE_B"):
        assert (row["status"], row["attempts"], row["lastError"]) == ("PENDING", 0, None)

    [master] = wait_for(masters, 10, "the pool's row in the process table")
    assert "TEST_RECORD" in master["served"] and "ROUTE_B" not in master["served"]
    figures = stats()
    assert figures["unserved"] == {"ROUTE_B": 2} and figures["servedBy"]["ROUTE_B"] == 0
    assert figures["pools"] == 1
    shown = cli("stats")
    assert re.search(r"^  ROUTE_B +2 +2 +0  NO POOL$", shown, re.M), shown
    assert "served by no running pool (1 running), waiting for one: ROUTE_B (2 pending" in shown
    assert f"serves {', '.join(master['served'])}" in cli("ps")
    text_ = wait_for(lambda: (t := scrape(port)) and 'skiplock_queue_unserved_jobs' in t and t,
                     20, "the metrics")
    assert 'skiplock_queue_unserved_jobs{type="ROUTE_B"} 2.0' in text_

    second = start_pool(handlers=ROUTING_HANDLERS)
    wait_for(lambda: jobs.all_done(2, "ROUTE_B"), 20, "the second pool to run B")
    assert set(jobs.runs()) == set(served) | set(unserved)
    assert {r["pid"] for r in jobs.run_rows() if r["job_id"] in unserved} <= set(second.children())
    assert stats()["unserved"] == {}
    first.send(signal.SIGTERM)
    assert first.wait_exit(15) == 0


def test_types_and_exclude_types_narrow_what_a_pool_serves(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    sleeper = jobs.enqueue("TEST_SLEEP", {"seconds": 0}, priority=5)
    recorded = jobs.enqueue("TEST_RECORD", {})
    only = start_pool("--types", "TEST_RECORD")
    wait_for(lambda: jobs.get(recorded)["status"] == "COMPLETED", 20, "TEST_RECORD to run")
    assert (jobs.get(sleeper)["status"], jobs.get(sleeper)["attempts"]) == ("PENDING", 0)
    assert wait_for(masters, 10, "the pool's row")[0]["served"] == ["TEST_RECORD"]
    only.send(signal.SIGTERM)
    assert only.wait_exit(15) == 0

    late = jobs.enqueue("TEST_RECORD", {}, priority=9)
    start_pool(env={"SKIPLOCK_EXCLUDE_TYPES": "TEST_RECORD,TEST_FAIL"})
    wait_for(lambda: jobs.get(sleeper)["status"] == "COMPLETED", 20, "TEST_SLEEP to run")
    assert (jobs.get(late)["status"], jobs.get(late)["attempts"]) == ("PENDING", 0)
    served = wait_for(masters, 10, "the second pool's row")[0]["served"]
    assert "TEST_SLEEP" in served and not {"TEST_RECORD", "TEST_FAIL"} & set(served)


def test_a_types_entry_that_no_handler_serves_is_refused_at_start(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    for pool, fragment in (
        (start_pool("--types", "TEST_RECORD,NOPE"),
         "SKIPLOCK_TYPES / --types names NOPE, which no registered handler serves"),
        (start_pool(env={"SKIPLOCK_TYPES": "NOPE"}), "--types names NOPE"),
        (start_pool("--types", "TEST_RECORD", "--exclude-types", "TEST_RECORD"),
         "this pool would serve no job type"),
    ):
        assert pool.wait_exit(20) == 1
        out = pool.log()
        errors = [line for line in out.splitlines() if line.startswith("skiplock: error: ")]
        assert len(errors) == 1 and fragment in errors[0], out
        assert "Traceback" not in out and pool.children() == []
    assert masters() == []


def test_jobs_nobody_serves_are_parked_then_put_back_by_a_pool_that_serves_them(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    loose = [jobs.enqueue("ROUTE_B", {"i": i}) for i in range(4)]
    keyed = jobs.enqueue("ROUTE_B", {"k": 1}, concurrency_key="user:1", concurrency=1)
    first = start_pool()  # heartbeat 0.5 s: stuck timeout, grace and parking interval 3 s

    def parked() -> bool:
        return all(jobs.get(i)["heldBack"] for i in loose)

    wait_for(parked, 30, "the unserved jobs to be parked")
    first.wait_log("parked 4 job(s) that no running pool serves, until one does: ROUTE_B (4)")
    # A keyed job's "heldBack" counts its key's slot: never parked, it keeps the slot.
    assert jobs.get(keyed)["heldBack"] is None
    with jobs.engine.connect() as conn:
        assert conn.execute(text('SELECT active FROM "WorkerConcurrencyKey"')).scalar() == 1
    for i in [*loose, keyed]:
        assert (jobs.get(i)["status"], jobs.get(i)["attempts"]) == ("PENDING", 0)
    figures = stats()
    assert figures["parked"] == 4 and figures["parkedByType"] == {"ROUTE_B": 4}
    assert figures["unserved"] == {"ROUTE_B": 5} and figures["heldBack"] == 0

    second = start_pool(handlers=ROUTING_HANDLERS)
    wait_for(lambda: jobs.all_done(5, "ROUTE_B"), 30, "the second pool to run them all")
    second.wait_log("put back 4 parked job(s) of types this pool serves: ROUTE_B (4)")
    with jobs.engine.connect() as conn:
        assert conn.execute(text('SELECT active FROM "WorkerConcurrencyKey"')).scalar() == 0
    assert stats()["parked"] == 0


def test_a_hup_that_loads_a_new_type_serves_it(
    start_pool: Callable[..., Pool], jobs: Jobs, tmp_path: Path
) -> None:
    flag = tmp_path / "serve-route-c"
    pool = start_pool("--concurrency", "1", handlers=ROUTING_HANDLERS,
                      env={"ROUTING_TEST_FLAG": str(flag)})
    job_id = jobs.enqueue("ROUTE_C", {}, priority=5)
    done = jobs.enqueue("ROUTE_B", {})
    wait_for(lambda: jobs.get(done)["status"] == "COMPLETED", 20, "ROUTE_B to run")
    assert jobs.get(job_id)["status"] == "PENDING"
    flag.write_text("new code: serve ROUTE_C too")
    pool.send(signal.SIGHUP)
    pool.wait_log("this pool now serves")
    wait_for(lambda: jobs.get(job_id)["status"] == "COMPLETED", 20, "ROUTE_C to run after HUP")
    assert "ROUTE_C" in wait_for(lambda: [m for m in masters() if "ROUTE_C" in m["served"]],
                                 10, "the new served set in the process table")[0]["served"]


def test_a_schedule_whose_type_no_handler_here_serves_is_a_warning_at_start(
    start_pool: Callable[..., Pool], jobs: Jobs, tmp_path: Path
) -> None:
    schedule = tmp_path / "schedules.toml"
    schedule.write_text(
        '[[schedule]]\nname = "nightly-digest"\ncron = "0 3 * * *"\ntype = "SEND_DIGEST"\n\n'
        '[[schedule]]\nname = "records"\ncron = "0 4 * * *"\ntype = "TEST_RECORD"\n')
    pool = start_pool("--schedule-file", str(schedule))
    log = pool.wait_log("running 2 schedules")
    log = pool.wait_log("which no handler of this pool serves")
    assert ("schedule nightly-digest enqueues SEND_DIGEST, which no handler of this pool "
            "serves: its jobs wait (PENDING) for a pool that serves SEND_DIGEST") in log
    assert "schedule records enqueues" not in log
    assert pool.proc.poll() is None


def test_every_failure_line_says_why_in_text_and_in_json(
    start_pool: Callable[..., Pool], jobs: Jobs, database_url: str
) -> None:
    # Trust authentication ignores the password: the pool runs with one in its URL.
    url = make_url(database_url).set(password="s3cretpw").render_as_string(hide_password=False)
    dead = jobs.enqueue("TEST_FAIL", {"retry": False, "error":
                                      "refused by s3cretpw at postgresql://u:hunter2@h/db\n"
                                      "second line"})
    retried = jobs.enqueue("TEST_FAIL", {"raise": "kaboom"}, max_attempts=2)
    long_ = jobs.enqueue("TEST_FAIL", {"retry": False, "error": "x" * 5000})
    pool = start_pool("--concurrency", "1", url=url)
    wait_for(lambda: jobs.get(long_)["status"] == "DEAD_LETTER"
             and jobs.get(dead)["status"] == "DEAD_LETTER"
             and jobs.get(retried)["attempts"] >= 1, 20, "the failures")
    log = pool.wait_log(f"job TEST_FAIL {retried} retried in")
    assert re.search(rf"job TEST_FAIL {dead} dead-lettered in \d+ ms: refused by \*\*\* at "
                     r"postgresql://u:\*\*\*@h/db second line", log), log
    assert re.search(rf"job TEST_FAIL {retried} retried in \d+ ms: ValueError: kaboom", log)
    [cut] = re.findall(rf"job TEST_FAIL {long_} dead-lettered in \d+ ms: (x+…)", log)
    assert len(cut) == 300
    assert "s3cretpw" not in log and "hunter2" not in log
    pool.send(signal.SIGTERM)
    assert pool.wait_exit(15) == 0

    again = jobs.enqueue("TEST_FAIL", {"retry": False, "error": "json s3cretpw"})
    in_json = start_pool("--concurrency", "1", "--log-format", "json", url=url)
    wait_for(lambda: jobs.get(again)["status"] == "DEAD_LETTER", 20, "the JSON pool's failure")
    line = in_json.wait_log(f"job TEST_FAIL {again} dead-lettered")
    [entry] = [json.loads(x) for x in line.splitlines()
               if x.startswith("{") and f"{again} dead-lettered" in x]
    assert entry["level"] == "warning" and entry["msg"].endswith(": json ***")
    assert (entry["job_id"], entry["outcome"]) == (again, "dead_lettered")


def test_a_hup_whose_modules_no_longer_import_leaves_the_children_as_they_are(
    start_pool: Callable[..., Pool], jobs: Jobs, tmp_path: Path
) -> None:
    flag = tmp_path / "deployment"
    pool = start_pool("--concurrency", "2", handlers=ROUTING_HANDLERS,
                      env={"ROUTING_TEST_FLAG": str(flag)})
    children = pool.wait_children(2)
    flag.write_text("broken")
    pool.send(signal.SIGHUP)
    log = pool.wait_log("cannot reload the handler modules")
    assert "this deployment's new code is broken" in log
    assert "the workers keep running the code they have" in log
    job_id = jobs.enqueue("ROUTE_B", {})
    wait_for(lambda: jobs.get(job_id)["status"] == "COMPLETED", 20, "the old children to run it")
    assert pool.children() == children and pool.proc.poll() is None


def test_the_built_in_handlers_serve_their_types_only_where_the_demo_domain_is(
    start_pool: Callable[..., Pool]
) -> None:
    import skiplock
    from skiplock.queue_core.database import migrate
    from skiplock.queue_core.database.scratch import scratch_database
    from tests.queue_core.helpers import sql

    with scratch_database("skiplock_no_demo") as url:  # the queue alone, as an application has it
        job_id = skiplock.enqueue("INTERPRET_EVENT", {"eventId": "e1"})
        pool = start_pool(url=url)
        pool.wait_log("this pool serves")
        [master] = wait_for(masters, 10, "the pool's row in the process table")
        assert "TEST_RECORD" in master["served"] and "INTERPRET_EVENT" not in master["served"]
        assert sql('SELECT status::text, attempts FROM "WorkerJob"') == [("PENDING", 0)]
        # The demo installed, and the event there: a HUP takes the built-in types up.
        migrate.upgrade(url, demo=True)
        sql("""INSERT INTO "User" (id, timezone) VALUES ('u1', 'UTC');
               INSERT INTO "Event" (id, "userId", text, "occurredAt")
               VALUES ('e1', 'u1', 'A long walk with Sam', now())""")
        pool.send(signal.SIGHUP)
        wait_for(lambda: sql('SELECT status::text FROM "WorkerJob" WHERE id = :id',
                             id=job_id) == [("COMPLETED",)], 30, "the built-in handler to run it")
        wait_for(lambda: "INTERPRET_EVENT" in masters()[0]["served"], 15,
                 "the process table to show what the pool serves now")
