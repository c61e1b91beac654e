"""The queue's work of several statements, written once for blocking and async callers.

An enqueue with idempotency keys, a cancel, a wait are each a few statements
whose order depends on what the previous ones answered. Each is written as a
generator that yields what to do next (a statement and its parameters, or a
pause) and is sent back the answer, or has the error thrown in at the point
where it yielded, exactly as if it had run the statement itself. It does no
I/O of its own, so the same generator, with its one copy of the statements,
their parameters and the reading of their answers, runs on a blocking
connection (`run`) and on an async one (`arun`): the two paths cannot drift.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

Step = TypeVar("Step")
Done = TypeVar("Done")


def run(steps: Generator[Step, Any, Done], perform: Callable[[Step], Any]) -> Done:
    """Perform each step in turn; the generator's return value is the answer."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        finally:
            error = None  # no reference cycle through the traceback
        try:
            reply = perform(step)
        except Exception as exc:
            # Into the generator, where it yielded: it handles it as if it had run the
            # statement itself, or lets it out (through `throw`, to our caller).
            error, reply = exc, None


async def arun(steps: Generator[Step, Any, Done],
               perform: Callable[[Step], Awaitable[Any]]) -> Done:
    """`run` for an async caller: each step is awaited."""
    reply: Any = None
    error: Exception | None = None
    while True:
        try:
            step = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        finally:
            error = None
        try:
            reply = await perform(step)
        except Exception as exc:
            error, reply = exc, None
