"""Chromium is looked for only by a run that collects a browser test (conftest.py's
`pytest_collection_finish`), and a run that cannot have it stops on one line.

Each case runs pytest itself on a part of this folder, with SKIPLOCK_CHROMIUM
naming a file that does not exist: a run that looks for chromium then fails at
once (a configured path is never installed over, so nothing is installed here).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.dashboard.conftest import ROOT

MISSING = "/nonexistent/chromium"


def run_pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "SKIPLOCK_CHROMIUM": MISSING})


def test_a_run_with_a_browser_test_stops_on_one_line_when_chromium_cannot_be_had():
    done = run_pytest("tests/dashboard/test_dashboard_browser.py", "-k", "run_now")
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"ERROR: the dashboard's browser tests need chromium: SKIPLOCK_CHROMIUM={MISSING} is not an "
        "executable file (unset it to use Debian's chromium, installed if missing)"]
    assert "passed" not in done.stdout and "failed" not in done.stdout  # no test ran


def test_a_run_without_one_never_looks_for_chromium():
    # A file of browser tests is collected too, and `-k` leaves them all out.
    done = run_pytest("tests/dashboard/test_dashboard_safety.py", "tests/dashboard/test_dashboard_browser.py",
                      "-k", "bind_rule")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert "chromium" not in (done.stdout + done.stderr).lower()
