"""`skiplock dashboard`: the web view of the queue (the extra `skiplock[dashboard]`)."""

from __future__ import annotations

import click

from skiplock.cli.app import Duration, main
from skiplock.dashboard.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    PASSWORD_ENV,
    TOKEN_ENV,
    host_name,
)
from skiplock.queue_core.errors import ConfigurationError


def _host_names(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                ) -> tuple[str, ...]:
    try:
        return tuple(host_name(v) for v in values)
    except ConfigurationError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="Address to listen on. Anything but a loopback address needs credentials "
                   f"({PASSWORD_ENV} or {TOKEN_ENV}).")
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="TCP port (0: any free port).")
@click.option("--allow-actions", is_flag=True,
              help="Allow retry, run now, cancel, pause and resume (each logged). Without "
                   "it the dashboard only reads.")
@click.option("--refresh", type=Duration(min_s=1), default="5", show_default=True,
              metavar="SECONDS", help="How often the overview refreshes its figures.")
@click.option("--schedule-file", default=None, metavar="PATH",
              help="Schedules to show (default: SKIPLOCK_SCHEDULE_FILE, as `skiplock worker`).")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              callback=_host_names,
              help="Another name the dashboard answers to, e.g. a reverse proxy's "
                   "(repeatable). A request whose Host header is none of these, the --host "
                   "address or localhost (or an IP address, bound to 0.0.0.0 or ::) gets a "
                   "400: against DNS rebinding.")
def dashboard(host: str, port: int, allow_actions: bool, refresh: float,
              schedule_file: str | None, allowed_hosts: tuple[str, ...]) -> None:
    """Serve a web dashboard of the queue: overview, jobs, processes, schedules, actions.

    Bound to 127.0.0.1 by default. To serve it to other hosts, set
    SKIPLOCK_DASHBOARD_PASSWORD (HTTP Basic; the user name is what the action
    log records) or SKIPLOCK_DASHBOARD_TOKEN (`Authorization: Bearer ...`);
    without either it refuses to start on any other address. Read-only unless
    --allow-actions; then a POST must come from one of its own pages (Origin).
    Served under the bind address and localhost; a name a browser reaches it
    by (a reverse proxy's) must be given with --allowed-host.
    """
    try:
        import flask  # noqa: F401
        import waitress  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the dashboard needs its extra: pip install 'skiplock[dashboard]'") from None
    from skiplock.dashboard import settings as dashboard_settings
    from skiplock.dashboard.server import serve
    from skiplock.queue_core.config import load_settings
    from skiplock.queue_core.database.urls import database_url

    config = load_settings()
    database_url(config)  # no database configured: one line now, not an error page per request
    serve(dashboard_settings.from_environment(
        host=host, port=port, allow_actions=allow_actions, refresh_s=refresh,
        allowed_hosts=allowed_hosts,
        schedule_file=schedule_file or config.schedule_file,
        stale_after_s=config.effective_stuck_timeout_s))
