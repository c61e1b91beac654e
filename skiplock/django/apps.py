"""The Django app: `INSTALLED_APPS = [..., "skiplock.django"]` (label `skiplock`)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.db.backends.base.base import NO_DB_ALIAS
from django.db.backends.signals import connection_created


class SkiplockConfig(AppConfig):
    name = "skiplock.django"
    label = "skiplock"
    verbose_name = "skiplock"

    def ready(self) -> None:
        from skiplock.django.connection import database_url
        from skiplock.queue_core import config

        # Without DATABASE_URL (flag, environment, .env), skiplock's own connections go
        # to the database Django's settings name: one configuration, not two.
        config.set_database_url_fallback(database_url)
        checks.register(check_database)
        connection_created.connect(forget_connections, dispatch_uid="skiplock.django")


def forget_connections(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Django connects to no database in particular (NO_DB_ALIAS) to create or drop one: the
    test database, mostly. Close skiplock's own connections first, which would make the drop
    fail ("being accessed by other users"), and read the URL again when they are next
    needed: the test database's after it was created, the real one after."""
    if connection.alias == NO_DB_ALIAS:
        from skiplock.queue_core import config
        from skiplock.queue_core.database import db

        config.clear_cache()
        db.reset_engine()


def check_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """SKIPLOCK_DATABASE must be a PostgreSQL alias (`manage.py check`, migrate, runserver)."""
    from skiplock.django.connection import wrapper
    from skiplock.queue_core.errors import ConfigurationError

    try:
        wrapper()
    except ConfigurationError as exc:
        return [checks.Error(str(exc), id="skiplock.E001")]
    return []
