"""The process table and metrics observers, driven with snapshots as the master sends them."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import pytest

from skiplock.ops import processes
from skiplock.pool.metrics import MetricsObserver
from skiplock.pool.observer import ChildInfo, PoolSnapshot
from skiplock.pool.operations import build_observers
from skiplock.pool.process_table import ProcessTableWriter
from skiplock.queue_core import enqueue
from skiplock.queue_core.config import load_settings
from skiplock.queue_core.errors import ConfigurationError
from tests.ops.helpers import run
from tests.queue_core.helpers import sql
from tests.support import free_port


def snapshot(master: str, *children: ChildInfo, state: str = "running") -> PoolSnapshot:
    return PoolSnapshot(master, "host-a", 100, time.time() - 60, len(children), state, children)


def child(index: int, job: str | None = None, job_type: str | None = None) -> ChildInfo:
    return ChildInfo(index, 200 + index, f"host-a:{200 + index}:boot", time.time() - 30,
                     job, job_type, time.time() - 2 if job else None)


def test_the_registry_keeps_the_table_and_ps_shows_it():
    registry = ProcessTableWriter(heartbeat_s=0.0, stale_after_s=30)
    registry.on_start(snapshot("m1", child(1, "job-1", "A"), child(2)))
    rows = processes.list_processes()
    assert [(r.kind, r.pid, r.job_id) for r in rows] == [
        ("master", 100, None), ("child", 201, "job-1"), ("child", 202, None)]
    registry.on_tick(snapshot("m1", child(2, "job-2", "B"), child(3)))  # child 1 was replaced
    rows = processes.list_processes()
    assert [(r.pid, r.job_id) for r in rows] == [(100, None), (202, "job-2"), (203, None)]
    shown = run("ps")
    assert shown.output.startswith("1 pools on 1 hosts, 2 children, 1 running a job\n")
    assert "host-a  pid 100  master (running, 2 children)" in shown.output
    assert "worker 2  pid 202" in shown.output and "B job-2 for" in shown.output
    data = json.loads(run("ps", "--json").output)
    assert len(data) == 3 and not any(d["stale"] for d in data)
    registry.on_stop(snapshot("m1", state="stopping"))
    assert processes.list_processes() == []
    assert "no pools are running" in run("ps").output


def test_a_master_that_stopped_heartbeating_is_pruned_with_its_children():
    ProcessTableWriter(0.0, 30).on_start(snapshot("dead", child(1), child(2)))
    sql("""UPDATE "WorkerProcess" SET "heartbeatAt" = now() - interval '1 hour'""")
    assert "STALE" in run("ps").output
    ProcessTableWriter(0.0, 30).on_start(snapshot("alive", child(1)))
    assert {r.id for r in processes.list_processes()} == {"alive", "host-a:201:boot"}
    sql("""UPDATE "WorkerProcess" SET "heartbeatAt" = now() - interval '1 hour'""")
    result = run("recover", "--stuck-timeout", "60s")
    assert result.exit_code == 0 and "pruned 1 pools" in result.output
    assert processes.list_processes() == []


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def test_metrics_count_hooks_and_read_the_queue():
    enqueue("A", {})
    enqueue("A", {}, delay=60)
    sql("""INSERT INTO "WorkerJobPause" (type) VALUES ('B')""")
    port = free_port()
    metrics = MetricsObserver(port, refresh_s=3600)
    c = child(1, "j", "A")
    metrics.on_start(snapshot("m", c))
    try:
        metrics.on_job_started(c, "j1", "A", 1)
        metrics.on_job_finished(c, "j1", "A", "completed", 0.2)
        metrics.on_job_started(c, "j2", "A", 1)
        metrics.on_job_finished(c, "j2", "A", "retried", 1.5)
        metrics.on_job_finished(c, "j3", "A", "dead_lettered", 3.0)
        metrics.on_job_finished(c, "j4", "A", "released", 3.0)
        metrics.on_child_exit(c, "crashed")
        metrics.on_child_exit(c, "stopped")
        text = scrape(port)
    finally:
        metrics.on_stop(snapshot("m", state="stopping"))
    for line in (
        'skiplock_jobs_started_total{type="A"} 2.0',
        'skiplock_jobs_completed_total{type="A"} 1.0',
        'skiplock_jobs_failed_total{type="A"} 2.0',
        'skiplock_jobs_retried_total{type="A"} 1.0',
        'skiplock_jobs_dead_lettered_total{type="A"} 1.0',
        'skiplock_job_duration_seconds_count{type="A"} 3.0',
        'skiplock_child_restarts_total{cause="crashed"} 1.0',
        'skiplock_queue_jobs{status="PENDING",type="A"} 2.0',
        'skiplock_queue_ready_jobs{type="A"} 1.0',
        'skiplock_queue_paused{type="B"} 1.0',
        "skiplock_pool_children 1.0",
        "skiplock_pool_busy_children 1.0",
    ):
        assert line in text, line
    assert "skiplock_queue_oldest_ready_age_seconds" in text
    assert 'cause="stopped"' not in text


def test_build_observers_follows_the_settings(tmp_path):
    plain = build_observers(load_settings())
    assert {type(o).__name__ for o in plain} == {"ProcessTableWriter", "ScheduleObserver"}
    path = tmp_path / "s.toml"
    path.write_text('[[schedule]]\nname = "n"\ncron = "@daily"\ntype = "T"\n')
    full = build_observers(load_settings(metrics_port=free_port(), schedule_file=str(path)))
    assert {type(o).__name__ for o in full} == {"ProcessTableWriter", "ScheduleObserver",
                                                "MetricsObserver"}
    for observer in full:
        observer.on_stop(snapshot("m", state="stopping"))


def test_a_metrics_port_that_is_taken_fails_before_the_pool_starts():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            build_observers(load_settings(metrics_port=port))


def test_a_bad_schedule_file_fails_before_the_pool_starts(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[schedule]]\nname = "n"\ncron = "61 * * * *"\ntype = "T"\n')
    with pytest.raises(ConfigurationError, match="minute 61 is outside 0-59"):
        build_observers(load_settings(schedule_file=str(path)))


def test_a_forked_child_does_not_keep_the_metrics_socket():
    import os

    metrics = MetricsObserver(free_port())
    metrics.serve()
    server = metrics._server
    try:
        pid = os.fork()
        if pid == 0:  # the child: its copy of the listening socket is closed
            os._exit(0 if metrics._server is None and server.socket.fileno() == -1 else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert metrics._server is server and server.socket.fileno() >= 0  # the master keeps it
    finally:
        metrics.on_stop(snapshot("m", state="stopping"))
