"""The click group and the one place where expected errors become one line on stderr.

An expected error (a SkiplockError: bad input, a database that is down, an
unknown job type) prints `skiplock: error: …` and exits 1 without a
traceback; click's usage errors exit 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from skiplock.queue_core.durations import parse_duration
from skiplock.queue_core.errors import SkiplockError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class SkiplockGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SkiplockError as exc:
            click.echo(f"skiplock: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=SkiplockGroup, context_settings=CONTEXT)
@click.version_option(package_name="skiplock")
def main() -> None:
    """skiplock: a durable job queue on PostgreSQL with a prefork worker pool.

    Settings come from flags, then the environment, then `.env`. With no
    DATABASE_URL every command uses the embedded cluster in .skiplock/pgdata,
    started on demand.
    """
    from skiplock.queue_core.config import load_settings
    from skiplock.queue_core.logs import configure_logging

    try:
        settings = load_settings()
    except SkiplockError as exc:
        click.echo(f"skiplock: error: {exc}", err=True)
        sys.exit(1)
    configure_logging(settings.log_format, "WARNING" if settings.log_level == "INFO"
                      else settings.log_level)


class Duration(click.ParamType):
    """A duration flag: 90, 30s, 5m, 2h, 7d."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except SkiplockError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
