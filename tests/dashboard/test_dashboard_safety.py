"""Who may reach the dashboard: loopback by default, credentials anywhere else."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest

from skiplock.dashboard.security import authenticate, csrf_ok, same_secret
from skiplock.dashboard.settings import DashboardSettings, check_bind, is_loopback
from skiplock.queue_core import enqueue
from skiplock.queue_core.errors import ConfigurationError
from tests.dashboard.conftest import ROOT
from tests.dashboard.helpers import logged_actions, make_dead, status
from tests.support import free_port


def get(url: str, headers: dict[str, str] | None = None,
        data: bytes | None = None) -> tuple[int, str, Any]:
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), exc.headers


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "dashboard.internal"])
def test_a_non_local_bind_without_credentials_refuses_to_start(host):
    env = {k: v for k, v in os.environ.items()
           if k not in ("SKIPLOCK_DASHBOARD_PASSWORD", "SKIPLOCK_DASHBOARD_TOKEN")}
    done = subprocess.run([sys.executable, "-m", "skiplock", "dashboard", "--host", host,
                           "--port", str(free_port())], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skiplock: error: refusing to serve"), lines
    assert "SKIPLOCK_DASHBOARD_PASSWORD" in lines[0]


def test_with_a_password_a_non_local_bind_starts_and_asks_every_request_for_it(
        start_dashboard, browser):
    job = enqueue("DASH_OK", {})
    make_dead(job)
    board = start_dashboard("--host", "0.0.0.0", "--allow-actions",
                            env={"SKIPLOCK_DASHBOARD_PASSWORD": "correct horse",
                                 "SKIPLOCK_DASHBOARD_TOKEN": "t0ken"})
    assert "credentials required" in board.output()
    code, _, headers = get(board.url + "/")
    assert code == 401 and headers["WWW-Authenticate"].startswith("Basic")
    for wrong in (basic("ops", "correct hors"), basic("ops", "correct horse "),
                  {"Authorization": "Bearer t0ke"}, {"Authorization": "Basic !!"}):
        assert get(board.url + "/jobs", wrong)[0] == 401, wrong
    assert get(board.url + "/static/dashboard.css")[0] == 401
    code, body, headers = get(board.url + "/", basic("alice", "correct horse"))
    assert code == 200 and "Overview" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert get(board.url + "/processes", {"Authorization": "Bearer t0ken"})[0] == 200

    # Who acted is the user name given with the password.
    context = browser.new_context(http_credentials={"username": "alice",
                                                    "password": "correct horse"})
    page = context.new_page()
    page.goto(f"{board.url}/jobs/{job}")
    page.click('button[data-action="retry"]')
    page.wait_for_selector(".flash.ok")
    context.close()
    assert status(job) == "PENDING"
    [entry] = logged_actions()
    assert (entry.who, entry.action, entry.target) == ("alice", "retry", job)


def test_the_bind_rule_and_the_credential_checks():
    assert is_loopback("127.0.0.1") and is_loopback("127.8.0.1") and is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example")
    check_bind(DashboardSettings())
    check_bind(DashboardSettings(host="0.0.0.0", token="x"))
    with pytest.raises(ConfigurationError):
        check_bind(DashboardSettings(host="0.0.0.0"))

    assert authenticate(DashboardSettings(), None) == "local"
    guarded = DashboardSettings(password="pw", token="tk")
    assert authenticate(guarded, None) is None
    assert authenticate(guarded, basic("bob", "pw")["Authorization"]) == "bob"
    assert authenticate(guarded, basic("", "pw")["Authorization"]) == "anonymous"
    assert authenticate(guarded, basic("bob", "tk")["Authorization"]) == "bob"
    assert authenticate(guarded, "Bearer tk") == "token"
    assert authenticate(guarded, "Bearer pw") is None
    assert authenticate(guarded, "Digest pw") is None
    assert same_secret("é", "é") and not same_secret("a", "ab")
    assert not csrf_ok(None, None) and not csrf_ok("x", "") and csrf_ok("x", "x")


def test_without_its_extra_the_command_says_what_to_install():
    code = ("import sys; sys.modules['flask'] = None; "
            "from skiplock.cli import main; main(['dashboard'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip() == ("skiplock: error: the dashboard needs its extra: "
                                   "pip install 'skiplock[dashboard]'")


def test_a_page_reads_in_a_read_only_transaction_with_a_time_limit():
    from sqlalchemy import text

    from skiplock.dashboard.reads import reading
    from skiplock.queue_core.errors import DatabaseUnavailable

    # A read-only refusal is classified with the faults of a failover (queue_core/database/faults.py).
    with pytest.raises(DatabaseUnavailable, match="read-only transaction"), \
            reading(DashboardSettings()) as c:
        c.execute(text('DELETE FROM "WorkerJob"'))
    with pytest.raises(DatabaseUnavailable, match="statement timeout"), \
            reading(DashboardSettings(read_timeout_ms=100)) as c:
        c.execute(text("SELECT pg_sleep(5)"))


def test_a_dns_rebinding_page_reads_nothing_and_cancels_nothing(start_dashboard):
    """What a page of evil.example can do once its name points at 127.0.0.1: its
    requests are of its own origin, so it could read every page (the CSRF token
    too) and post the forms; only the Host header it sends gives it away."""
    job = enqueue("DASH_OK", {"secret": "payload"}, delay=3600)
    board = start_dashboard("--allow-actions", "--allowed-host", "dash.test")
    port = board.url.rsplit(":", 1)[1]
    rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
    for path in ("/", "/jobs", f"/jobs/{job}", "/actions", "/static/dashboard.js"):
        code, body, headers = get(board.url + path, rebound)
        assert code == 400, path
        assert "does not answer to that host name" in body and job not in body
        assert headers["Set-Cookie"] is None
    code, _, _ = get(f"{board.url}/jobs/{job}/actions/cancel", rebound, data=b"csrf_token=x")
    assert code == 400

    # A form of another site posted to the right address, with a session and its
    # token (what a rebinding page would hold): refused by its Origin.
    code, body, headers = get(f"{board.url}/jobs/{job}")
    assert code == 200
    cookie = headers["Set-Cookie"].split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', body).group(1)  # type: ignore[union-attr]
    form = f"csrf_token={token}".encode()
    for origin in ({"Origin": f"http://evil.example:{port}"}, {"Origin": "null"},
                   {"Referer": f"http://evil.example:{port}/"}, {}):
        code, body, _ = get(f"{board.url}/jobs/{job}/actions/cancel",
                            {"Cookie": cookie, **origin}, data=form)
        assert code == 403 and "not sent from a page of this dashboard" in body, origin
    assert status(job) == "PENDING" and logged_actions() == []

    # The same form from the dashboard's own page, and a name given with --allowed-host.
    assert get(board.url + "/", {"Host": f"dash.test:{port}"})[0] == 200
    code, _, _ = get(f"{board.url}/jobs/{job}/actions/cancel",
                     {"Cookie": cookie, "Origin": board.url}, data=form)
    assert code == 200  # urllib follows the 303 to the job's page
    assert status(job) == "FAILED"
    assert [(a.who, a.action, a.target) for a in logged_actions()] == [("local", "cancel", job)]
