"""Rate limits per time window: at most N starts of a key in any window, on every host.

    skiplock.enqueue("CALL_API", payload, rate="10/m", rate_key="api:42")

    @skiplock.handler("SYNC_USER", rate="100/h", rate_key="userId")

A start is a claim: a retry, a rescue or a snooze runs the job again, and
each run counts. In every window of the period (any (t - P, t]), at most N
jobs of the key start. The jobs of a key waiting for their window are held
back ("heldBack" false), outside the claim's index: a key's backlog costs the
claim nothing. Everything is enforced by triggers (migration 0018_rates, which
says how: tokens that a start frees one period later), so a row written by
psql or by the seed's Prisma client with "rate"/"rateKey" set is limited the
same, and a rate combines with a concurrency limit (both hold).

Where the rate and the key come from, first match wins:
1. `enqueue(..., rate=R, rate_key=K)`;
2. `rate=R` alone: the key of the type's registration, else the type;
3. `rate_key=K` alone: the type's registered rate;
4. nothing: the type's registered default (`@handler(type, rate=R,
   rate_key=FIELD)`), keyed `TYPE:payload[FIELD]` (a field, or a function of
   the payload), or `TYPE` without one.
A key's rate is its latest enqueue's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from skiplock.queue_core import sql
from skiplock.queue_core.database.db import Joinable, connect
from skiplock.queue_core.errors import InvalidJob
from skiplock.queue_core.features.limits import KeyFrom, default_key

MAX_COUNT = 1_000_000
MAX_PERIOD_S = 86_400
_UNITS = {"s": 1, "m": 60, "h": 3600}
_RATE = re.compile(r"\s*([0-9]{1,9})\s*/\s*([0-9]{0,6})\s*([smh])\s*")


@dataclass(frozen=True)
class TypeRate:
    rate: str  # canonical, '<count>/<seconds>s'
    key_from: KeyFrom  # a payload field, a function of the payload, or None (the type)


_rates: dict[str, TypeRate] = {}


def parse_rate(rate: Any) -> tuple[int, int]:
    """(count, period in seconds) of "10/m", "4/2s", "100/5m", "1/h", "10/60s"."""
    found = _RATE.fullmatch(rate) if isinstance(rate, str) else None
    if found is not None:
        count = int(found[1])
        period = int(found[2] or 1) * _UNITS[found[3]]
        if 1 <= count <= MAX_COUNT and 1 <= period <= MAX_PERIOD_S:
            return count, period
    raise InvalidJob(f"rate must be N/s, N/m, N/h or N/<k>s|m|h (10/m, 4/2s) with N from 1 "
                     f"to {MAX_COUNT} and a period from 1 second to 24 hours, not {rate!r}")


def canonical(rate: Any) -> str:
    """The stored form: '<count>/<seconds>s' ("10/m" is '10/60s')."""
    count, period = parse_rate(rate)
    return f"{count}/{period}s"


def set_type_rate(job_type: str, rate: str | None, key_from: KeyFrom = None) -> None:
    """At most `rate` starts of `job_type` per key and window (None removes it)."""
    if rate is None:
        if key_from is not None:
            raise InvalidJob(f"rate_key of {job_type} needs a rate")
        _rates.pop(job_type, None)
        return
    stored = canonical(rate)
    if not (key_from is None or callable(key_from)
            or (isinstance(key_from, str) and key_from.strip())):
        raise InvalidJob(f"rate_key of {job_type} must be a payload field or a function")
    _rates[job_type] = TypeRate(stored, key_from)


def type_rate(job_type: str) -> TypeRate | None:
    return _rates.get(job_type)


def resolve(job_type: str, payload: Mapping[str, Any], key: Any,
            rate: Any) -> tuple[str | None, str | None]:
    """The (rate key, canonical rate) a new job gets; (None, None) when it has none."""
    registered = _rates.get(job_type)
    if key is not None and (not isinstance(key, str) or not key.strip()):
        raise InvalidJob(f"rate_key must be a non-empty string, not {key!r}")
    if rate is None:
        if registered is None:
            if key is not None:
                raise InvalidJob(f"rate_key {key!r} needs a rate: pass rate='10/m', or "
                                 f"register {job_type} with @handler(..., rate='10/m')")
            return None, None
        rate = registered.rate
    else:
        rate = canonical(rate)
    if key is None:
        key = default_key(job_type, payload, None if registered is None else registered.key_from)
        if key is None:  # the payload lacks the registered field: the type's window
            key = job_type
    return key, rate


@dataclass(frozen=True)
class RateKey:
    key: str
    rate: str
    waiting: int  # jobs held back for their window
    let_in: int  # jobs let in on a token, not started yet
    next_at: datetime | None  # when the first of them may start


def rate_keys(limit: int = 20, conn: Joinable | None = None) -> list[RateKey]:
    """The keys with jobs waiting for their window, the most waiting first."""
    with connect(conn) as c:
        return [RateKey(r.key, r.rate, r.waiting, r.let_in, r.next_at)
                for r in c.execute(sql.RATE_KEYS, {"limit": limit})]


def waiting_for_window(conn: Joinable | None = None) -> int:
    """How many jobs wait for their window, every key together."""
    with connect(conn) as c:
        found = c.execute(sql.RATE_WAITING).first()
        return int(found[0]) if found else 0


def prune_idle_keys(idle_s: float = 3600.0) -> int:
    """Forget rate keys that nothing has used in `idle_s` seconds nor in their period
    (cleanup calls it); returns how many."""
    with connect(autocommit=True) as c:
        return int(c.execute(sql.PRUNE_IDLE_RATE_KEYS, {"idle_s": float(idle_s)}).rowcount)


def wake(conn: Joinable | None = None) -> int:
    """Let in the jobs of keys a trigger could not (their row was locked); a master's
    maintenance calls it. Returns how many keys it looked at."""
    with connect(conn, autocommit=True) as c:
        found = c.execute(sql.RATE_WAKE).first()
        return int(found[0]) if found else 0
