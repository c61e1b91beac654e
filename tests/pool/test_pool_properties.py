"""Property: whatever JSON, text and results go through a running pool, every job ends.

Hypothesis throws arbitrary payloads (through `enqueue`, and raw through SQL
as another producer would write them), error texts and results at one pool:
no child crashes, every job reaches COMPLETED or DEAD_LETTER, and a healthy
job completes on its first attempt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from skiplock.queue_core import InvalidJob, enqueue
from skiplock.queue_core.storable import MAX_RESULT_DEPTH, storable_text
from tests.pool.conftest import SAMPLE_HANDLERS, Jobs, Pool, wait_for

pytestmark = pytest.mark.timeout(180)

HANDLERS = f"{SAMPLE_HANDLERS},tests.pool.hostile_handlers"
HOSTILE = "\x00\udc80"
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # surrogates, NUL too
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=15,
)
MODES = st.sampled_from(["result", "result", "raise", "fail"])


@st.composite
def cases(draw: st.DrawFn) -> dict[str, Any]:
    mode = draw(MODES)
    if draw(st.booleans()):  # through skiplock's enqueue: it refuses what cannot be stored
        return {"via": "enqueue", "mode": mode, "value": draw(JSON), "message": draw(ANY_TEXT)}
    # Raw, as another producer writes it: numbers too long for Python, deep nesting.
    raw = draw(st.sampled_from([
        lambda n: "9" * n,
        lambda n: "[" * n + "]" * n,
    ]))(draw(st.integers(min_value=1, max_value=6000)))
    return {"via": "sql", "mode": mode, "raw": raw}


def _state(jobs: Jobs, ids: list[str]) -> dict[str, Any]:
    with jobs.engine.connect() as conn:
        rows = conn.execute(text('SELECT id, status::text AS status, attempts, "lastError", '
                                 'result::text AS result FROM "WorkerJob" '
                                 "WHERE id = ANY(:ids)"), {"ids": ids}).mappings().all()
    return {row["id"]: row for row in rows}


def test_arbitrary_json_text_and_results_through_a_running_pool_always_end(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    pool = start_pool("--concurrency", "2", "--batch-size", "3", handlers=HANDLERS)
    children = pool.wait_children(2)

    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(cases(), min_size=1, max_size=6))
    def property_(batch: list[dict[str, Any]]) -> None:
        expected: dict[str, dict[str, Any]] = {}
        for case in batch:
            if case["via"] == "enqueue":
                payload = {"mode": case["mode"], "value": case["value"],
                           "message": case["message"]}
                try:
                    with jobs.engine.begin() as conn:
                        job_id = enqueue("TEST_ECHO", payload, max_attempts=1, conn=conn)
                except InvalidJob:
                    continue  # refused with a clear error: nothing was written
                expected[job_id] = case
            else:
                job_id = f"raw-{uuid.uuid4().hex}"
                body = f'{{"mode": "{case["mode"]}", "message": "m", "value": {case["raw"]}}}'
                jobs.execute("""INSERT INTO "WorkerJob" (id, type, payload, "maxAttempts")
                                VALUES (:id, 'TEST_ECHO', CAST(:p AS jsonb), 1)""",
                             id=job_id, p=body)
                expected[job_id] = case
        if not expected:
            return
        ids = list(expected)
        state = wait_for(lambda: (s := _state(jobs, ids)) and all(
            r["status"] in ("COMPLETED", "DEAD_LETTER") for r in s.values()) and s,
            20, "every job to end")
        for job_id, case in expected.items():
            row = state[job_id]
            assert row["attempts"] == 1, (case, row)  # no retries: nothing was anyone's fault
            raw = case.get("raw", "")
            nested = raw.startswith("[")
            if row["status"] == "DEAD_LETTER" and row["lastError"].startswith(
                    "the payload cannot be used"):
                # Only what Python cannot decode: past int()'s digit limit, or
                # nested deeper than the recursion limit leaves room for.
                assert (raw.startswith("9") and len(raw) > 4300) or (nested and len(raw) > 1800)
                continue
            assert not (raw.startswith("9") and len(raw) > 4300), (case, row)
            if case["mode"] == "result":
                assert row["status"] == "COMPLETED", (case, row)
                stored = json.loads(row["result"])
                if nested and len(raw) > 2 * (MAX_RESULT_DEPTH - 5):
                    assert "unstorable" in stored or stored[1], stored
                    continue
                assert stored[1] == storable_text(str(case.get("message", "m")) + HOSTILE,
                                                  limit=1024 * 1024)
            elif case["mode"] == "fail":
                assert row["status"] == "DEAD_LETTER", (case, row)
                assert row["lastError"] == storable_text(str(case.get("message", "m")) + HOSTILE)
            else:
                assert row["status"] == "DEAD_LETTER", (case, row)
                assert row["lastError"].startswith("RuntimeError"), row

    property_()
    assert pool.children() == children, "a child crashed"
    log = pool.log()
    assert "while running" not in log and "respawning" not in log
