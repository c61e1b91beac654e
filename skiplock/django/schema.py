"""skiplock's schema through Django's migrations.

skiplock's own migrations (alembic, recorded in `skiplock_version`) are the
authority; each of the app's Django migrations brings the queue to one of
their revisions, named in its `QUEUE_REVISION`, by running them (a
`RunPython`). So `manage.py migrate` after an upgrade of skiplock applies
what the new version added, `showmigrations` shows it, and a database that
`skiplock migrate` already brought further is left as it is. A new alembic
revision comes with a new Django migration here (tests/applications/
test_django.py holds the newest to the queue's head).

The migration runs on a connection of its own, as Django's user for the
database being migrated (the test database too, under `manage.py test`), and
only for the alias SKIPLOCK_DATABASE: the queue lives in one database.
Reversing a migration leaves the queue's objects, and the jobs in them, where
they are (a rollback of the app's schema must not lose the queue's jobs);
migrating forward again finds them current.
"""

from __future__ import annotations

from typing import Any


def apply(schema_editor: Any, revision: str) -> None:
    """What a migration of the app runs: the queue to `revision`, in the database being
    migrated if it is SKIPLOCK_DATABASE's."""
    from skiplock.django.connection import skiplock_alias, url_of, wrapper
    from skiplock.queue_core.database.urls import normalize

    if schema_editor.connection.alias != skiplock_alias():
        return
    wrapper(schema_editor.connection.alias)  # PostgreSQL's, or one line saying not
    # On psycopg2, as all of skiplock's own connections (urls.normalize).
    upgrade(normalize(url_of(schema_editor.connection)), revision)


def upgrade(url: str, revision: str) -> None:
    """Bring the queue to `revision`, unless the database is there or beyond already
    (alembic would take an upgrade to an older revision for a mistake)."""
    from skiplock.queue_core.database import migrate

    if not reached(url, revision):
        migrate.upgrade(url, revision)


def reached(url: str, revision: str) -> bool:
    """Whether the database's queue is at `revision` or at a revision after it."""
    from alembic.script import ScriptDirectory

    from skiplock.queue_core.database import migrate

    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    for current in migrate.current_revisions(url):
        if current.startswith("demo_"):
            continue
        if revision in {s.revision for s in script.walk_revisions(base="base", head=current)}:
            return True
    return False
