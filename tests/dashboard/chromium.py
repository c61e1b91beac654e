"""Debian's chromium for the dashboard's browser tests, installed only when they run.

A test run that collects a browser test asks `ensure()` first
(tests/dashboard/conftest.py); a run without one never looks, so `make test`
on one unrelated file does not reach for apt-get. `make chromium` runs this
file to install it ahead of time. Never `playwright install`: that downloads
a browser build from outside the distribution, which CI and a packager's
machine have no reason to trust.

Standard library only: `make chromium` runs it with the system's Python,
before any virtual environment exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

DEBIAN_PATH = "/usr/bin/chromium"
ANNOUNCE = "installing chromium for the dashboard's browser tests (apt-get, ~1 min)"


class Missing(Exception):
    """No chromium, and none could be installed: the message is one line."""


def found() -> str | None:
    return shutil.which("chromium") or (DEBIAN_PATH if os.access(DEBIAN_PATH, os.X_OK) else None)


def ensure(say: Callable[[str], None]) -> str:
    """The chromium to drive: SKIPLOCK_CHROMIUM when set (never installed over), else
    the one on this machine, else Debian's package installed now, once, after
    `say` has told the person waiting why. Raises Missing when it cannot be had."""
    configured = os.environ.get("SKIPLOCK_CHROMIUM")
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise Missing(f"SKIPLOCK_CHROMIUM={configured} is not an executable file "
                      "(unset it to use Debian's chromium, installed if missing)")
    path = found()
    if path:
        return path
    say(ANNOUNCE)
    _install()
    path = found()
    if path is None:
        raise Missing(f"apt-get installed chromium, yet there is none on PATH nor at {DEBIAN_PATH}")
    return path


def _install() -> None:
    if shutil.which("apt-get") is None:
        raise Missing("chromium is missing and this machine has no apt-get: install a chromium "
                      "and point SKIPLOCK_CHROMIUM at it")
    if os.geteuid() == 0:
        prefix: list[str] = []
    elif shutil.which("sudo"):
        prefix = ["sudo", "-n"]  # CI runners' passwordless sudo; a prompt would hang the run
    else:
        raise Missing("chromium is missing and installing it needs root: "
                      "run `sudo apt-get install chromium`, then the tests again")
    # Another run installing at the same time holds dpkg's lock: wait for it.
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-qq",
           "-o", "DPkg::Lock::Timeout=300"]
    for step in (["update"], ["install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run([*apt, *step], capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            raise Missing(f"could not install chromium: apt-get {step[0]}: {why}")


if __name__ == "__main__":  # `make chromium`
    try:
        ensure(lambda line: print(line, flush=True))
    except Missing as exc:
        print(f"make chromium: {exc}", file=sys.stderr)
        sys.exit(1)
