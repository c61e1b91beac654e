"""What the dashboard runs with, and the rule that keeps it off the network without credentials."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from skiplock.queue_core.errors import ConfigurationError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8484
PASSWORD_ENV = "SKIPLOCK_DASHBOARD_PASSWORD"
TOKEN_ENV = "SKIPLOCK_DASHBOARD_TOKEN"


@dataclass(frozen=True)
class DashboardSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    allow_actions: bool = False
    password: str | None = None  # HTTP Basic: any user name (it is logged), this password
    token: str | None = None  # `Authorization: Bearer <token>`, for scripts
    refresh_s: float = 5.0  # the overview reloads its figures this often
    schedule_file: str | None = None
    stale_after_s: float = 60.0  # a heartbeat older than this marks a process STALE
    page_size: int = 50
    read_timeout_ms: int = 5000  # statement_timeout of every page's reads
    threads: int = 4
    # Names besides the bind address and localhost a request's Host may give
    # (security.py, host_allowed): the name of a reverse proxy, of the machine.
    allowed_hosts: tuple[str, ...] = ()

    @property
    def needs_credentials(self) -> bool:
        return bool(self.password or self.token)


def from_environment(**overrides: object) -> DashboardSettings:
    values: dict[str, object] = {"password": os.environ.get(PASSWORD_ENV) or None,
                                 "token": os.environ.get(TOKEN_ENV) or None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return DashboardSettings(**values)  # type: ignore[arg-type]


def host_name(value: str) -> str:
    """A name for `--allowed-host` as requests' Host headers are compared with it:
    lower-cased, an IPv6 address without brackets; anything with a port, a path or
    a space is refused (any port is allowed anyway)."""
    name = value.strip().lower()
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        pass
    if not name or not all(c.isalnum() or c in "-._" for c in name) or not name.isascii():
        raise ConfigurationError(f"not a host name (no port, no scheme): {value!r}")
    return name


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(settings: DashboardSettings) -> None:
    """Refuse to serve beyond this machine without credentials: the pages show
    payloads and errors, and with --allow-actions anyone could retry or pause."""
    if not is_loopback(settings.host) and not settings.needs_credentials:
        raise ConfigurationError(
            f"refusing to serve the dashboard on {settings.host} without credentials: "
            f"set {PASSWORD_ENV} or {TOKEN_ENV}, or bind to 127.0.0.1")
