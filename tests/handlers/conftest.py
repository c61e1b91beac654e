"""Fixtures of the handler tests: users and their journal entries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from skiplock.handlers.domain import store
from skiplock.queue_core.database.db import transaction


@pytest.fixture
def make_user(database_url: str) -> Callable[..., str]:
    def make(timezone: str = "Europe/Paris", name: str = "Ada") -> str:
        with transaction() as conn:
            return store.create_user(conn, name, timezone)
    return make


@pytest.fixture
def add_events(database_url: str) -> Callable[[str, list[tuple[datetime, str]]], list[str]]:
    def add(user_id: str, entries: list[tuple[datetime, str]]) -> list[str]:
        with transaction() as conn:
            return store.add_events(conn, user_id, entries)
    return add
