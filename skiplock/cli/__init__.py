"""The `skiplock` command: a click group; each module below adds its commands."""

# Each import registers that module's commands on `main`.
from skiplock.cli import demo  # noqa: E402,F401,I001  (skiplock demo)
from skiplock.cli import core  # noqa: E402,F401,I001
from skiplock.cli import worker  # noqa: E402,F401,I001
from skiplock.cli import ops  # noqa: E402,F401,I001
from skiplock.cli import backfill  # noqa: E402,F401,I001
from skiplock.cli import schedule  # noqa: E402,F401,I001
from skiplock.cli import features  # noqa: E402,F401,I001  (cancel, wait)
from skiplock.cli import dashboard  # noqa: E402,F401,I001
from skiplock.cli import policies  # noqa: E402,F401,I001  (skiplock policy)
from skiplock.cli.app import main

__all__ = ["main"]
