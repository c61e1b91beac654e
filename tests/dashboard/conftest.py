"""Fixtures of the dashboard's tests: a real `skiplock dashboard` server, a real pool,
and headless Chromium (Debian's package, driven by Playwright). A run that
collects a browser test installs chromium first if the machine has none
(tests/dashboard/chromium.py); any other run never looks for it.

Servers and pools run in sessions of their own and their process groups are
killed in teardown. `SKIPLOCK_SCREENSHOTS=1` makes the page tests save what
they see in docs/dashboard/ (the committed set); other runs write nothing there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard import chromium
from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
HANDLERS = "tests.dashboard.handlers_for_tests"
SCREENSHOTS = ROOT / "docs" / "dashboard"
CHROMIUM: list[str] = []  # the one `pytest_collection_finish` found or installed
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def _start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def _kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Dashboard:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def start_dashboard(tmp_path: Path) -> Iterator[Callable[..., Dashboard]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Dashboard:
        port = free_port()
        log = tmp_path / f"dashboard-{len(started)}.log"
        process = _start([sys.executable, "-m", "skiplock", "dashboard", "--port", str(port),
                          "--refresh", "1", *args], log, env)
        started.append(process)
        board = Dashboard(process, f"http://127.0.0.1:{port}", log)
        if wait:
            wait_for(lambda: listening(port) or process.poll() is not None, timeout=30,
                     what="the dashboard to listen")
            assert process.poll() is None, board.output()
        return board

    yield start
    for process in started:
        _kill(process)


@pytest.fixture
def start_pool(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        process = _start([sys.executable, "-m", "skiplock", "worker", "--handlers", HANDLERS,
                          "--heartbeat", "0.5", "--poll-max", "0.5", *args],
                         tmp_path / f"pool-{len(started)}.log")
        started.append(process)
        return process

    yield start
    for process in started:
        _kill(process)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Chromium, installed once before the first test when a browser test is about
    to run and the machine has none; a run without one (another file, `-k`
    leaving them out) never looks for it. If it cannot be had the run stops on
    one line: the browser tests are never skipped, in CI least of all."""
    if session.config.option.collectonly or CHROMIUM:
        return
    if not any("browser" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    try:
        CHROMIUM.append(chromium.ensure(reporter.write_line if reporter else print))
    except chromium.Missing as exc:
        raise pytest.UsageError(f"the dashboard's browser tests need chromium: {exc}") from None


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "pytest_collection_finish finds chromium for every run with a browser test"
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM[0], args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    # The window the pages are made for (docs/internals.md, the dashboard).
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(15_000)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert not errors, f"script errors on the page: {errors}"


def screenshot(page: Any, name: str) -> None:
    """Save the page as docs/dashboard/NAME.png when SKIPLOCK_SCREENSHOTS=1."""
    if os.environ.get("SKIPLOCK_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
