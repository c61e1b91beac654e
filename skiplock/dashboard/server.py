"""Serving the dashboard with waitress (a pure-Python, multi-threaded WSGI server)."""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from skiplock.dashboard.settings import DashboardSettings, check_bind

log = logging.getLogger("skiplock.dashboard")


def serve(settings: DashboardSettings) -> None:
    """Check the bind, then serve until SIGTERM or Ctrl-C."""
    check_bind(settings)
    from waitress import create_server

    from skiplock.dashboard.app import create_app

    server = create_server(create_app(settings), host=settings.host, port=settings.port,
                           threads=settings.threads, ident="skiplock", clear_untrusted_proxy_headers=True)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.close()
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    port = server.effective_port
    mode = "actions allowed" if settings.allow_actions else "read-only"
    auth = ", credentials required" if settings.needs_credentials else ""
    print(f"skiplock dashboard on http://{host}:{port}/ ({mode}{auth})", file=sys.stderr, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        server.close()
