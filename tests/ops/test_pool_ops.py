"""The operator's view of real pools: metrics over HTTP, `ps` across pools, a SIGKILLed pool.

Pools are started as `skiplock worker` subprocesses in their own session,
waited on by polling the database (or the metrics endpoint) to a deadline,
and their process groups are always killed in teardown.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skiplock.queue_core import enqueue
from tests.ops.helpers import run
from tests.support import free_port, scrape, wait_for

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.ops.handlers_for_tests"


@pytest.fixture
def start_pool(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"pool-{len(started)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "skiplock", "worker", "--handlers", HANDLERS,
             "--heartbeat", "0.5", *args],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        started.append(process)
        return process

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def masters() -> list[dict[str, Any]]:
    return [p for p in json.loads(run("ps", "--json").output) if p["kind"] == "master"]


def metric(text: str, name: str) -> float | None:
    found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_metrics_are_served_over_http_while_a_pool_runs(start_pool):
    port = free_port()
    for i in range(5):
        enqueue("OPS_OK", {"i": i})
    enqueue("OPS_FAIL", {})
    start_pool("-c", "2", "--metrics-port", str(port))

    def counted() -> str:
        text = scrape(port)
        done = metric(text, 'skiplock_jobs_completed_total{type="OPS_OK"}')
        dead = metric(text, 'skiplock_jobs_dead_lettered_total{type="OPS_FAIL"}')
        return text if done == 5 and dead == 1 else ""

    text = wait_for(counted, timeout=60)
    assert metric(text, 'skiplock_jobs_started_total{type="OPS_OK"}') == 5
    assert metric(text, 'skiplock_jobs_failed_total{type="OPS_FAIL"}') == 1
    assert metric(text, 'skiplock_job_duration_seconds_count{type="OPS_OK"}') == 5
    assert metric(text, "skiplock_pool_children") == 2
    assert "skiplock_queue_oldest_ready_age_seconds" in text
    # Bound to 127.0.0.1 only, unless --metrics-host says otherwise.
    addresses = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)
                 if info[0] == socket.AF_INET} - {"127.0.0.1"}
    for address in addresses:
        with pytest.raises(OSError), socket.create_connection((address, port), timeout=1):
            pass


def test_ps_sees_two_pools_and_loses_the_one_that_was_sigkilled(start_pool):
    job = enqueue("OPS_SLOW", {"seconds": 60})
    first = start_pool("-c", "1")
    second = start_pool("-c", "2")
    wait_for(lambda: len(masters()) == 2)
    pids = {m["pid"] for m in masters()}
    assert pids == {first.pid, second.pid}
    rows = wait_for(lambda: [p for p in json.loads(run("ps", "--json").output)
                             if p["jobId"] == job])
    assert rows[0]["kind"] == "child" and rows[0]["jobType"] == "OPS_SLOW"
    wait_for(lambda: len([p for p in json.loads(run("ps", "--json").output)
                          if p["kind"] == "child"]) == 3)
    text = run("ps").output
    assert f"pid {first.pid}  master" in text and f"OPS_SLOW {job}" in text

    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    # The live master prunes the dead one once its heartbeat is older than the
    # stuck timeout (6 heartbeats of 0.5 s); its children go with it.
    wait_for(lambda: [m["pid"] for m in masters()] == [second.pid], timeout=30)
    left = json.loads(run("ps", "--json").output)
    assert {p["masterId"] for p in left if p["kind"] == "child"} == {masters()[0]["id"]}
    assert len(left) == 3


def test_a_clean_stop_removes_the_pool_from_ps(start_pool):
    pool = start_pool("-c", "1")
    wait_for(lambda: len(masters()) == 1)
    os.kill(pool.pid, signal.SIGTERM)
    assert pool.wait(timeout=30) == 0
    assert json.loads(run("ps", "--json").output) == []


def test_two_pools_with_one_schedule_enqueue_each_occurrence_once(start_pool, tmp_path):
    from tests.queue_core.helpers import count, sql

    schedule = tmp_path / "schedule.toml"
    schedule.write_text('[[schedule]]\nname = "tick"\ncron = "* * * * *"\ntype = "OPS_OK"\n'
                        'catch_up = "10m"\n')
    # Both masters come up after a three-minute outage of every master.
    sql("""INSERT INTO "WorkerSchedule" (name, "lastOccurrence")
           VALUES ('tick', date_trunc('minute', now()) - interval '3 minutes')""")
    start_pool("-c", "1", "--schedule-file", str(schedule))
    start_pool("-c", "1", "--schedule-file", str(schedule))
    wait_for(lambda: count("type = 'OPS_OK' AND status = 'COMPLETED'") >= 3, timeout=60)
    keys = [r[0] for r in sql("""SELECT "idempotencyKey" FROM "WorkerJob" ORDER BY 1""")]
    assert len(keys) == len(set(keys)) and 3 <= len(keys) <= 4  # 4 if a minute turned meanwhile
    assert all(key.startswith("schedule:tick:") for key in keys)


def test_job_and_pool_lines_in_json_logs(start_pool, tmp_path):
    job = enqueue("OPS_OK", {})
    pool = start_pool("-c", "1", "--log-format", "json")
    wait_for(lambda: json.loads(run("job", job, "--json").output)["status"] == "COMPLETED")
    os.kill(pool.pid, signal.SIGTERM)
    pool.wait(timeout=30)
    lines = [json.loads(line) for line in (tmp_path / "pool-0.log").read_text().splitlines()
             if line.startswith("{")]
    mine = [entry for entry in lines if entry.get("job_id") == job]
    assert len(mine) == 2, lines
    start, end = mine
    assert start["job_type"] == end["job_type"] == "OPS_OK"
    assert start["attempt"] == 1 and start["worker"] and end["duration_ms"] >= 0
    assert end["outcome"] == "completed"
    assert any("master" in entry["msg"] and "start" in entry["msg"] for entry in lines)


def test_a_running_pool_leaves_a_paused_type_pending_until_it_is_resumed(start_pool):
    from tests.queue_core.helpers import count

    assert run("pause", "OPS_OK").exit_code == 0
    held = enqueue("OPS_OK", {})
    other = enqueue("OPS_FAIL", {})
    start_pool("-c", "1", "--poll-max", "0.2")
    wait_for(lambda: json.loads(run("job", other, "--json").output)["status"] == "DEAD_LETTER")
    time.sleep(1.0)  # several more polls of an idle child: the paused job must stay
    assert json.loads(run("job", held, "--json").output)["status"] == "PENDING"
    assert run("resume", "OPS_OK").exit_code == 0
    wait_for(lambda: json.loads(run("job", held, "--json").output)["status"] == "COMPLETED")
    assert count() == 2
