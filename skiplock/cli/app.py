"""The click group and the one place where expected errors become one line on stderr.

An expected error (a SkiplockError: bad input, a database that is down, an
unknown job type) prints `skiplock: error: …` and exits 1 without a
traceback; click's usage errors exit 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime
from typing import Any, NoReturn

import click

from skiplock.cli import display
from skiplock.cli.display import safe
from skiplock.queue_core.durations import parse_duration
from skiplock.queue_core.errors import SkiplockError

_SURROGATE = re.compile("[\ud800-\udfff]")
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def fail(message: str) -> NoReturn:
    """The one line of an expected error: control characters escaped, no password."""
    from skiplock.queue_core.database.urls import scrub

    message = scrub(message, os.environ.get("DATABASE_URL"))
    click.echo(f"skiplock: error: {safe(message)}", err=True)
    sys.exit(1)


class SkiplockGroup(click.Group):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Every argument of every command enters here: bytes that are not UTF-8
        # (Python keeps them as lone surrogates) would fail deep in the driver.
        for arg in args:
            if _SURROGATE.search(arg):
                raise click.UsageError(f"argument {safe(arg)[:80]!r} is not valid UTF-8 text")
            if "\x00" in arg:  # impossible from a shell, possible from a program
                raise click.UsageError(f"argument {safe(arg)[:80]!r} contains a NUL character")
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy import exc as sa_exc

        from skiplock.queue_core.database.db import describe_database_error

        try:
            return super().invoke(ctx)
        except SkiplockError as exc:
            fail(str(exc))
        except sa_exc.DBAPIError as exc:  # the server said no: one line, not a traceback
            fail(describe_database_error(exc))


@click.group(cls=SkiplockGroup, context_settings=CONTEXT)
@click.version_option(package_name="skiplock")
def main() -> None:
    """skiplock: a durable job queue on PostgreSQL with a prefork worker pool.

    Settings come from flags, then the environment, then `.env`. With no
    DATABASE_URL every command uses the embedded cluster of SKIPLOCK_HOME
    (default ~/.local/share/skiplock) if it runs; `worker`, `migrate`, `demo`
    and `db start` start it (`skiplock db status` says where).
    """
    from skiplock.queue_core.config import load_settings
    from skiplock.queue_core.logs import configure_logging

    try:
        settings = load_settings()
    except SkiplockError as exc:
        fail(str(exc))
    configure_logging(settings.log_format, "WARNING" if settings.log_level == "INFO"
                      else settings.log_level, settings.database_url)


class Duration(click.ParamType):
    """A duration flag: 90, 30s, 5m, 2h, 7d; finite, and at least `min_s`."""

    name = "duration"

    def __init__(self, min_s: float = 0.0) -> None:
        self.min_s = min_s

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        try:
            seconds = parse_duration(value)
        except SkiplockError as exc:
            self.fail(safe(exc), param, ctx)
        if seconds < self.min_s:
            self.fail(f"must be at least {self.min_s:g}s, not {safe(value)}", param, ctx)
        return seconds


class Day(click.ParamType):
    """A calendar day YYYY-MM-DD (or an instant with a time), in years 1900 to 9000.

    Wider years overflow the date arithmetic of periods and time zones.
    """

    name = "date"

    def __init__(self, with_time: bool = False) -> None:
        formats = ["%Y-%m-%d"] + (["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S",
                                   "%Y-%m-%dT%H:%M:%S%z"] if with_time else [])
        self.inner = click.DateTime(formats=formats)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[%Y-%m-%d|…]" if len(self.inner.formats) > 1 else "[%Y-%m-%d]"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> datetime:
        moment: datetime = self.inner.convert(value, param, ctx)
        if not 1900 <= moment.year <= 9000:
            self.fail(f"{safe(value)} is out of range (years 1900 to 9000)", param, ctx)
        return moment


DURATION = Duration()


def print_json(data: Any) -> None:
    display.print_json(data)
