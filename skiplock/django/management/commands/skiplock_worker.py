"""`manage.py skiplock_worker [FLAGS]`: skiplock's worker pool with the project's handlers.

Every flag is `skiplock worker`'s (`manage.py skiplock_worker --help` lists them);
skiplock/django/worker.py says what Django adds.
"""

from __future__ import annotations

import os
import sys
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from skiplock.django import worker


class Command(BaseCommand):
    help = ("Run skiplock's worker pool with the project's handlers; the flags are "
            "`skiplock worker`'s (--help lists them).")

    def run_from_argv(self, argv: list[str]) -> None:
        # The worker's own flags, parsed by its own command rather than argparse; the
        # system checks first, as any command (SKIPLOCK_DATABASE must be PostgreSQL's).
        try:
            self.check()
        except CommandError as exc:
            self.stderr.write(f"{type(exc).__name__}: {exc}")
            sys.exit(exc.returncode)
        worker.run(worker.without_django_options(argv[2:]),
                   prog_name=f"{os.path.basename(argv[0])} {argv[1]}")

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("flags", nargs="*", help="flags of `skiplock worker`")

    def handle(self, *args: Any, **options: Any) -> None:
        # call_command("skiplock_worker"): the flags of the settings and the environment.
        worker.run(list(options.get("flags") or args), prog_name="skiplock_worker")
