"""Running the command line in tests: click's runner, and a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from click.testing import CliRunner, Result

from skiplock.cli import main
from skiplock.queue_core import config

runner = CliRunner()


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    config.clear_cache()
    result = runner.invoke(main, list(args), input=input, env=env, catch_exceptions=False)
    config.clear_cache()
    return result


def skiplock(*args: str, env: dict[str, str] | None = None,
             **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "skiplock", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120, **kwargs)


def one_error_line(result: Result, fragment: str) -> None:
    """Exit 1 with a single `skiplock: error:` line that says `fragment`."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("skiplock: error: ") and fragment in lines[0], lines[0]
