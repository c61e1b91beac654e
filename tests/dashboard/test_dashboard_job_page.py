"""The job page and the job listing as a person reads them: what became of a job and
why above the fold, and a listing that fits the window, whatever the rows hold.

The layout is measured in headless Chromium at 1280x800 (conftest.py's page);
the outcome sentences through the application itself (Flask's test client,
the real database), one job in each state.
"""

from __future__ import annotations

import html
import os
import re
from typing import Any

import pytest
from playwright.sync_api import expect

from skiplock.dashboard.app import create_app
from skiplock.dashboard.settings import DashboardSettings
from skiplock.queue_core import enqueue
from skiplock.queue_core.features.cancel import cancel
from tests.dashboard.helpers import make_dead, sql

EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
WIDTH, HEIGHT = 1280, 800
T = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"

# What an audit found widening the pages: a type at the schema's 200 characters,
# a user id and a key without a space to break at, a traceback, a payload of
# long unbroken strings; all of it carrying markup that must stay text.
LONG_TYPE = ("<i>T</i>_" + "NIGHTLY_ACCOUNT_RECONCILIATION_" * 7)[:200]
LONG_USER = "<b>user</b>-" + "u" * 150
LONG_KEY = "reconcile:" + "k" * 300
TRACEBACK = "\n".join(
    ["Traceback (most recent call last):"]
    + [f'  File "/srv/app/reconcile/step_{i}.py", line {10 * i}, in run_step_{i}\n'
       f"    ledger = fetch_ledger(account_id, window=window_{i})" for i in range(12)]
    + ["ConnectionError: the ledger service refused " + "a" * 400 + " " + EVIL])


def hostile_job(status: str = "DEAD_LETTER", payload: dict[str, Any] | None = None) -> str:
    job = enqueue("DASH_OK", payload or {"html": EVIL, "account": "acct-" + "9" * 200,
                                         "window": {"from": "2026-01-01", "to": "2026-12-31"}})
    sql("""UPDATE "WorkerJob" SET type = :type, "userId" = :user, "lastError" = :error,
               "idempotencyKey" = :key || id, status = CAST(:status AS "JobStatus"),
               attempts = "maxAttempts", "startedAt" = now() - interval '3 s',
               "completedAt" = CASE WHEN :status = 'DEAD_LETTER' THEN now() END
           WHERE id = :id""", type=LONG_TYPE, user=LONG_USER, error=TRACEBACK, key=LONG_KEY,
        status=status, id=job)
    return job


@pytest.fixture
def long_user() -> None:
    sql('INSERT INTO "User" (id, name, timezone) VALUES (:id, :id, \'UTC\')', id=LONG_USER)


def no_horizontal_scroll(page: Any) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
    assert page.evaluate("document.body.scrollWidth") <= WIDTH


def not_pwned(page: Any) -> None:
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img").count() == 0


def test_a_dead_letter_shows_its_outcome_error_attempts_and_timing_above_the_fold(
        start_dashboard, page, long_user):
    job = hostile_job()
    board = start_dashboard("--allow-actions")
    page.goto(f"{board.url}/jobs/{job}")
    assert page.viewport_size == {"width": WIDTH, "height": HEIGHT}
    not_pwned(page)
    no_horizontal_scroll(page)

    outcome = page.locator("p.outcome.dead")
    assert re.fullmatch(rf"dead-lettered at {T} \(.+ ago\) · after attempt 3 of 3",
                        " ".join(outcome.inner_text().split()))
    error = page.locator("pre.error")
    assert error.text_content() == TRACEBACK  # whole, as text
    timing = page.locator("dl.timing")
    expect(timing).to_contain_text(LONG_TYPE)
    expect(timing).to_contain_text("attempts3 of 3")
    for label in ("created", "available", "started", "finished", "ran"):
        expect(timing.locator("dt", has_text=re.compile(f"^{label}$"))).to_have_count(1)
    # Above the fold: the outcome and the timing whole, the error's first lines.
    for box in (outcome.bounding_box(), timing.bounding_box()):
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT, box
    box = error.bounding_box()
    assert box and box["y"] + 100 <= HEIGHT, box
    expect(page.locator('button[data-action="retry"]')).to_be_in_viewport()

    # Then payload and result as JSON, the other fields by name.
    expect(page.locator("pre.payload")).to_contain_text('"account": "acct-999')
    expect(page.locator("p.result")).to_have_text("No result.")
    details = page.locator("dl.details")
    expect(details.locator("dd a")).to_have_text(LONG_USER)
    expect(details).to_contain_text(LONG_KEY + job)
    assert details.locator("dt").all_inner_texts()[:3] == ["priority", "idempotency key", "user"]


def test_the_job_listing_fits_the_window_with_long_hostile_rows(start_dashboard, page, long_user):
    jobs = [hostile_job(status) for status in ("DEAD_LETTER", "PENDING", "DEAD_LETTER")]
    # A payload too big to preview (random, so it does not compress below the limit).
    big = hostile_job(payload={"blob": os.urandom(3000).hex()})
    # An id not made by enqueue (imported, say) is shown whole, cut by the cell.
    odd = "imported:" + "z" * 120 + '<b>"x"</b>'
    sql('UPDATE "WorkerJob" SET id = :odd WHERE id = :id', odd=odd, id=jobs[0])
    jobs[0] = odd
    board = start_dashboard()
    for path in ("/jobs", "/jobs?status=DEAD_LETTER", f"/jobs?user={LONG_USER}"):
        page.goto(board.url + path)
        expect(page.locator("table.jobs tbody tr")).not_to_have_count(0)
        not_pwned(page)
        no_horizontal_scroll(page)
        table = page.locator("table.jobs").bounding_box()
        assert table and table["x"] + table["width"] <= WIDTH, (path, table)
        for row in page.locator("table.jobs tbody tr").all():
            box = row.bounding_box()
            assert box and box["height"] <= 60, (path, box)  # two lines at most

    page.goto(board.url + "/jobs")
    listed = page.locator("td.id a")
    ids = [listed.nth(i).get_attribute("title") for i in range(listed.count())]
    assert sorted(ids) == sorted([*jobs, big])
    for i, job_id in enumerate(ids):
        shown = listed.nth(i).inner_text()
        assert shown == (job_id if job_id == odd else "…" + job_id[-8:]), shown
    cut = page.locator("td.id", has=page.locator(f'a[title="{odd.replace(chr(34), chr(92) + chr(34))}"]'))
    assert cut.evaluate("td => td.scrollWidth > td.clientWidth")  # cut by the cell...
    assert cut.evaluate("td => getComputedStyle(td).textOverflow") == "ellipsis"  # ...with an ellipsis
    for cell in page.locator("td.error").all():
        assert cell.get_attribute("title") == TRACEBACK[:200]
    expect(page.locator("td.clip", has_text="NIGHTLY").first).to_have_attribute("title", LONG_TYPE)
    expect(page.locator(f'tr:has(a[title="{big}"]) td.payload')).to_contain_text("KiB")
    expect(page.locator(f'tr:has(a[title="{jobs[1]}"]) td.payload')).to_contain_text('"account"')


@pytest.fixture
def client() -> Any:
    return create_app(DashboardSettings()).test_client()


def read(client: Any, job_id: str, selector: str) -> str:
    """The text of the first element of the job page with that tag and class."""
    tag, cls = selector.split(".")
    body = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    found = re.search(rf'<{tag} class="{cls}[^"]*">(.*?)</{tag}>', body, re.S)
    assert found, body
    text = re.sub(r"<[^>]+>", "", re.sub(r"</?d[td]>", " ", found.group(1)))  # as a browser shows it
    return " ".join(html.unescape(text).split())


def shaped(status: str, **columns: Any) -> str:
    job = enqueue("DASH_OK", {})
    sets = ", ".join(f'"{name}" = :{name}' for name in columns)
    sql(f'UPDATE "WorkerJob" SET status = CAST(:status AS "JobStatus"){", " + sets if sets else ""} '
        "WHERE id = :id", status=status, id=job, **columns)
    return job


def test_the_outcome_says_what_became_of_the_job_in_each_state(client):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    for _ in range(2):  # the key's slots taken, so that a job of it waits held back
        enqueue("DASH_OK", {}, concurrency_key="acct:<7>", concurrency=2)
    cases = {
        shaped("COMPLETED", attempts=2, startedAt=now - timedelta(seconds=2), completedAt=now):
            rf"^completed at {T} \(.+ ago\) · attempt 2 of 3 · ran 2s$",
        shaped("PENDING", attempts=1, lastError="timeout", availableAt=now + timedelta(minutes=5)):
            rf"^retrying at {T} \(in (5m|4m\d+s)\) · attempt 1 of 3 failed$",
        shaped("PENDING", attempts=0, lastError="pool shut down", availableAt=now):
            rf"^retrying, ready since {T} \(.+ ago\)$",
        shaped("PENDING", availableAt=now + timedelta(hours=2)): rf"^scheduled for {T} \(in (2h|1h59m)\)$",
        shaped("PENDING", snoozes=2): rf"^waiting for a worker since {T} \(.+ ago\) · snoozed 2 times$",
        shaped("PENDING", heldBack=True, concurrencyKey="acct:<7>", concurrencyLimit=2):
            rf"^held back by concurrency key acct:<7>, ready since {T} \(.+ ago\) "
            r"· at most 2 of its key run at once$",
        shaped("PENDING", heldBack=False, fairKey="tenant:<1>"):
            rf"^waiting its turn behind the other jobs of fair key tenant:<1>, ready since {T}",
        shaped("PROCESSING", attempts=1, lockedBy="host-9:4242:1", startedAt=now,
               progress=0.4, progressMessage="<b>resizing</b>"):
            rf"^running on host-9:4242:1 since {T} \(.+ ago\) · attempt 1 of 3 · 40 % done: <b>resizing</b>$",
        shaped("PROCESSING", attempts=1, lockedBy="w", startedAt=now, cancelRequestedAt=now,
               cancelledBy="ops:alice"):
            r"attempt 1 of 3 · cancel asked by ops:alice .+ ago: it stops within a heartbeat$",
    }
    dead = enqueue("DASH_OK", {})
    make_dead(dead)
    cases[dead] = rf"^dead-lettered at {T} \(.+ ago\) · after attempt 3 of 3$"
    cancelled = enqueue("DASH_OK", {}, delay=60)
    cancel(cancelled, by="ops:<b>bob</b>")
    cases[cancelled] = rf"^cancelled by ops:<b>bob</b> at {T} \(.+ ago\) · 0 of 3 attempts made$"
    for job, expected in cases.items():
        assert re.search(expected, read(client, job, "p.outcome")), (expected, read(client, job, "p.outcome"))


def test_a_waiting_jobs_page_and_the_overview_say_why_it_is_not_claimable(client):
    enqueue("DASH_OK", {}, concurrency_key="acct:<7>", concurrency=1)
    held = enqueue("DASH_OK", {}, concurrency_key="acct:<7>", concurrency=1)
    assert read(client, held, "ul.waiting") == "waiting for a slot of key acct:<7> (1 of 1 taken)"
    overview = client.get("/").get_data(as_text=True)
    found = re.search(r'<p class="held">(.*?)</p>', overview, re.S)
    assert found and "1 waiting for a concurrency slot" in found.group(1), overview


def test_an_error_is_headed_by_whether_it_is_this_outcome_or_an_earlier_attempt(client):
    failed = shaped("DEAD_LETTER", lastError="boom")
    done = shaped("COMPLETED", lastError="boom the first time")
    body = client.get(f"/jobs/{failed}").get_data(as_text=True)
    assert "<h2>Error</h2>" in body and '<pre class="error">boom</pre>' in body
    body = client.get(f"/jobs/{done}").get_data(as_text=True)
    assert "<h2>Error of an earlier attempt</h2>" in body
    assert 'class="error"' not in client.get(f"/jobs/{enqueue('DASH_OK', {})}").get_data(as_text=True)


def test_the_remaining_fields_are_labelled_and_a_later_migrations_column_shows_by_name(client):
    job = shaped("PENDING", uniqueKey="digest:u1", concurrencyKey="acct:1", concurrencyLimit=3,
                 interruptions=1, notifyDone=True)
    sql('ALTER TABLE "WorkerJob" ADD COLUMN "shardHint" jsonb')
    try:
        sql('UPDATE "WorkerJob" SET "shardHint" = \'{"zone": "<eu>"}\' WHERE id = :id', id=job)
        text = read(client, job, "dl.details")
    finally:
        sql('ALTER TABLE "WorkerJob" DROP COLUMN "shardHint"')
    for expected in ("priority 0", "idempotency key -", "user -", "unique key digest:u1",
                     "concurrency key acct:1", "concurrency limit 3",
                     "interruptions 1 (runs cut short by something else than the job)",
                     "waited on yes: a caller waits for its end",
                     'shardHint { "zone": "<eu>" }'):
        assert expected in text, (expected, text)
    # A column of a feature the job does not use says nothing.
    assert "snoozes" not in text and "progress" not in text and "held back" not in text


def test_a_cancelled_job_can_be_retried_from_its_page():
    actions = create_app(DashboardSettings(allow_actions=True)).test_client()
    job = enqueue("DASH_OK", {})
    cancel(job, by="ops:alice")
    body = actions.get(f"/jobs/{job}").get_data(as_text=True)
    assert 'data-action="retry"' in body
    token = re.search(r'name="csrf_token" value="([^"]+)"', body)
    assert token, body
    done = actions.post(f"/jobs/{job}/actions/retry", data={"csrf_token": token.group(1)},
                        headers={"Origin": "http://localhost"})  # the test client's own
    assert done.status_code == 303
    [(status, cancelled_by)] = sql('SELECT status::text, "cancelledBy" FROM "WorkerJob" '
                                   "WHERE id = :id", id=job)
    assert (status, cancelled_by) == ("PENDING", None)
