"""The repository's top-level folders are parts of the one package `skiplock`
(skiplock/queue_core links to queue_core/): imported by their bare names they
refuse at once, in one line, instead of loading a second copy of every module."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["queue_core", "pool.master", "handlers.registry"])
def test_a_bare_import_fails_with_one_line_naming_the_right_one(module: str) -> None:
    package = module.split(".")[0]
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ImportError: import skiplock.{package}, not {package}:"), last


def test_the_package_imports_them_under_its_own_name() -> None:
    done = subprocess.run([sys.executable, "-c", "import skiplock.queue_core, skiplock.pool, "
                           "skiplock.handlers"], cwd=REPO, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
