"""`manage.py skiplock_worker`: `skiplock worker` with the project's settings and handlers.

The flags are `skiplock worker`'s own (the same click command parses them), so
they, their environment variables and their help cannot drift from it. What
Django adds:

- the database: DATABASES[SKIPLOCK_DATABASE] when DATABASE_URL is not set (the
  app's `ready`);
- the handler modules: SKIPLOCK_HANDLERS if the settings name them, else the
  `jobs` module of every installed app that has one; `--handlers` and the
  environment's SKIPLOCK_HANDLERS add to them. They are named to the pool, not
  imported here: as with `skiplock worker`, only the children (and the probe
  that asks which types they serve) import them, so a HUP loads new code;
- the ORM's connections: none is open when the pool forks (a child must not
  share its master's socket), and every job runs between two
  `close_old_connections()`, as Django runs a request: a connection that broke,
  or outlived CONN_MAX_AGE, is replaced before the next job uses it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from typing import NoReturn

import click

# Django's own options, which manage.py has already acted on (it read the
# settings): a value follows each.
_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def handler_modules() -> list[str]:
    """SKIPLOCK_HANDLERS of the settings, else every installed app's `jobs` module."""
    from django.apps import apps
    from django.conf import settings

    from skiplock.queue_core.errors import ConfigurationError

    named = getattr(settings, "SKIPLOCK_HANDLERS", None)
    if named is not None:
        if isinstance(named, str) or not all(isinstance(name, str) for name in named):
            raise ConfigurationError("the setting SKIPLOCK_HANDLERS must be a list of module "
                                     f"names, not {named!r}")
        return list(named)
    found = []
    for app in apps.get_app_configs():
        name = f"{app.name}.jobs"
        # find_spec imports the app's package (Django has) but not the module itself.
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:  # the app is a module, not a package
            spec = None
        if spec is not None and app.name != "skiplock.django":
            found.append(name)
    return found


def worker_args(args: list[str]) -> list[str]:
    """The arguments for `skiplock worker`: the project's handler modules, then `args`."""
    from skiplock.queue_core.config import load_settings

    modules = handler_modules()
    if not any(arg == "--handlers" or arg.startswith("--handlers=") for arg in args):
        # A --handlers flag replaces SKIPLOCK_HANDLERS of the environment, and the
        # project's modules are passed as one: name the environment's too.
        modules += load_settings().handlers
    return [*(f"--handlers={module}" for module in dict.fromkeys(modules)), *args]


def without_django_options(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _DJANGO_OPTIONS)):
            kept.append(arg)
    return kept


@contextlib.contextmanager
def orm_connections() -> Iterator[None]:
    """Around a job, what Django does around a request (request_started, request_finished)."""
    from django.db import close_old_connections

    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def run(args: list[str], prog_name: str) -> NoReturn:
    """Run the pool as `skiplock worker` would, with the project's handlers; exit with its status."""
    from django.db import connections
    from sqlalchemy import exc as sa_exc

    from skiplock.cli.worker import worker
    from skiplock.pool import executor
    from skiplock.queue_core.errors import SkiplockError

    try:
        full = worker_args(args)
    except SkiplockError as exc:
        fail(str(exc))
    connections.close_all()
    executor.around_each_job(orm_connections)
    try:
        worker.main(args=full, prog_name=prog_name)
    except SkiplockError as exc:
        fail(str(exc))
    except sa_exc.DBAPIError as exc:
        from skiplock.queue_core.database.db import describe_database_error

        fail(describe_database_error(exc))
    sys.exit(0)


def fail(message: str) -> NoReturn:
    """One line on stderr, as the skiplock command says it, without any password."""
    from skiplock.cli.display import safe
    from skiplock.queue_core.database.urls import scrub

    with contextlib.suppress(Exception):  # the settings themselves may be what failed
        from skiplock.django.connection import database_url

        message = scrub(message, database_url())
    message = scrub(message, os.environ.get("DATABASE_URL"))
    click.echo(f"skiplock: error: {safe(message)}", err=True)
    sys.exit(1)
