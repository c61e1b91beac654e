"""Progress from inside a handler reaches the job row with the heartbeat, and shows in
`skiplock job`, `skiplock ps` and the metrics of a real pool."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from skiplock import progress
from skiplock.cli import main
from skiplock.queue_core import config
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features import job_progress
from tests.features.conftest import FEATURE_HANDLERS
from tests.pool.conftest import Jobs, Pool, wait_for
from tests.support import free_port

pytestmark = pytest.mark.timeout(90)


def _cli(*args: str) -> str:
    config.clear_cache()
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_running_jobs_progress_shows_in_job_ps_and_metrics(
    start_pool: Callable[..., Pool], jobs: Jobs
) -> None:
    port = free_port()
    pool = start_pool("--concurrency", "1", "--metrics-port", str(port),
                      handlers=FEATURE_HANDLERS)
    job_id = jobs.enqueue("TEST_PROGRESS", {"seconds": 60})
    wait_for(lambda: jobs.get(job_id)["progressMessage"] == "halfway", 15,
             "the progress to reach the row with a heartbeat")
    assert jobs.get(job_id)["progress"] == 0.5
    shown = _cli("job", job_id)
    assert "progress" in shown and "0.5" in shown and "halfway" in shown
    wait_for(lambda: "[50% halfway]" in _cli("ps"), 15, "skiplock ps to show it")

    def metric() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
            return answer.read().decode()

    line = 'skiplock_worker_job_progress{type="TEST_PROGRESS",worker="0"} 0.5'
    wait_for(lambda: line in metric(), 15, "the metric")
    pool.kill()


def test_outside_a_pool_the_last_report_is_kept_and_bad_values_are_refused():
    job_progress.reset()
    progress(0.25, "a quarter")
    assert job_progress.last_reported() == (0.25, "a quarter")
    with pytest.raises(InvalidJob):
        progress(1.5)
    with pytest.raises(InvalidJob):
        progress(float("nan"))
