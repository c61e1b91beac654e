"""The Django app: `INSTALLED_APPS = [..., "skiplock.django"]` (label `skiplock`)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core import checks


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


def check_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """SKIPLOCK_DATABASE must be a PostgreSQL alias (`manage.py check`, migrate, runserver)."""
    from skiplock.django.connection import wrapper
    from skiplock.queue_core.errors import ConfigurationError

    try:
        wrapper()
    except ConfigurationError as exc:
        return [checks.Error(str(exc), id="skiplock.E001")]
    return []
