"""skiplock in a Django project: add `"skiplock.django"` to INSTALLED_APPS.

- `manage.py migrate` applies skiplock's schema to the database of alias
  `SKIPLOCK_DATABASE` (default `"default"`), with Django's credentials for it.
- Without DATABASE_URL, skiplock's own connections (its worker, `enqueue`
  without `conn=`) use that database, as `DATABASES` describes it.
- `skiplock.django.enqueue(...)` writes the job on Django's connection: inside
  `transaction.atomic()` the job exists only if the block commits.
- `manage.py skiplock_worker [flags of skiplock worker]` runs the pool with
  the project's handlers: the modules of `SKIPLOCK_HANDLERS`, by default the
  `jobs` module of every installed app that has one.

docs/applications.md, "Django", says why each works as it does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from skiplock.django.connection import connection, database_url, skiplock_alias

__all__ = ["connection", "database_url", "enqueue", "enqueue_many", "skiplock_alias"]


def enqueue(job_type: str, payload: Mapping[str, Any], *, using: str | None = None,
            **options: Any) -> str:
    """`skiplock.enqueue` on Django's connection (`using`: a database alias, default
    SKIPLOCK_DATABASE): in the transaction of the enclosing `atomic()` block, if any."""
    from skiplock.queue_core.enqueue import enqueue as enqueue_on

    return enqueue_on(job_type, payload, conn=connection(using), **options)


def enqueue_many(jobs: Iterable[Mapping[str, Any]], *, using: str | None = None) -> list[str]:
    """`skiplock.enqueue_many` on Django's connection, like `enqueue`."""
    from skiplock.queue_core.enqueue import enqueue_many as enqueue_many_on

    return enqueue_many_on(jobs, conn=connection(using))
