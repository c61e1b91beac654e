"""skiplock.django's parts that need no Django project: the URL made of Django's connection
parameters, the settings' fallback it plugs into, and the app's migrations kept at the
queue's head. tests/applications/test_django.py runs the rest in a real project."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from skiplock.django.connection import url_from_params
from skiplock.queue_core import config
from skiplock.queue_core.database import migrate
from skiplock.queue_core.database.urls import libpq_dsn, normalize, redact

MIGRATIONS = Path(__file__).resolve().parents[2] / "skiplock" / "django" / "migrations"


def test_a_password_with_every_url_delimiter_survives_the_url() -> None:
    password = "p@ss:w/rd %?#&=+'\""
    url = url_from_params({"dbname": "shop", "user": "ada", "password": password,
                           "host": "db.example.com", "port": 6543, "sslmode": "require"})
    parsed = make_url(normalize(url))
    assert (parsed.username, parsed.password, parsed.host, parsed.port, parsed.database) == (
        "ada", password, "db.example.com", 6543, "shop")
    assert parsed.query == {"sslmode": "require"}
    assert "sslmode=require" in libpq_dsn(normalize(url))
    assert "ss:w" not in redact(url)


@pytest.mark.parametrize("host, port", [("/var/run/postgresql", "5433"), ("::1", "5432"),
                                        ("db1,db2", "5432,5433")],
                         ids=["a-socket-directory", "ipv6", "several-hosts"])
def test_a_host_that_is_no_plain_name_stays_a_libpq_keyword(host: str, port: str) -> None:
    url = url_from_params({"dbname": "shop", "user": "ada", "host": host, "port": port})
    parsed = make_url(normalize(url))
    assert parsed.host is None
    assert (parsed.query["host"], parsed.query["port"]) == (host, port)
    assert f"host='{host}'" in libpq_dsn(normalize(url)) or f"host={host}" in libpq_dsn(
        normalize(url))


def test_without_a_host_libpq_picks_its_default_socket() -> None:
    parsed = make_url(normalize(url_from_params({"dbname": "shop"})))
    assert (parsed.host, parsed.port, parsed.database, parsed.query) == (None, None, "shop", {})


@pytest.fixture
def no_database_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """DATABASE_URL unset, and a fallback that counts its calls."""
    calls: list[int] = []
    monkeypatch.delenv("DATABASE_URL")

    def fallback() -> str:
        calls.append(1)
        return "postgresql://ada@db.example.com/shop"

    config.set_database_url_fallback(fallback)
    try:
        yield calls
    finally:
        config.set_database_url_fallback(None)


def test_the_fallback_names_the_database_only_when_nothing_else_does(
        no_database_url: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.load_settings().database_url == "postgresql://ada@db.example.com/shop"
    assert config.cached_settings().database_url == "postgresql://ada@db.example.com/shop"
    assert len(no_database_url) == 2
    flag = config.load_settings(database_url="postgresql://grace@flag.example.com/shop")
    assert flag.database_url == "postgresql://grace@flag.example.com/shop"
    monkeypatch.setenv("DATABASE_URL", "postgresql://hedy@env.example.com/shop")
    assert config.load_settings().database_url == "postgresql://hedy@env.example.com/shop"
    assert len(no_database_url) == 2  # never asked while something else names the database


def test_without_a_fallback_an_unset_database_url_stays_unset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL")
    config.clear_cache()
    try:
        assert config.load_settings().database_url is None
    finally:
        config.clear_cache()


def _queue_revision(path: Path) -> str:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets
                                             if isinstance(t, ast.Name)] == ["QUEUE_REVISION"]:
            assert isinstance(node.value, ast.Constant)
            return str(node.value.value)
    raise AssertionError(f"{path.name} has no QUEUE_REVISION")


def test_the_newest_django_migration_brings_the_queue_to_its_head() -> None:
    """A new revision of skiplock's own migrations needs a Django migration of the app
    (skiplock/django/schema.py): copy the newest, set QUEUE_REVISION to the new head
    and depend on the one before, or `manage.py migrate` never applies it."""
    files = sorted(MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
    revisions = [_queue_revision(path) for path in files]
    assert revisions[-1] == migrate.queue_head()
    queue = [r for r in migrate.revisions() if not r.startswith("demo_")]
    assert revisions == sorted(revisions, key=queue.index)  # each further than the one before
