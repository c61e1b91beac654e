"""The README's "Long jobs that resume" snippet, exactly as written: a run that fails
halfway leaves its checkpoint, and the retry does only the batches after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import skiplock
from skiplock import testing
from skiplock.handlers import unregister_handler
from skiplock.queue_core.features import checkpoints
from tests.packaging.snippets import snippet
from tests.queue_core.helpers import row


@pytest.fixture
def reindex() -> Iterator[list[int]]:
    done: list[int] = []
    failed: list[int] = []

    def reindex_batch(batch: int) -> None:
        if batch == 3 and not failed:  # the first run breaks in its fourth batch
            failed.append(batch)
            raise ConnectionError("the search cluster went away")
        done.append(batch)

    exec(snippet("checkpoints"), {"reindex_batch": reindex_batch})
    yield done
    unregister_handler("REINDEX")
    checkpoints.reset()


def test_the_checkpoint_snippet_resumes_after_the_batches_that_were_done(
    reindex: list[int],
) -> None:
    job_id = skiplock.enqueue("REINDEX", {"batches": 6})
    report = testing.drain(run_scheduled=True)
    assert report.outcomes == {"retried": 1, "completed": 1}
    assert reindex == [0, 1, 2, 3, 4, 5]  # each batch once: the retry began at 3
    r = row(job_id)
    assert (r.st, r.attempts, r.checkpoint) == ("COMPLETED", 2, None)
