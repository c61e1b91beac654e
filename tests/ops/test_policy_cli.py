"""`skiplock policy show|set|reset` through click's runner."""

from __future__ import annotations

import json

from tests.ops.helpers import one_error_line, run
from tests.queue_core.helpers import row, sql


def test_set_show_and_reset_a_types_policy_and_a_psql_row_gets_it():
    done = run("policy", "set", "SEND_EMAIL", "--concurrency", "2", "--key-field", "userId",
               "--max-attempts", "8", "--backoff", "1,5,30", "--unique-for", "10m",
               "--rate", "10/m", "--rate-key-field", "userId", "--by", "ops@host")
    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        "SEND_EMAIL: policy set by ops@host",
        "  concurrency: 2 at once per payload 'userId' (key TYPE:<userId>)",
        "  max attempts: 8", "  backoff: 1, 5, 30 s", "  unique: for 600 s after the enqueue",
        "  rate: 10/60s per payload 'userId'"]
    [shown] = json.loads(run("policy", "show", "--json").output)
    assert (shown["type"], shown["source"], shown["updatedBy"], shown["backoff"]) == (
        "SEND_EMAIL", "operator", "ops@host", [1, 5, 30])
    assert "(set by operator ops@host" in run("policy", "show", "SEND_EMAIL").output
    cleared = run("policy", "set", "SEND_EMAIL", "--clear", "rate", "--clear", "rate-key-field",
                  "--clear", "unique-for")
    assert cleared.exit_code == 0 and "rate" not in cleared.output, cleared.output
    [job] = sql("""INSERT INTO "WorkerJob" (type, payload) VALUES ('SEND_EMAIL', '{"userId": "u"}')
                   RETURNING id""")
    assert (row(job[0]).concurrencyKey, row(job[0]).maxAttempts) == ("SEND_EMAIL:u", 8)
    reset = run("policy", "reset", "SEND_EMAIL")
    assert reset.exit_code == 0 and "the operator policy is deleted" in reset.output
    missing = run("policy", "show", "SEND_EMAIL")
    assert missing.exit_code == 1 and "SEND_EMAIL has no policy" in missing.output
    assert run("policy", "reset", "SEND_EMAIL").exit_code == 1


def test_a_bad_value_is_one_line_and_changes_nothing():
    one_error_line(run("policy", "set", "SEND_EMAIL", "--rate", "ten"), "rate must be N/s")
    one_error_line(run("policy", "set", "SEND_EMAIL", "--key-field", "userId"),
                   "needs a concurrency limit")
    assert run("policy", "set", "SEND_EMAIL").exit_code == 2  # nothing to set
    assert run("policy", "show").output.strip() == "no job type has a policy"
