"""Settings: one place, one name per setting, flags win over the environment.

Each setting has an environment variable (also read from `.env`), a type, a
default and one line of help; `skiplock worker` has one flag per setting, and
its `--help` shows the same line. Derived values are derived, not repeated:
the stuck timeout defaults to six heartbeats (docs/lessons.md: a timeout that is not
a clear multiple of the heartbeat re-picks running jobs) and recovery runs as
often as that timeout.
"""

from __future__ import annotations

import functools
import math
import os
import pwd
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from skiplock.queue_core.errors import ConfigurationError

STUCK_TIMEOUT_HEARTBEATS = 6
_UNPRINTABLE = re.compile("[\x00\ud800-\udfff]")
STUCK_TIMEOUT_MIN_HEARTBEATS = 3


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _optional_str(text: str) -> str | None:
    return text.strip() or None


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text


# Numbers: every setting says its range where it is parsed, so a flag, its
# environment variable and a value given in code are refused the same way,
# with the same words. nan and inf are never a number of seconds.

def _number(kind: type, low: float | None = None, high: float | None = None, *,
            above: bool = False, optional: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        raw = text.strip().lower()
        if optional and raw in {"", "none", "0"}:
            return None
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"not {'an integer' if kind is int else 'a number'}: {text!r}"
                             ) from None
        if kind is float and not math.isfinite(value):
            raise ValueError(f"not a finite number: {text!r}")
        if low is not None and (value <= low if above else value < low):
            raise ValueError(f"must be {'more than' if above else 'at least'} {low:g}, "
                             f"not {value:g}")
        if high is not None and value > high:
            raise ValueError(f"must be at most {high:g}, not {value:g}")
        return value
    return parse


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip()
        for choice in choices:
            if value.lower() == choice.lower():
                return choice
        raise ValueError(f"must be one of {', '.join(choices)}, not {text!r}")
    return parse


_DAY = 86400.0
_seconds = _number(float, 0, 7 * _DAY, above=True)
_optional_seconds = _number(float, 0, 30 * _DAY, above=True, optional=True)


def _optional_duration(text: str) -> float | None:
    """A duration as people write it (300, 5m, 1h30m); empty, none or 0: off."""
    from skiplock.queue_core.durations import parse_duration
    from skiplock.queue_core.errors import InvalidJob

    raw = text.strip().lower()
    if raw in {"", "none", "0", "off"}:
        return None
    try:
        seconds = parse_duration(raw)
    except InvalidJob as exc:
        raise ValueError(str(exc)) from None
    if not 0 < seconds <= 365 * _DAY:
        raise ValueError(f"must be more than 0 and at most a year, not {text!r}")
    return seconds


def _setting(default: Any, env: str, parse: Callable[[str], Any], help: str) -> Any:
    metadata = {"env": env, "parse": parse, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _setting(
        None, "DATABASE_URL", str,
        "PostgreSQL URL; without it, the embedded cluster of SKIPLOCK_HOME is used, if it "
        "runs (worker, migrate, demo and `db start` start it).")
    concurrency: int = _setting(
        0, "SKIPLOCK_CONCURRENCY", _number(int, 0, 1024), "Worker children per master (0: one per CPU).")
    heartbeat_s: float = _setting(
        5.0, "SKIPLOCK_HEARTBEAT_S", _seconds, "Seconds between heartbeats of a running job.")
    stuck_timeout_s: float | None = _setting(
        None, "SKIPLOCK_STUCK_TIMEOUT_S", _optional_seconds,
        "Seconds without a heartbeat after which a job is rescued (default: 6 heartbeats).")
    recovery_interval_s: float | None = _setting(
        None, "SKIPLOCK_RECOVERY_INTERVAL_S", _optional_seconds,
        "Seconds between stuck-job recoveries (default: the stuck timeout).")
    job_timeout_s: float | None = _setting(
        3600.0, "SKIPLOCK_JOB_TIMEOUT_S", _optional_seconds,
        "Seconds a job may run before its child is killed and the attempt counted "
        "(default: one hour; 0: no limit, and a hung job holds its child for good).")
    graceful_timeout_s: float = _setting(
        30.0, "SKIPLOCK_GRACEFUL_TIMEOUT_S", _number(float, 0, _DAY),
        "Seconds running jobs get to finish on TERM/INT/HUP before they are killed.")
    max_jobs_per_child: int | None = _setting(
        None, "SKIPLOCK_MAX_JOBS_PER_CHILD", _number(int, 1, optional=True),
        "Recycle a child after this many jobs (default: never).")
    max_memory_per_child_mb: int | None = _setting(
        None, "SKIPLOCK_MAX_MEMORY_PER_CHILD_MB", _number(int, 1, 1024 * 1024, optional=True),
        "Recycle a child between jobs once its resident memory exceeds this (MiB).")
    handlers: list[str] = _setting(
        [], "SKIPLOCK_HANDLERS", _list, "Extra handler modules to import (comma-separated).")
    # -- routing: which job types this pool claims (pool/served.py) -----------------
    types: list[str] = _setting(
        [], "SKIPLOCK_TYPES", _list,
        "Claim only these job types (comma-separated; each needs a registered handler; "
        "default: every type with a handler).")
    exclude_types: list[str] = _setting(
        [], "SKIPLOCK_EXCLUDE_TYPES", _list,
        "Never claim these job types (comma-separated); another pool serves them.")
    listen: bool = _setting(
        True, "SKIPLOCK_LISTEN", _bool,
        "Wake children with LISTEN/NOTIFY; turn off behind a transaction-mode pooler.")
    poll_min_s: float = _setting(
        0.1, "SKIPLOCK_POLL_MIN_S", _number(float, 0, 3600, above=True),
        "Shortest wait between polls of an idle child.")
    poll_max_s: float = _setting(
        2.0, "SKIPLOCK_POLL_MAX_S", _number(float, 0, 3600, above=True),
        "Longest wait between polls of an idle child.")
    poll_step_s: float = _setting(
        0.1, "SKIPLOCK_POLL_STEP_S", _number(float, 0, 3600), "Added to the wait after each empty poll.")
    batch_size: int = _setting(
        0, "SKIPLOCK_BATCH_SIZE", _number(int, 0, 10_000),
        "Jobs a child claims at once when the queue is deep (0: adapt to the backlog and "
        "to how long jobs run, up to 100).")
    commit_delay_ms: float = _setting(
        10.0, "SKIPLOCK_COMMIT_DELAY_MS", _number(float, 0, 60_000),
        "Milliseconds a child's finished jobs may wait to commit together with the next "
        "ones (0: one commit per job); also the most finished work a child's crash "
        "can make run again.")
    max_payload_bytes: int = _setting(
        1024 * 1024, "SKIPLOCK_MAX_PAYLOAD_BYTES", _number(int, 1, 256 * 1024 * 1024),
        "Largest payload accepted, in bytes.")
    log_format: str = _setting(
        "text", "SKIPLOCK_LOG_FORMAT", _choice("text", "json"), "Log format: text (for people) or json.")
    log_level: str = _setting(
        "INFO", "SKIPLOCK_LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"),
        "Log level: DEBUG, INFO, WARNING or ERROR.")
    metrics_port: int | None = _setting(
        None, "SKIPLOCK_METRICS_PORT", _number(int, 1, 65535, optional=True),
        "Serve Prometheus metrics on this port (default: off).")
    metrics_host: str = _setting(
        "127.0.0.1", "SKIPLOCK_METRICS_HOST", _text, "Address the metrics server binds to.")
    home: str | None = _setting(
        None, "SKIPLOCK_HOME", _text,
        "Directory of the embedded cluster (default: $XDG_DATA_HOME/skiplock, else "
        "~/.local/share/skiplock: one per user, whatever the current directory).")
    # -- priority aging (queue_core/features/aging.py) ------------------------------
    age_after_s: float | None = _setting(
        None, "SKIPLOCK_AGE_AFTER", _optional_duration,
        "Raise the priority of a job that has waited this long (e.g. 5m), and again after "
        "each further wait, so that no job starves behind higher priorities (default: off).")
    age_step: int = _setting(
        1, "SKIPLOCK_AGE_STEP", _number(int, 1, 1_000_000),
        "Priority added to a waiting job each time it ages.")
    age_max: int | None = _setting(
        None, "SKIPLOCK_AGE_MAX", _number(int, -1_000_000_000, 1_000_000_000),
        "Highest priority aging raises a job to (default: the highest priority among the "
        "jobs due at the time).")
    # -- operations: schedules (skiplock schedule) ------------------------------
    schedule_file: str | None = _setting(
        None, "SKIPLOCK_SCHEDULE_FILE", _optional_str,
        "TOML or JSON file of recurring jobs (cron) that this master enqueues.")

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency or os.cpu_count() or 1

    @property
    def effective_stuck_timeout_s(self) -> float:
        return self.stuck_timeout_s or STUCK_TIMEOUT_HEARTBEATS * self.heartbeat_s

    @property
    def effective_recovery_interval_s(self) -> float:
        return self.recovery_interval_s or self.effective_stuck_timeout_s

    @property
    def home_path(self) -> Path:
        return Path(self.home).resolve() if self.home else default_home()

    def validate(self) -> Settings:
        """Check every value with its own parser (values given in code too), then the pairs."""
        problems = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, (bool, list)) or f.name == "database_url":
                continue
            text = repr(value) if isinstance(value, float) else str(value)
            if _UNPRINTABLE.search(text):
                problems.append(f"{f.metadata['env']} is not valid UTF-8 text")
                continue
            try:
                f.metadata["parse"](text)
            except ValueError as exc:
                problems.append(f"{f.metadata['env']} {exc}")
        if problems:
            raise ConfigurationError("invalid settings: " + "; ".join(problems))
        floor = STUCK_TIMEOUT_MIN_HEARTBEATS * self.heartbeat_s
        if self.effective_stuck_timeout_s < floor:
            problems.append(
                f"stuck timeout ({self.effective_stuck_timeout_s:g}s) must be at least "
                f"{STUCK_TIMEOUT_MIN_HEARTBEATS} heartbeats ({floor:g}s), or live jobs "
                "would be rescued"
            )
        if not self.poll_min_s <= self.poll_max_s:
            problems.append("poll interval must satisfy min <= max")
        if problems:
            raise ConfigurationError("invalid settings: " + "; ".join(problems))
        return self


def default_home() -> Path:
    """The per-user SKIPLOCK_HOME: `$XDG_DATA_HOME/skiplock`, else `~/.local/share/skiplock`.

    Per user, not per directory: a command run anywhere finds the same cluster
    (a default relative to the current directory made a new cluster in every
    directory a command was run from). A relative XDG_DATA_HOME is ignored, as the
    XDG specification says. Root whose HOME (or XDG_DATA_HOME) is another user's,
    as `sudo -E` leaves it, uses its own home directory: root must not make
    directories of its own in another user's home.
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    home = os.environ.get("HOME", "")
    base: Path | None = None
    if os.path.isabs(xdg):
        base = Path(xdg)
    elif os.path.isabs(home):
        base = Path(home) / ".local" / "share"
    if base is not None and os.geteuid() == 0 and _nearest_owner(base) != 0:
        base = None
    if base is None:
        try:
            own = pwd.getpwuid(os.geteuid()).pw_dir
        except KeyError:
            own = ""
        if not os.path.isabs(own):
            raise ConfigurationError(
                "no home directory to keep the embedded cluster in (HOME is unset and user id "
                f"{os.geteuid()} has none): set SKIPLOCK_HOME, or DATABASE_URL")
        base = Path(own) / ".local" / "share"
    return (base / "skiplock").resolve()


def _nearest_owner(path: Path) -> int:
    """The owner of `path`, or of its nearest ancestor that exists."""
    for candidate in (path, *path.parents):
        try:
            return os.stat(candidate).st_uid
        except OSError:
            continue
    return 0


def describe() -> list[tuple[str, str, str]]:
    """(field name, environment variable, help) of every setting, for docs and `--help`."""
    return [(f.name, f.metadata["env"], f.metadata["help"]) for f in fields(Settings)]


# Where DATABASE_URL comes from when neither the environment nor `.env` names one:
# a framework that already knows the application's database (skiplock.django reads
# Django's DATABASES). Set in the process, so that the pool's children inherit it.
_database_url_fallback: Callable[[], str | None] | None = None


def set_database_url_fallback(resolver: Callable[[], str | None] | None) -> None:
    """Call `resolver` for the database URL when DATABASE_URL is not set (None: forget it).

    A flag (`--database-url`) and DATABASE_URL, from the environment or `.env`, still
    win; the resolver is asked only when both are absent, each time settings are read.
    """
    global _database_url_fallback
    _database_url_fallback = resolver
    clear_cache()


def load_settings(**overrides: Any) -> Settings:
    """Defaults, then `.env` and the environment, then `overrides` (flags) that are not None.

    Without a DATABASE_URL in any of them, the fallback set by
    `set_database_url_fallback` names the database, if there is one.
    """
    load_dotenv(Path.cwd() / ".env", override=False)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = os.environ.get(f.metadata["env"])
        if raw is None or (raw == "" and f.name == "database_url"):
            continue
        if _UNPRINTABLE.search(raw):  # bytes that are not UTF-8, or a NUL
            raise ConfigurationError(f"{f.metadata['env']} is not valid UTF-8 text")
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            shown = "…" if f.name == "database_url" else f"={raw!r}"
            raise ConfigurationError(f"{f.metadata['env']}{shown}: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("database_url") is None and _database_url_fallback is not None:
        found = _database_url_fallback()
        if found:
            values["database_url"] = found
    unknown = set(values) - {f.name for f in fields(Settings)}
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    return replace(Settings(), **values).validate()


@functools.cache
def cached_settings() -> Settings:
    """The environment's settings, read once per process (hot paths use this)."""
    return load_settings()


def clear_cache() -> None:
    cached_settings.cache_clear()
