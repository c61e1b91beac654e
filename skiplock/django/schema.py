"""skiplock's schema through Django's migrations.

skiplock's own migrations (alembic, recorded in `skiplock_version`) are the
authority; each of the app's Django migrations brings the queue to one of
their revisions, named in its `QUEUE_REVISION`, by running them (a
`RunPython`). So `manage.py migrate` after an upgrade of skiplock applies
what the new version added, `showmigrations` shows it, and a database that
`skiplock migrate` already brought further is left as it is. A new alembic
revision comes with a new Django migration here (tests/applications/
test_django_settings.py holds the newest to the queue's head).

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
    from skiplock.queue_core.database import migrate
    from skiplock.queue_core.database.urls import normalize

    if schema_editor.connection.alias != skiplock_alias():
        return
    wrapper(schema_editor.connection.alias)  # PostgreSQL's, or one line saying not
    # On psycopg2, as all of skiplock's own connections (urls.normalize). A database
    # at `revision` or beyond is left as it is: alembic has nothing to do there.
    migrate.upgrade(normalize(url_of(schema_editor.connection)), revision)
