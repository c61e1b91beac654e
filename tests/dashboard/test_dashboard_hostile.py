"""Hostile requests get a short refusal, never a 500, and change nothing (Flask's test
client, the real database): a Host the dashboard does not answer to (DNS rebinding),
a POST from another site's page, NUL where PostgreSQL text cannot hold one, crafted
page links, dates at the ends of the calendar, "back" links that leave the site,
and request text that would forge a log line. Then every route and parameter,
fuzzed. The same rebinding attack against a real server is in
test_dashboard_safety.py.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiplock.cli import main
from skiplock.dashboard import actions
from skiplock.dashboard.app import create_app
from skiplock.dashboard.reads import STATUSES
from skiplock.dashboard.security import for_log, host_allowed, safe_back, same_origin, split_host
from skiplock.dashboard.settings import DashboardSettings, host_name
from skiplock.queue_core import enqueue, enqueue_many
from skiplock.queue_core.errors import ConfigurationError
from tests.dashboard.helpers import logged_actions, sql, status
from tests.support import IN_CI, examples

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


# -- malformed input -------------------------------------------------------------------------------


PENDING_AT = "2026-01-01T00:00:00+00:00"
MALFORMED = [
    # NUL in the job path, each filter, the search
    "/jobs/a%00b", "/jobs/%00", "/jobs?type=a%00", "/jobs?user=a%00", "/jobs?key=a%00",
    "/jobs?q=a%00", "/jobs?status=PENDING%00", "/jobs?since=2026-01-01%00", "/?fragment=%00",
    "/jobs?a%00=1", "/static/dashboard.css%00", "/processes?x=%00",
    # crafted page links
    "/jobs?after=" + cursor(["a\x00"]),
    "/jobs?status=COMPLETED&after=" + cursor([PENDING_AT, "x\x00"]),
    "/jobs?status=PENDING&after=" + cursor([1e999, PENDING_AT, "x"]),  # Infinity
    "/jobs?status=PENDING&after=" + cursor([2**31, PENDING_AT, "x"]),
    "/jobs?status=PENDING&after=" + cursor([10**30, PENDING_AT, "x"]),
    "/jobs?status=PENDING&after=" + cursor([1.5, PENDING_AT, "x"]),
    "/jobs?status=PENDING&after=" + cursor([True, PENDING_AT, "x"]),
    "/jobs?status=PENDING&after=" + cursor([1, PENDING_AT, {"id": "x"}]),
    "/jobs?status=PENDING&after=" + cursor([1, PENDING_AT, None]),
    "/jobs?status=PENDING&after=" + cursor([1, 5, "x"]),
    "/jobs?status=PENDING&after=" + cursor([1, PENDING_AT]),
    "/jobs?status=PROCESSING&after=" + cursor({"time": PENDING_AT, "id": "x"}),
    "/jobs?status=PROCESSING&after=" + cursor(["0001-01-01T00:00:00+01:00", "x"]),
    "/jobs?status=PROCESSING&after=" + cursor(["9999-12-31T23:59:00-01:00", "x"]),
    "/jobs?after=" + cursor([["x"]]), "/jobs?after=" + cursor("x"), "/jobs?after=" + cursor(7),
    "/jobs?after=" + base64.urlsafe_b64encode(b"\xff\xfe[").decode(), "/jobs?after=" + "A" * 5001,
    "/jobs?after=" + cursor(["x"])[:-1] + "%00",
    # dates whose UTC time is before year 1 or after year 9999
    "/jobs?since=0001-01-01T00:00%2B01:00", "/jobs?until=0001-01-01T00:59%2B01:00",
    "/jobs?since=9999-12-31T23:59-01:00", "/jobs?status=COMPLETED&until=9999-12-31T23:00-14:00",
    "/jobs?since=10000-01-01T00:00", "/jobs?since=0000-12-31T00:00",
]


@pytest.mark.parametrize("url", MALFORMED)
def test_malformed_input_is_a_400_page(url):
    enqueue("DASH_OK", {})
    response = create_app(DashboardSettings()).test_client().get(url)
    assert response.status_code == 400, (url, response.status_code)
    assert '<p class="flash warn">' in no_traceback(response)


def test_a_form_with_a_nul_is_a_400_and_changes_nothing():
    client = acting_client()
    for name in ("pause", "resume", "retry-type"):
        response = client.post(f"/actions/{name}", headers=OWN,
                               data={"csrf_token": TOKEN, "type": "DASH\x00OK", "confirmed": "yes"})
        assert response.status_code == 400, name
        no_traceback(response)
    assert paused() == [] and logged_actions() == []


def test_the_listing_pages_through_the_first_and_last_minutes_of_the_calendar():
    enqueue_many([{"type": "DASH_OK", "payload": {"i": i}} for i in range(5)])
    client = create_app(DashboardSettings(page_size=2)).test_client()
    for query in ({"since": "0001-01-01T00:00"}, {"until": "9999-12-31T23:59"},
                  {"since": "0001-01-01T00:00Z", "until": "9999-12-31T23:59:59.999999+00:00"}):
        url, pages = "/jobs?" + urlencode(query), 0
        while url:
            response = client.get(url)
            body = no_traceback(response)
            assert response.status_code == 200, (url, body)
            if "since" in query:
                assert 'name="since" value="0001-01-01T00:00"' in body
            found = re.search(r'<a href="([^"]+)" rel="next">', body)
            url, pages = (found.group(1).replace("&amp;", "&") if found else ""), pages + 1
        assert pages == 3, query


# -- where a form may send the browser back to ---------------------------------------------------


@pytest.mark.parametrize("back", ["/\t/evil.example", "//evil.example", "/\\evil.example",
                                  "\\\\evil.example", "/\n/evil.example", "/\r\n/evil.example",
                                  "/jobs\x00", "/\x0b/evil", "https://evil.example/",
                                  "javascript:alert(1)", " /jobs", "", "jobs", "/jobs\\..\\x",
                                  "/jobs\u2028x", "/\x7f/evil"])
def test_a_back_link_that_could_leave_the_site_is_replaced_by_the_overview(back):
    assert safe_back(back) == "/"
    client = acting_client()
    response = client.post("/actions/resume", headers=OWN,
                           data={"csrf_token": TOKEN, "type": "DASH_OK", "back": back})
    assert response.status_code in (303, 400), back  # 400: the NUL one
    if response.status_code == 303:
        assert response.headers["Location"] == "/"


def test_a_back_link_on_this_site_is_kept():
    for back in ("/", "/jobs?status=DEAD_LETTER&type=A%2FB", "/jobs/abc", "/jobs?q=été"):
        assert safe_back(back) == back
    response = acting_client().post("/actions/resume", headers=OWN, data={
        "csrf_token": TOKEN, "type": "DASH_OK", "back": "/jobs?status=PENDING"})
    assert response.headers["Location"] == "/jobs?status=PENDING"


# -- the log ---------------------------------------------------------------------------------------


FORGED = "x\n2026-01-01 00:00:00.000 ERROR   skiplock: forged \x1b[2J\u202eevil"


def test_request_paths_reach_the_log_escaped(caplog):
    app = create_app(DashboardSettings())

    @app.get("/boom/<rest>")
    def boom(rest: str) -> str:  # whatever fails unforeseen: Flask logs the path with it
        raise RuntimeError("unforeseen")

    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/boom/" + quote(FORGED))
    assert response.status_code == 500
    no_traceback(response)
    [record] = [r for r in caplog.records if "unforeseen" in str(r.exc_info)]
    message = record.getMessage()
    assert message == f"Exception on /boom/{for_log(FORGED)} [GET]"
    assert "\n" not in message and "\x1b" not in message and "\u202e" not in message
    assert "\\n2026-01-01" in message and "\\x1b[2J" in message and "\\u202e" in message


def test_an_action_reaches_the_log_escaped(caplog):
    user = FORGED.replace(":", ".")  # the Basic user name ends at the first ":"
    client = acting_client(password="pw")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{user}:pw".encode()).decode()}
    with caplog.at_level(logging.INFO, logger="skiplock.dashboard"):
        response = client.post("/actions/resume", headers={**auth, **OWN},
                               data={"csrf_token": TOKEN, "type": FORGED})
    assert response.status_code == 303
    [record] = [r for r in caplog.records if r.getMessage().startswith("dashboard: ")]
    assert record.getMessage() == f"dashboard: {for_log(user)} resume {for_log(FORGED)} (0 jobs)"
    assert (record.who, record.target) == (for_log(user), for_log(FORGED))  # type: ignore[attr-defined]
    [entry] = logged_actions()
    assert (entry.who, entry.target) == (user, FORGED)  # the table keeps what was given


# -- every route and parameter, fuzzed -----------------------------------------------------------


TEXT = st.one_of(
    st.sampled_from(["", " ", "\x00", "a\x00b", "\n", "%", "%00", "é", "\u202e", "/", "//x",
                     "/\t/evil.example", "\\", "..", "x" * 300, "PENDING", "DASH_OK", "yes",
                     "0001-01-01T00:00", "9999-12-31T23:59", "{}", "[]", "null", "\ufeff"]),
    st.text(st.characters(codec="utf-8"), max_size=20))
OFFSETS = st.sampled_from([None, *(timezone(timedelta(hours=h)) for h in (-14, -1, 0, 1, 14))])
DATES = st.one_of(
    st.builds(lambda d, tz: d.replace(tzinfo=tz).isoformat(),
              st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)),
              OFFSETS),
    st.sampled_from(["0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00", "0001-01-01",
                     "9999-12-31", "2026-02-30T00:00", "2026-01-01T24:00", "Z", "2026-01-01Z"]),
    TEXT)
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT | DATES,
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)
CURSORS = st.one_of(
    st.lists(JSON, max_size=4).map(cursor), JSON.map(cursor),
    st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    TEXT)
STATUS = st.one_of(st.sampled_from([*STATUSES, "pending", "dead_letter"]), TEXT)


# Mostly the dashboard's own page; else what another page, a proxy or a script may send.
HEADER = st.one_of(st.sampled_from(["localhost", "localhost:8484", "evil.example", "null", "",
                                    "http://localhost", "https://localhost", "http://evil.example",
                                    "http://[::1", "[::1]:1", "http://localhost/jobs"]),
                   st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=30))
HEADERS = st.one_of(st.just(OWN), st.fixed_dictionaries(
    {}, optional={"Host": HEADER, "Origin": HEADER, "Referer": HEADER}))


def _query(**values: Any) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=values)


# (method, path, query string, form); a path's `{job}` is one of the fixture's real jobs.
REQUESTS = st.one_of(
    st.tuples(st.just("GET"), st.just("/"), _query(fragment=TEXT), st.just({})),
    st.tuples(st.just("GET"), st.just("/jobs"),
              _query(q=TEXT, status=STATUS, type=TEXT, user=TEXT, key=TEXT, since=DATES,
                     until=DATES, after=CURSORS), st.just({})),
    st.tuples(st.just("GET"), st.one_of(st.just("/jobs/{job}"), TEXT.map(lambda t: "/jobs/" + quote(t))),
              st.just({}), st.just({})),
    st.tuples(st.just("POST"),
              st.tuples(st.one_of(st.just("{job}"), TEXT), st.one_of(st.sampled_from(
                  list(actions.JOB_ACTIONS)), TEXT)).map(
                  lambda p: f"/jobs/{p[0] if p[0] == '{job}' else quote(p[0], safe='')}"
                            f"/actions/{quote(p[1], safe='')}"),
              st.just({}), st.just({})),
    st.tuples(st.just("POST"),
              st.one_of(st.sampled_from(list(actions.BULK_ACTIONS)), TEXT).map(
                  lambda n: "/actions/" + quote(n, safe="")),
              st.just({}), _query(type=TEXT, back=TEXT, confirmed=st.one_of(st.just("yes"), TEXT))),
    st.tuples(st.just("GET"), st.sampled_from(["/processes", "/schedules", "/actions"]),
              _query(x=TEXT), st.just({})),
    st.tuples(st.just("GET"), TEXT.map(lambda t: "/static/" + quote(t)), st.just({}), st.just({})),
)


@pytest.fixture
def fuzz_target() -> tuple[Any, list[str]]:
    jobs = enqueue_many([{"type": "DASH_OK", "payload": {"i": i}, "delay": 3600} for i in range(3)])
    return acting_client(page_size=3), jobs


@settings(max_examples=examples(300), deadline=None, derandomize=IN_CI,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(request=REQUESTS, headers=HEADERS, which=st.integers(0, 2))
def test_every_route_and_parameter_fuzzed_answers_without_a_500(
        fuzz_target: tuple[Any, list[str]], request: tuple[str, str, dict[str, Any], dict[str, Any]],
        headers: dict[str, str], which: int) -> None:
    client, jobs = fuzz_target
    method, path, query, form = request
    path = path.replace("{job}", jobs[which])
    response = client.open(path, method=method, query_string=query, headers=headers,
                           data={"csrf_token": TOKEN, **form} if method == "POST" else None)
    assert response.status_code < 500, (method, path, query, form, response.status_code)
    no_traceback(response)
    if 300 <= response.status_code < 400:
        # Never off the site: a path, or (werkzeug merging "//" in a path) this host's URL.
        location = response.headers["Location"]
        own = f"http://{headers.get('Host', 'localhost')}"
        local = location[len(own):] if location.lower().startswith(own.lower() + "/") else location
        assert safe_back(local) == local, (path, form, headers, location)
