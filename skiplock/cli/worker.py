"""`skiplock worker`: run the prefork pool in the foreground.

A thin shell over `pool.run`. It has one flag per setting of
`queue_core.config.Settings`, generated from the settings' own metadata, so
that a flag, its environment variable and its help cannot drift apart; a flag
parses its value with the same function as the environment variable, and wins
over it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any

import click

from skiplock.cli.app import main
from skiplock.pool.observer import PoolObserver
from skiplock.queue_core.config import Settings, load_settings

# Flag names that differ from the setting's name (units live in the help).
_FLAG_NAMES = {
    "heartbeat_s": "heartbeat",
    "stuck_timeout_s": "stuck-timeout",
    "recovery_interval_s": "recovery-interval",
    "job_timeout_s": "job-timeout",
    "graceful_timeout_s": "graceful-timeout",
    "max_memory_per_child_mb": "max-memory-per-child",
    "poll_min_s": "poll-min",
    "poll_max_s": "poll-max",
    "poll_step_s": "poll-step",
    "age_after_s": "age-after",
}
_METAVARS = {"age_after_s": "DURATION", "age_step": "N", "age_max": "PRIORITY",
             "_s": "SECONDS", "_ms": "MS", "_mb": "MIB", "database_url": "URL", "handlers": "MODULE",
             "types": "TYPES"}
_SHORT = {"concurrency": "-c"}

_HELP = """Run the worker pool: one master in the foreground, forking worker children.

\b
Signals to the master:
  TERM, INT   stop claiming; running jobs get --graceful-timeout to finish,
              then are killed and released (no attempt charged); exit 0
  QUIT        stop now: running jobs are abandoned and released
  HUP         replace every child gracefully (handler modules are re-imported;
              if one no longer imports, the children are left as they are)
  TTIN, TTOU  one child more, one child less

The pool claims only the job types it serves: those with a registered
handler, narrowed by --types and --exclude-types. Jobs of other types wait,
PENDING, for a pool that serves them (`skiplock stats` shows them as NO POOL).

Exit status: 0 after a stop on request, 1 for a bad setting (a --types entry
that no handler serves, say), 3 when the pool cannot boot (a handler module
that does not import, a database that refuses the worker).
Every flag also reads an environment variable (shown in brackets, also read
from .env); the flag wins.
"""


class _SettingType(click.ParamType):
    """A flag parsed exactly like its environment variable."""

    def __init__(self, name: str, parse: Callable[[str], Any], metavar: str) -> None:
        self.name = name
        self.parse = parse
        self.metavar = metavar

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return self.metavar

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


def _metavar(name: str) -> str:
    for suffix, metavar in _METAVARS.items():
        if name == suffix or name.endswith(suffix):
            return metavar
    return "N" if name.endswith(("concurrency", "size", "child", "port", "bytes")) else "TEXT"


def _default(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def _option(f: Field[Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    env, help_ = f.metadata["env"], f.metadata["help"]
    default = _default(f)
    shown = "none" if default in (None, []) else default
    flag = "--" + _FLAG_NAMES.get(f.name, f.name.replace("_", "-"))
    if f.name == "listen":
        return click.option(f"{flag}/--no-{flag[2:]}", "listen", default=None,
                            help=f"{help_} [env: {env}; default: on]")
    if f.name == "handlers":
        return click.option(flag, "handlers", multiple=True, metavar="MODULE",
                            help=f"Import this handler module (repeatable, or comma-separated). "
                                 f"[env: {env}]")
    names = [flag, *([_SHORT[f.name]] if f.name in _SHORT else [])]
    return click.option(*names, f.name, default=None,
                        type=_SettingType(f.name, f.metadata["parse"], _metavar(f.name)),
                        help=f"{help_} [env: {env}; default: {shown}]")


def _setting_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for f in reversed(fields(Settings)):
        command = _option(f)(command)
    return command


def build_observers(settings: Settings) -> list[PoolObserver]:
    """The observers the pool reports to: process table, schedules, metrics."""
    from skiplock.pool.operations import build_observers as operations

    return operations(settings)


@main.command("worker", help=_HELP)
@_setting_options
def worker(**flags: Any) -> None:
    from skiplock import pool
    from skiplock.pool.proctitle import set_title
    from skiplock.queue_core.database import urls
    from skiplock.queue_core.logs import configure_logging

    if flags.get("database_url"):  # off the command line, which `ps` shows everyone, at once
        set_title("master · starting")
    handlers = [name.strip() for value in flags.pop("handlers") for name in value.split(",")]
    flags["handlers"] = [name for name in handlers if name] or None
    settings = load_settings(**flags)
    configure_logging(settings.log_format, settings.log_level, settings.database_url)
    # The one place the pool may start the embedded cluster: the pool itself
    # (pool.run, an application's too) only uses one that runs.
    urls.database_url(settings, start=True)
    # Like celery and rq, a handler module in the current directory can be named
    # without installing it (the console script does not put the cwd on sys.path).
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    sys.exit(pool.run(settings, observers=build_observers(settings)))
