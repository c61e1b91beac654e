"""Helpers shared by the test layers that run real processes."""

from __future__ import annotations

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "the condition",
             interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something true; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class Clock:
    """A clock the test turns, for the objects that take a `clock` (`time.monotonic`)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> str:
    """A pool's Prometheus page on 127.0.0.1:`port`, or "" while nothing answers there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return str(response.read().decode())
    except (urllib.error.URLError, ConnectionError):
        return ""


# Hypothesis: CI replays the same examples every run (a red CI is reproducible with
# CI=true); a developer's run explores new ones. SKIPLOCK_FUZZ_EXAMPLES=5000 digs deeper.
IN_CI = os.environ.get("CI", "").lower() == "true"


def examples(default: int) -> int:
    return int(os.environ.get("SKIPLOCK_FUZZ_EXAMPLES", default))
