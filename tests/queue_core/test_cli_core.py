"""The core commands, through click's runner and through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from skiplock.cli import main
from skiplock.queue_core import config
from tests.queue_core.helpers import count, row, sql

runner = CliRunner()


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None):
    config.clear_cache()
    result = runner.invoke(main, list(args), input=input, env=env, catch_exceptions=False)
    config.clear_cache()
    return result


def skiplock(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skiplock", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_enqueue_prints_the_job_id_alone():
    result = skiplock("enqueue", "INTERPRET_EVENT", '{"eventId": "evt_1"}', "--priority", "3",
                      "--delay", "30s", "--key", "k", "--max-attempts", "5", "--user-id", "u1")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert result.stdout == job_id + "\n"
    r = row(job_id)
    assert (r.type, r.priority, r.idempotencyKey, r.maxAttempts, r.userId) == (
        "INTERPRET_EVENT", 3, "k", 5, "u1")
    assert 29 <= (r.availableAt - r.createdAt).total_seconds() <= 31
    again = skiplock("enqueue", "INTERPRET_EVENT", '{"eventId": "evt_1"}', "--key", "k")
    assert again.stdout.strip() == job_id


def test_enqueue_reads_the_payload_from_stdin():
    result = run("enqueue", "X", "-", "--any-type", input='{"from": "stdin"}')
    assert result.exit_code == 0
    assert row(result.output.strip()).payload == {"from": "stdin"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "X", "{not json", "--any-type"], "payload is not valid JSON"),
        (["enqueue", "X", "[1, 2]", "--any-type"], "must be a JSON object, not an array"),
        (["enqueue", "X", "null", "--any-type"], "must be a JSON object, not null"),
        (["enqueue", "NOPE", "{}"], "unknown job type 'NOPE'"),
        (["enqueue", "", "{}", "--any-type"], "job type must be a non-empty string"),
        (["enqueue", "T" * 201, "{}", "--any-type"], "limit is 200"),
        (["enqueue", "X", "{}", "--any-type", "--max-attempts", "-2"], "between 1 and 1000"),
        (["enqueue", "INTERPRET_EVENT", '{"eventID": "e"}'], "missing field 'eventId'"),
        (["enqueue", "X", "@/nonexistent/file.json", "--any-type"], "cannot read payload file"),
    ],
)
def test_bad_input_is_one_line_exit_1_and_no_row(args, message):
    result = run(*args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skiplock: error: ")
    assert message in lines[0]
    assert count() == 0


def test_payload_over_the_configured_limit_is_refused():
    result = run("enqueue", "X", json.dumps({"s": "x" * 200}), "--any-type",
                 env={"SKIPLOCK_MAX_PAYLOAD_BYTES": "100"})
    assert result.exit_code == 1
    assert "the limit is 100" in result.output
    assert count() == 0


def test_usage_errors_exit_2():
    assert run("enqueue", "X").exit_code == 2
    assert run("enqueue", "X", "{}", "--delay", "5x").exit_code == 2
    assert run("enqueue", "X", "{}", "--priority", "high").exit_code == 2
    assert run("retry").exit_code == 2


def test_unreachable_database_is_one_line_without_traceback_or_password():
    result = skiplock("enqueue", "X", "{}", "--any-type",
                      env={"DATABASE_URL": "postgresql://alice:s3cret-pw@127.0.0.1:1/nowhere"})
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot use the database at" in lines[0]
    assert "s3cret-pw" not in result.stderr and "Traceback" not in result.stderr
    assert "alice:***@127.0.0.1:1/nowhere" in lines[0]


def test_job_shows_everything_and_unknown_ids_fail():
    job_id = run("enqueue", "X", '{"a": "b"}', "--any-type").output.strip()
    sql("""UPDATE "WorkerJob" SET "lastError" = :e WHERE id = :id""",
        e="line one\nline two", id=job_id)
    shown = run("job", job_id)
    assert shown.exit_code == 0
    assert job_id in shown.output and "line one\nline two" in shown.output
    as_json = json.loads(run("job", job_id, "--json").output)
    assert as_json["payload"] == {"a": "b"} and as_json["status"] == "PENDING"
    missing = run("job", "nope")
    assert missing.exit_code == 1 and "no job with id 'nope'" in missing.output


def test_stats_retry_recover_and_cleanup():
    run("enqueue", "X", "{}", "--any-type", "--max-attempts", "1")
    from skiplock.queue_core import claim, fail

    [job] = claim("w")
    fail(job, "boom")
    stats = json.loads(run("stats", "--json").output)
    assert stats["deadLetter"] == 1 and stats["pending"] == 0
    assert "dead letter" in run("stats").output
    assert run("retry", "--all-dead").output.strip() == "retried 1 jobs"
    assert row(job.id).st == "PENDING"
    [job] = claim("w")
    sql("""UPDATE "WorkerJob" SET "lockedAt" = now() - interval '1 hour', interruptions = 3""")
    assert "recovered 1 jobs" in run("recover", "--stuck-timeout", "5m").output
    # attempts and free interruptions were used up, so the rescued job was
    # dead-lettered: old enough at 0s
    assert run("cleanup", "--older-than", "0s").stdout.strip() == "deleted 1 jobs"


def test_help_explains_every_flag():
    result = run("enqueue", "--help")
    assert result.exit_code == 0
    for flag in ("--priority", "--delay", "--key", "--max-attempts", "--user-id", "--handlers"):
        assert flag in result.output


@pytest.mark.parametrize("timeout", ["1s", "0", "14s"])
def test_recover_refuses_a_stuck_timeout_under_three_heartbeats(timeout: str) -> None:
    # The worker's own rule: with heartbeats every 5 s, a lease younger than 15 s
    # may belong to a live job, which would be rescued and run twice.
    sql('INSERT INTO "WorkerJob" (id, type, payload, status, "lockedBy", "lockedAt", attempts) '
        "VALUES ('live', 'T', '{}', 'PROCESSING', 'h:1:x', now() - interval '2 seconds', 1)")
    result = run("recover", "--stuck-timeout", timeout, env={"SKIPLOCK_HEARTBEAT_S": "5"})
    assert result.exit_code == 2
    assert "shorter than 3 heartbeats (15s" in result.output
    assert row("live").st == "PROCESSING"
    assert run("recover", "--stuck-timeout", "15s",
               env={"SKIPLOCK_HEARTBEAT_S": "5"}).exit_code == 0
