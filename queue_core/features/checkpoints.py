"""`skiplock.checkpoint(state)`: where a long job is, so that its next run resumes there.

    @skiplock.handler("REINDEX")
    def reindex(payload, job_id):
        start = skiplock.last_checkpoint() or 0     # None on the first run
        for i in range(start, payload["batches"]):
            reindex_batch(i)
            skiplock.checkpoint(i + 1)              # batch i is done
        return skiplock.JobResult(success=True)

Called from inside a handler, with a small JSON value (a cursor: at most
`MAX_CHECKPOINT_BYTES` of JSON). It follows `skiplock.progress`'s path
(queue_core/features/job_progress.py): in a pool child the latest value goes
to the master over the child's pipe (a few times a second at most: a handler
may call it every step), and the master writes it into the job's
"checkpoint" column with the next heartbeat, fenced by holder and attempt,
with no statement of its own. It is also written with whatever ends the run
short of a completion: the child writes its latest with a failure or a
snooze, the master the latest it heard with the interruption or failure of a
child that died, was stopped or overran its timeout. The next run of the job
reads it with `last_checkpoint()`; a run that was cut short (a deploy) costs
no attempt, the first three times (queue_core/accounting.py).

What a run can lose: the checkpoints of its last moments before a SIGKILL
(what the child had not yet sent: at most `pool/progress_reporter.py`'s
interval), and, if the master too dies, what it had not yet written (at most
one heartbeat interval). A checkpoint must therefore say what is done, never
what is about to be: the next run may repeat the steps after it.

A completion clears the checkpoint (nothing is left to resume; the column
would only weigh on the table); a failure, an interruption, a snooze, a
cancel and a dead letter keep it, and `skiplock retry` of a dead letter
resumes from it unless `--from-start`.

Outside a pool (a handler called directly in a test, `skiplock.testing.drain`)
the same calls work in-process: `drain` hands the claimed job's checkpoint to
`last_checkpoint()` and writes the run's latest with a failure or a snooze.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from skiplock.queue_core.errors import InvalidJob

# A cursor, not the work's data: the column is read by every claim of the job and
# written by heartbeats, and it crosses the child's pipe several times a second.
MAX_CHECKPOINT_BYTES = 8 * 1024
# Deeper JSON is a mistake; Python's decoder would refuse it near 1000 levels, on
# the next run, where it would fail the job instead of this call.
MAX_CHECKPOINT_DEPTH = 64

Reporter = Callable[[str], None]

_encode = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode

_reporter: Reporter | None = None
# The job whose handler runs now, the checkpoint it started with (decoded), and the
# one it took since (JSON text, None until it takes one).
_job_id: str | None = None
_resumed: Any = None
_taken: str | None = None


def checkpoint(state: Any) -> None:
    """Record where the running job is: its next run, after an interruption or a
    failure, gets `state` back from `last_checkpoint()`. `state` must be JSON (a
    number, a string, a list or a dict of those), at most 8 KiB encoded; `None`
    makes the next run start over."""
    global _taken
    text = encode(state)
    _taken = text
    if _reporter is not None:
        _reporter(text)


def last_checkpoint() -> Any:
    """The running job's latest checkpoint: the last `checkpoint(state)` of this run,
    else the one its previous run left; None on a first run (and outside a job)."""
    if _taken is not None:
        return json.loads(_taken)  # a copy: what the handler changes later is not in it
    return _resumed


def encode(state: Any) -> str:
    """`state` as the JSON text stored; InvalidJob, with the reason, for what cannot be
    stored and read back exactly."""
    try:
        text = _encode(state)
    except (TypeError, ValueError, RecursionError) as exc:  # NaN, an object, a loop,
        # an integer of 4300+ digits, a C-level recursion
        why = "it nests far too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InvalidJob(f"a checkpoint must be JSON: {why}") from None
    # Every container writes one opening bracket: few of them cannot nest deeply.
    if text.count("{") + text.count("[") > MAX_CHECKPOINT_DEPTH and _too_deep(state):
        raise InvalidJob(f"a checkpoint must nest at most {MAX_CHECKPOINT_DEPTH} levels deep")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidJob("a checkpoint must hold text only: it has a lone UTF-16 surrogate "
                         "(bytes that were not UTF-8), which PostgreSQL cannot store") from None
    if size > MAX_CHECKPOINT_BYTES:
        raise InvalidJob(f"a checkpoint is a cursor, at most {MAX_CHECKPOINT_BYTES} bytes of "
                         f"JSON; this one is {size}: keep the work's data in tables of "
                         "your own, and checkpoint where it is")
    if "\\u0000" in text and _has_nul(state):
        raise InvalidJob("a checkpoint must not hold a NUL character, which PostgreSQL "
                         "cannot store")
    return text


def _children(item: Any) -> list[Any]:
    if isinstance(item, dict):
        return [*item.keys(), *item.values()]
    return list(item) if isinstance(item, (list, tuple)) else []


def _too_deep(state: Any) -> bool:
    """Whether containers nest deeper than the limit (a loop, no recursion to overflow)."""
    stack = [(state, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_CHECKPOINT_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in _children(item)
                     if isinstance(child, (dict, list, tuple)))
    return False


def _has_nul(state: Any) -> bool:
    stack = [state]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        else:
            stack.extend(_children(item))
    return False


# -- for the code that runs handlers -------------------------------------------------


def begin(job_id: str, resumed: Any) -> None:
    """A handler is about to run `job_id`, whose previous run left `resumed`."""
    global _job_id, _resumed, _taken
    _job_id, _resumed, _taken = job_id, resumed, None


def taken(job_id: str) -> str | None:
    """The checkpoint `job_id`'s handler took in this run, as JSON text, to be written
    with whatever ends the run; None if it took none (the row's stays)."""
    return _taken if job_id == _job_id else None


def set_reporter(reporter: Reporter | None) -> None:
    """Where checkpoints go besides (a pool child sets its pipe to the master)."""
    global _reporter
    _reporter = reporter


def reset() -> None:
    global _job_id, _resumed, _taken
    _job_id, _resumed, _taken = None, None, None
