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
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dotenv import load_dotenv

from skiplock.queue_core.errors import ConfigurationError

STUCK_TIMEOUT_HEARTBEATS = 6
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


def _optional_float(text: str) -> float | None:
    return None if text.strip().lower() in {"", "none", "0"} else float(text)


def _optional_int(text: str) -> int | None:
    return None if text.strip().lower() in {"", "none", "0"} else int(text)


def _optional_str(text: str) -> str | None:
    return text.strip() or None


def _setting(default: Any, env: str, parse: Callable[[str], Any], help: str) -> Any:
    metadata = {"env": env, "parse": parse, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = _setting(
        None, "DATABASE_URL", str,
        "PostgreSQL URL; without it, the embedded cluster in .skiplock/pgdata is used.")
    concurrency: int = _setting(
        0, "SKIPLOCK_CONCURRENCY", int, "Worker children per master (0: one per CPU).")
    heartbeat_s: float = _setting(
        5.0, "SKIPLOCK_HEARTBEAT_S", float, "Seconds between heartbeats of a running job.")
    stuck_timeout_s: float | None = _setting(
        None, "SKIPLOCK_STUCK_TIMEOUT_S", _optional_float,
        "Seconds without a heartbeat after which a job is rescued (default: 6 heartbeats).")
    recovery_interval_s: float | None = _setting(
        None, "SKIPLOCK_RECOVERY_INTERVAL_S", _optional_float,
        "Seconds between stuck-job recoveries (default: the stuck timeout).")
    job_timeout_s: float | None = _setting(
        None, "SKIPLOCK_JOB_TIMEOUT_S", _optional_float,
        "Seconds a job may run before its child is killed (default: no limit).")
    graceful_timeout_s: float = _setting(
        30.0, "SKIPLOCK_GRACEFUL_TIMEOUT_S", float,
        "Seconds running jobs get to finish on TERM/INT/HUP before they are killed.")
    max_jobs_per_child: int | None = _setting(
        None, "SKIPLOCK_MAX_JOBS_PER_CHILD", _optional_int,
        "Recycle a child after this many jobs (default: never).")
    max_memory_per_child_mb: int | None = _setting(
        None, "SKIPLOCK_MAX_MEMORY_PER_CHILD_MB", _optional_int,
        "Recycle a child between jobs once its resident memory exceeds this (MiB).")
    handlers: list[str] = _setting(
        [], "SKIPLOCK_HANDLERS", _list, "Extra handler modules to import (comma-separated).")
    listen: bool = _setting(
        True, "SKIPLOCK_LISTEN", _bool,
        "Wake children with LISTEN/NOTIFY; turn off behind a transaction-mode pooler.")
    poll_min_s: float = _setting(
        0.1, "SKIPLOCK_POLL_MIN_S", float, "Shortest wait between polls of an idle child.")
    poll_max_s: float = _setting(
        2.0, "SKIPLOCK_POLL_MAX_S", float, "Longest wait between polls of an idle child.")
    poll_step_s: float = _setting(
        0.1, "SKIPLOCK_POLL_STEP_S", float, "Added to the wait after each empty poll.")
    batch_size: int = _setting(
        1, "SKIPLOCK_BATCH_SIZE", int, "Jobs a child claims at once when the queue is deep.")
    max_payload_bytes: int = _setting(
        1024 * 1024, "SKIPLOCK_MAX_PAYLOAD_BYTES", int, "Largest payload accepted, in bytes.")
    log_format: str = _setting(
        "text", "SKIPLOCK_LOG_FORMAT", str, "Log format: text (for people) or json.")
    log_level: str = _setting(
        "INFO", "SKIPLOCK_LOG_LEVEL", str, "Log level: DEBUG, INFO, WARNING or ERROR.")
    metrics_port: int | None = _setting(
        None, "SKIPLOCK_METRICS_PORT", _optional_int,
        "Serve Prometheus metrics on this port (default: off).")
    metrics_host: str = _setting(
        "127.0.0.1", "SKIPLOCK_METRICS_HOST", str, "Address the metrics server binds to.")
    home: str = _setting(
        ".skiplock", "SKIPLOCK_HOME", str,
        "Directory of the embedded cluster and other local state.")
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
        return Path(self.home).resolve()

    def validate(self) -> Settings:
        problems = []
        if self.concurrency < 0:
            problems.append("concurrency must be 0 (one per CPU) or more")
        if self.heartbeat_s <= 0:
            problems.append("heartbeat must be positive")
        floor = STUCK_TIMEOUT_MIN_HEARTBEATS * self.heartbeat_s
        if self.effective_stuck_timeout_s < floor:
            problems.append(
                f"stuck timeout ({self.effective_stuck_timeout_s:g}s) must be at least "
                f"{STUCK_TIMEOUT_MIN_HEARTBEATS} heartbeats ({floor:g}s), or live jobs "
                "would be rescued"
            )
        if self.log_format not in {"text", "json"}:
            problems.append("log format must be text or json")
        if self.max_payload_bytes <= 0:
            problems.append("max payload bytes must be positive")
        if self.batch_size < 1:
            problems.append("batch size must be at least 1")
        if not 0 < self.poll_min_s <= self.poll_max_s:
            problems.append("poll interval must satisfy 0 < min <= max")
        if problems:
            raise ConfigurationError("invalid settings: " + "; ".join(problems))
        return self


def describe() -> list[tuple[str, str, str]]:
    """(field name, environment variable, help) of every setting, for docs and `--help`."""
    return [(f.name, f.metadata["env"], f.metadata["help"]) for f in fields(Settings)]


def env_name(name: str) -> str:
    return next(f.metadata["env"] for f in fields(Settings) if f.name == name)


def help_for(name: str) -> str:
    return next(f.metadata["help"] for f in fields(Settings) if f.name == name)


def load_settings(**overrides: Any) -> Settings:
    """Defaults, then `.env` and the environment, then `overrides` (flags) that are not None."""
    load_dotenv(Path.cwd() / ".env", override=False)
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = os.environ.get(f.metadata["env"])
        if raw is None or (raw == "" and f.name == "database_url"):
            continue
        try:
            values[f.name] = f.metadata["parse"](raw)
        except ValueError as exc:
            raise ConfigurationError(f"{f.metadata['env']}={raw!r}: {exc}") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
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
