"""Hostile requests get a short refusal and change nothing (Flask's test client, the
real database): a Host the dashboard does not answer to (DNS rebinding), a POST
from another site's page. The same rebinding attack against a real server is in
test_dashboard_safety.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from click.testing import CliRunner

from skiplock.cli import main
from skiplock.dashboard.app import create_app
from skiplock.dashboard.security import host_allowed, same_origin, split_host
from skiplock.dashboard.settings import DashboardSettings, host_name
from skiplock.queue_core import enqueue
from skiplock.queue_core.errors import ConfigurationError
from tests.dashboard.helpers import logged_actions, sql, status

TOKEN = "the-csrf-token"
OWN = {"Origin": "http://localhost"}  # the test client's requests are for Host: localhost


def acting_client(**overrides: Any) -> Any:
    """A test client of a dashboard with --allow-actions whose session holds TOKEN."""
    client = create_app(DashboardSettings(allow_actions=True, **overrides)).test_client()
    with client.session_transaction() as session:
        session["csrf_token"] = TOKEN
    return client


def cursor(values: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def no_traceback(response: Any) -> str:
    body = str(response.get_data(as_text=True))
    assert "Traceback" not in body and "File \"" not in body, body
    return body


def paused() -> list[str]:
    return [r.type for r in sql('SELECT type FROM "WorkerJobPause"')]


# -- the Host header ---------------------------------------------------------------------------


def test_a_host_the_dashboard_does_not_answer_to_is_refused_before_any_route():
    job = enqueue("DASH_OK", {"secret": "payload"}, delay=3600)
    client = acting_client()
    for method, path in [("GET", "/"), ("GET", "/jobs"), ("GET", f"/jobs/{job}"),
                         ("GET", "/actions"), ("GET", "/static/dashboard.css"),
                         ("GET", "/no-such-page"), ("POST", f"/jobs/{job}/actions/cancel"),
                         ("POST", "/actions/pause")]:
        for host in ("evil.example", "evil.example:8484", "localhost.evil.example",
                     "127.0.0.1.nip.io:8484", "localhost:8484@evil", "[::1", "localhost:x"):
            response = client.open(path, method=method, headers={"Host": host, **OWN},
                                   data={"csrf_token": TOKEN, "type": "DASH_OK",
                                         "confirmed": "yes"})
            assert response.status_code == 400, (method, path, host)
            body = response.get_data(as_text=True)
            assert body.startswith("this dashboard does not answer to that host name"), body
            assert job not in body and "payload" not in body
            assert "Set-Cookie" not in response.headers  # no session for a rebound name
    assert status(job) == "PENDING" and paused() == [] and logged_actions() == []

    for host in ("localhost", "LOCALHOST:8484", "127.0.0.1:8484", "127.0.0.1", "[::1]:9000"):
        assert client.get("/", headers={"Host": host}).status_code == 200, host


def test_the_names_a_dashboard_answers_to():
    loopback = DashboardSettings()
    assert host_allowed(loopback, None)  # HTTP/1.0 without a Host: no browser sends that
    assert not host_allowed(loopback, "") and not host_allowed(loopback, "10.0.0.5:8484")
    assert not host_allowed(loopback, "0.0.0.0:8484")  # "0.0.0.0 day": not the bind address
    named = DashboardSettings(host="0.0.0.0", token="t",
                              allowed_hosts=(host_name("Dash.Example.com"), host_name("[::1]")))
    for host in ("dash.example.com", "DASH.EXAMPLE.COM:443", "10.0.0.5:8484", "[fe80::1]:8484",
                 "localhost:8484"):
        assert host_allowed(named, host), host
    for host in ("evil.dash.example.com", "dash.example.com.evil", "dash.example.co"):
        assert not host_allowed(named, host), host
    ipv6 = DashboardSettings(host="::1")
    assert host_allowed(ipv6, "[::1]:8484") and host_allowed(ipv6, "127.0.0.1")
    assert not host_allowed(DashboardSettings(host="10.0.0.5", token="t"), "10.0.0.6")
    assert split_host("[::1]:80") == ("::1", "80") and split_host("A:1") == ("a", "1")
    assert split_host("a:") is None and split_host("[::1]x") is None and split_host(":80") is None
    for bad in ("dash.example.com:8484", "http://dash", "a b", "", "a/b"):
        with pytest.raises(ConfigurationError):
            host_name(bad)
    refused = CliRunner().invoke(main, ["dashboard", "--allowed-host", "dash:8484"])
    assert refused.exit_code == 2 and "not a host name" in refused.output


# -- POSTs from another site ---------------------------------------------------------------------


@pytest.mark.parametrize("headers", [
    {}, {"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://localhost:8484"},
    {"Origin": "http://localhost.evil.example"}, {"Origin": "http://localhost@evil.example"},
    {"Origin": "http://[::1"}, {"Origin": "file://localhost"},
    {"Referer": "http://evil.example/jobs"}, {"Referer": "/jobs"},
    {"Origin": "http://evil.example", "Referer": "http://localhost/jobs"},
])
def test_a_post_from_another_origin_is_refused_and_changes_nothing(headers):
    job = enqueue("DASH_OK", {}, delay=3600)
    client = acting_client()
    for path, form in [(f"/jobs/{job}/actions/cancel", {}),
                       ("/actions/pause", {"type": "DASH_OK", "confirmed": "yes"})]:
        response = client.post(path, data={"csrf_token": TOKEN, **form}, headers=headers)
        assert response.status_code == 403, (path, headers)
        assert "not sent from a page of this dashboard" in no_traceback(response)
    assert status(job) == "PENDING" and paused() == [] and logged_actions() == []


@pytest.mark.parametrize("headers", [OWN, {"Origin": "https://localhost"},
                                     {"Referer": "http://localhost/jobs/x?y=1"}])
def test_a_post_from_a_page_of_its_own_is_done(headers):
    job = enqueue("DASH_OK", {}, delay=3600)
    response = acting_client().post(f"/jobs/{job}/actions/cancel", data={"csrf_token": TOKEN},
                                    headers=headers)
    assert response.status_code == 303
    assert status(job) == "FAILED"
    assert [(a.who, a.action, a.target) for a in logged_actions()] == [("local", "cancel", job)]
    assert same_origin("[::1]:8484", "http://[::1]:8484", None)
    assert not same_origin(None, "http://localhost", None)
