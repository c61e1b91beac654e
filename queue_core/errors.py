"""Every error skiplock raises on purpose.

Each class's docstring is its default message, so ``raise InvalidJob()`` and
``raise InvalidJob("priority must be an integer")`` both read well. The command
line prints ``str(error)`` of any ``SkiplockError`` as one line and exits 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class SkiplockError(Exception):
    """skiplock failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(SkiplockError):
    """A setting has a value that cannot be used."""


class DatabaseUnavailable(SkiplockError):
    """The database cannot be reached."""


class PermissionDenied(DatabaseUnavailable):
    """The database role lacks a grant skiplock needs.

    A kind of unavailability: the pool's loops ride it out with one log line
    (a grant revoked while running) instead of crashing; a child that finds a
    grant missing when it boots stops the pool with exit status 3.
    """


class EmbeddedDatabaseError(SkiplockError):
    """The embedded PostgreSQL cluster could not be started."""


# Only `skiplock worker`, `migrate`, `demo` and `db start` start the embedded
# cluster; every other command, and the Python API, use it only if it runs.
class EmbeddedNotRunning(DatabaseUnavailable):
    """No database is configured: DATABASE_URL is unset and the embedded cluster is not running."""


class InvalidJob(SkiplockError):
    """The job is not valid."""


class UnknownJobType(InvalidJob):
    """No handler is registered for this job type."""


class InvalidPayload(InvalidJob):
    """The payload does not fit its job type."""


class JobNotFound(SkiplockError):
    """No job has this id."""


class WaitTimeout(SkiplockError):
    """The job did not finish within the time given."""


class TransactionConflict(SkiplockError):
    """The caller's transaction conflicts with a concurrent one; roll it back and retry it."""

    def __init__(self, message: str | None = None, sqlstate: str = "40001") -> None:
        super().__init__(message)
        # The server's code, for retry loops that match on it (40001, 40P01).
        self.sqlstate = sqlstate
