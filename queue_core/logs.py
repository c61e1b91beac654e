"""Logs a person can read, or JSON lines for machines.

Code logs lazily (`log.info("claimed %s", job_id)`) and puts what a log system
should index in `extra=` (job_id, job_type, attempt, worker, duration_ms, ...).
The text format appends those as `key=value`; the JSON format makes them
fields.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_SECRETS: list[str] = []  # forms of the database password: never in a log line
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return _scrub(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(entry, default=str))


def _scrub(line: str) -> str:
    for secret in _SECRETS:
        line = line.replace(secret, "***")
    return line


def configure_logging(fmt: str = "text", level: str = "INFO", database_url: str | None = None
                      ) -> None:
    """Send skiplock's logs to stderr in `fmt` ("text" or "json").

    Every line is scrubbed of the password of `database_url`, whatever logged it.
    """
    from skiplock.queue_core.database.urls import secrets_of

    _SECRETS[:] = secrets_of(database_url)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
