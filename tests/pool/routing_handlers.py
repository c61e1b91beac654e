"""A second deployment's handlers: ROUTE_B, which tests.pool.sample_handlers lacks.

A pool started with `--handlers tests.pool.routing_handlers` serves ROUTE_B (and
the built-in types); one started with the sample handlers does not. A run is
recorded in `pool_test_runs`, in the job's transaction, as the sample handlers do.
"""

from __future__ import annotations

import os
import time
from typing import Any

from sqlalchemy import text

from skiplock.handlers import JobResult, handler
from skiplock.queue_core.database import db


@handler("ROUTE_B")
def route_b(payload: dict[str, Any], job_id: str) -> JobResult:
    started = time.time()
    with db.transaction() as conn:
        conn.execute(
            text("INSERT INTO pool_test_runs (job_id, pid, started, finished) "
                 "VALUES (:j, :p, to_timestamp(:s), clock_timestamp())"),
            {"j": job_id, "p": os.getpid(), "s": started},
        )
    return JobResult(True)


# ROUTE_C is registered only when the file that ROUTING_TEST_FLAG names exists at
# import: a deployment whose new code adds a type, loaded by a HUP. When the file
# says "broken", the module no longer imports: a deployment of broken code.
_flag = os.environ.get("ROUTING_TEST_FLAG")
if _flag and os.path.exists(_flag):
    with open(_flag) as flag:
        if flag.read().strip() == "broken":
            raise RuntimeError("this deployment's new code is broken")

    @handler("ROUTE_C")
    def route_c(payload: dict[str, Any], job_id: str) -> JobResult:
        return route_b(payload, job_id)
