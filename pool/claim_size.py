"""How many jobs a child claims at once: adapted to the backlog and to the jobs.

One claim statement per job is a round trip and a scan of the claim index
per job; with a deep queue of short jobs a child should take many at once.
But jobs a child holds wait for it while another child may be idle, so a
claim covers about `TARGET_S` of work: fast jobs in bites of up to
`MAX_ADAPTIVE`, jobs longer than the target one at a time.

The target is 500 ms because each claim has a fixed cost that CPU-bound jobs
pay for: on the server, planning and running the batch statement and its
commit, whatever its size, once the jobs between claims have pushed the
server's code out of the caches; in the child, the statement built, its
answer read and the master told; in the master, one wake-up to read the
batch's messages. Each longer target, measured with CPU-bound jobs on 2 cores
(`python -m bench peers` and `python -m bench cpu`), cut the CPU per job of
the server and of the child and raised the rate against the bare body's,
until the gain was under a percent of the two cores (the figures:
docs/benchmarks.md, "Figures behind the code"). What it costs,
bounded by the target: in a busy pool a job waits up to the target behind the
batches the children hold (a higher priority only puts it first in the next
claim). A child that dies gives back what it claimed and never started; what
it ran and had not committed is bounded by `--commit-delay-ms`, not by the
claim (pool/group_commit.py).

A queue that is not deep never sees the target: a claim never takes more than
its child's share of the ready jobs, counted as it runs (queue_core/sql.py,
`_CLAIM`, its `take`), so that a burst, or a deep queue that runs dry, ends on every child
at about the same time and no child is left holding a full bite while its
siblings are idle. So a claim that came back full is followed by one of the
whole target at once: the share, not the bite, keeps the children even. (The
bite used to double from one instead, as claims came back full: 1, 2, 4, 8,
16, 32, then 50 jobs of 10 ms, five small claims of about the same fixed cost
as a full one, paid each time a pool starts on a backlog or a burst arrives;
docs/benchmarks.md, "Figures behind the code".) After a short claim the
next asks for what that one found, and an idle pool claims one job at a time:
until a job of the child has run, the target cannot be turned into a count.
A full claim leaves the count to the next claim, turned from the target with
the durations known then: the first claim of a burst into an idle pool is
counted before its job has run, and the bite after it used to be one job
again, a claim and a flushed commit more per child for every burst
(docs/benchmarks.md, "A burst of CPU-heavy jobs").

`--batch-size N` (N >= 1) keeps the earlier fixed rule instead: N after a full
claim, 1 after a short one.
"""

from __future__ import annotations

MAX_ADAPTIVE = 100
TARGET_S = 0.5
_WEIGHT = 0.2  # of the newest duration in the moving averages


class Durations:
    """Moving averages of how long jobs run, per type and overall."""

    def __init__(self) -> None:
        self.by_type: dict[str, float] = {}
        self.overall: float | None = None

    def observe(self, job_type: str, seconds: float) -> None:
        known = self.by_type.get(job_type)
        self.by_type[job_type] = seconds if known is None else known + _WEIGHT * (seconds - known)
        overall = self.overall
        self.overall = seconds if overall is None else overall + _WEIGHT * (seconds - overall)

    def expected(self, job_type: str) -> float | None:
        return self.by_type.get(job_type)


class ClaimSize:
    def __init__(self, batch_size: int, durations: Durations) -> None:
        self.fixed = batch_size if batch_size >= 1 else None
        self.durations = durations
        self.current = 1
        # The last claim found all of a bite of more than one: the queue looks deep
        # (pool/ahead.py sends the next claim ahead only then; an idle pool's claims
        # of one would each cost a second statement for nothing).
        self.last_full = False
        self.asked = 1  # what the last `limit()` gave: the claim's own size

    def limit(self, most: int | None = None) -> int:
        """The size of the claim about to be made: never more than `most` (the jobs a
        child has left before it recycles), when given."""
        self.asked = min(self.current, self.cap())
        if most is not None:
            self.asked = max(1, min(self.asked, most))
        return self.asked

    def cap(self) -> int:
        if self.fixed is not None:
            return self.fixed
        mean = self.durations.overall
        if mean is None:
            return 1
        return max(1, min(MAX_ADAPTIVE, int(TARGET_S / max(mean, 1e-6))))

    def after_claim(self, got: int) -> None:
        """Size the next claim from what a claim of `limit()` returned. Judged by what
        that claim asked for: the cap may have moved with the jobs run since."""
        limit = self.asked
        self.last_full = limit > 1 and got >= limit
        if got < limit:
            self.current = max(1, got) if self.fixed is None else 1
        elif self.fixed is not None:
            self.current = self.fixed
        else:
            self.current = MAX_ADAPTIVE  # `limit()` caps it with the durations of then
