"""No form of a database URL, valid or not, ever prints its password.

Every password is built from marked pieces ("Qz9" + digits) joined by the
characters that confuse URL parsers (@ : / ? & = # % + and their percent
escapes). A piece that leaks carries the mark, so the assertion is simply:
the mark is nowhere in what skiplock printed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from skiplock.cli import main
from skiplock.pool.master import describe_settings
from skiplock.queue_core import config
from skiplock.queue_core.config import Settings
from skiplock.queue_core.database import db
from skiplock.queue_core.database.urls import normalize, redact, scrub
from skiplock.queue_core.errors import ConfigurationError
from skiplock.queue_core.logs import configure_logging
from tests.support import IN_CI, examples, free_port, wait_for

MARK = "Qz9"
REPO = Path(__file__).resolve().parents[2]

pieces = st.integers(0, 999).map(lambda n: f"{MARK}{n}")
confusing = st.sampled_from(["@", ":", "/", "?", "&", "=", "#", "%", "+", " ", "'", "\\",
                             "%40", "%3A", "%2F", "%25", "%3f", "@@", "::"])
passwords = st.lists(st.one_of(pieces, confusing), min_size=1, max_size=6).map("".join).filter(
    lambda p: MARK in p)
schemes = st.sampled_from(["postgresql", "postgres", "postgresql+psycopg2", "postgresql+psycopg",
                           "postgresql+asyncpg", "mysql", "pgsql", ""])
users = st.sampled_from(["app", "a.b", "user%40corp", "ro-le"])
ports = st.sampled_from(["", ":{port}", ":5x", ":70000", ":", ":-1"])
secret_names = st.sampled_from(["password", "PASSWORD", "sslpassword", "pass%77ord", "Password"])


@st.composite
def urls(draw: st.DrawFn) -> str:
    password = draw(passwords)
    encoded = draw(st.booleans())
    shown = quote(password, safe="") if encoded else password
    scheme = draw(schemes)
    user = draw(users)
    port = draw(ports).format(port=CLOSED_PORT)
    shape = draw(st.sampled_from(["userinfo", "query", "both", "keywords", "no-scheme"]))
    extra = draw(st.sampled_from(["", "&application_name=x@y", "&sslmode=disable",
                                  "&host=/nonexistent"]))
    base = f"{scheme}://" if scheme else ""
    if shape == "keywords":
        quoted = "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return f"host=127.0.0.1 port={CLOSED_PORT} user={user} password={quoted} dbname=x"
    if shape == "no-scheme" or not scheme:
        # "app:" + "//x@host" would read as the URL app://x@host, whose x is a user name.
        assume(not shown.startswith("//"))
    if shape == "no-scheme":
        return f"{user}:{shown}@127.0.0.1{port}/db"
    if shape == "userinfo":
        return f"{base}{user}:{shown}@127.0.0.1{port}/db" + (f"?x=1{extra}" if extra else "")
    name = draw(secret_names)
    second = quote(draw(passwords), safe="")
    userinfo = f"{user}:{shown}@" if shape == "both" else f"{user}@"
    return f"{base}{userinfo}localhost{port}/db?{name}={second}{extra}"


CLOSED_PORT = free_port()
runner = CliRunner()


def _cli(url: str, *args: str) -> str:
    config.clear_cache()
    db.reset_engine()
    try:
        result = runner.invoke(main, list(args), env={"DATABASE_URL": url})
    finally:
        config.clear_cache()
        db.reset_engine()
    assert result.exit_code in (0, 1, 2), (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    return result.output


@settings(max_examples=examples(120), deadline=None, derandomize=IN_CI,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(url=urls())
def test_no_printing_path_shows_the_password(url: str) -> None:
    printed = [redact(url)]
    try:
        printed.append(redact(normalize(url)))
    except ConfigurationError as exc:
        printed.append(str(exc))
    printed.append(describe_settings(Settings(database_url=url), url))
    printed.append(scrub(f"could not translate host name {url} {url.replace('%40', '@')}", url))
    printed.append(_cli(url, "db", "url"))
    printed.append(_cli(url, "stats"))  # the connection fails: the driver's error is printed
    for text in printed:
        assert MARK not in text, (url, text)


@given(url=urls())
@settings(max_examples=examples(40), deadline=None, derandomize=IN_CI)
def test_log_lines_are_scrubbed_whatever_logs_them(url: str) -> None:
    import io

    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("json", "INFO", url)
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("skiplock.test").warning("connecting to %s", url)
        configure_logging("text", "INFO", url)
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        logging.getLogger("skiplock.test").warning("connecting to %s", url, extra={"url": url})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert MARK not in stream.getvalue(), stream.getvalue()


def test_db_url_shows_the_password_only_when_asked() -> None:
    url = f"postgresql://app:{MARK}pw@127.0.0.1:{CLOSED_PORT}/db?password={MARK}2"
    masked = _cli(url, "db", "url")
    assert MARK not in masked and "app:***@127.0.0.1" in masked and "password=***" in masked
    assert MARK in _cli(url, "db", "url", "--show-password")


def test_a_worker_given_a_password_on_its_command_line_never_shows_it(
        database_url: str, tmp_path: Path) -> None:
    """The start-up line, the process titles and /proc/PID/cmdline of master and children."""
    from sqlalchemy.engine import make_url

    secret = f"{MARK}-worker-pw"
    with_password = make_url(database_url).set(password=secret).render_as_string(
        hide_password=False)  # the test server trusts local connections: any password works
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SKIPLOCK_") and k != "DATABASE_URL"}
    env.update(SKIPLOCK_HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skiplock", "worker", "--concurrency", "2",
                                 "--database-url", with_password, "--no-listen"], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        wait_for(lambda: "starting" in log_path.read_text(), 30, "the master's start-up line")

        def children() -> list[int]:
            found = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                   text=True).stdout.split()
            return [int(pid) for pid in found]

        kids = wait_for(lambda: len(children()) == 2 and children(), 30, "two children")
        # Until setproctitle ran, the command line held the URL: wait for the titles.
        for pid in [proc.pid, *kids]:
            wait_for(lambda pid=pid: b"skiplock:" in Path(f"/proc/{pid}/cmdline").read_bytes(),
                     10, f"the title of {pid}")
            assert MARK.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert "database=" in log_path.read_text() and MARK not in log_path.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    assert MARK not in log_path.read_text()
