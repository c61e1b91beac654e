"""The dashboard's pages in headless Chromium, against a real database and a running pool."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import expect

from skiplock.queue_core import enqueue
from tests.dashboard.conftest import screenshot
from tests.dashboard.helpers import logged_actions, make_dead, sql, status
from tests.support import wait_for

EVIL = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


def test_the_overview_shows_a_job_enqueued_a_moment_ago_without_a_reload(
        start_dashboard, start_pool, page):
    from skiplock.ops.pauses import pause

    start_pool("-c", "1")
    for job in [enqueue("DASH_FLAKY", {"flag": "/nonexistent"}, delay=3600) for _ in range(2)]:
        make_dead(job, "flag /nonexistent is missing")
    pause("DASH_SLOW", "maintenance window")
    enqueue("DASH_SLOW", {"seconds": 1})
    board = start_dashboard("--allow-actions")
    page.goto(board.url)
    expect(page.locator("h1")).to_contain_text("Overview")
    expect(page.locator('tr[data-type="DASH_SLOW"] .status.paused')).to_be_visible()
    expect(page.locator('tr[data-type="DASH_FLAKY"] td').nth(4)).to_have_text("2")
    assert page.locator('tr[data-type="DASH_OK"]').count() == 0
    enqueue("DASH_OK", {"later": True}, delay=3600)  # scheduled: it stays PENDING
    done = enqueue("DASH_OK", {"now": True})
    wait_for(lambda: status(done) == "COMPLETED", what="the pool to run the job")
    # The page refreshes its figures by itself (every second here).
    row = page.locator('tr[data-type="DASH_OK"]')
    expect(row).to_be_visible()
    expect(row.locator("td").nth(1)).to_have_text("1")  # pending
    expect(row.locator("td").nth(2)).to_have_text("0")  # ready: it waits an hour
    # Finished in the last hour: the completed job and the two dead letters.
    expect(page.locator("section h2").nth(0)).to_contain_text("3 jobs")
    # One bar (this minute's, or the last one's) holds the completed job.
    expect(page.locator('svg.chart rect.ok:not([height="0.0"])')).to_have_count(1)
    expect(page.locator("#refreshed")).to_contain_text("refreshed")
    screenshot(page, "overview")


def test_retrying_a_dead_letter_from_the_job_page_makes_it_run(
        start_dashboard, start_pool, page, tmp_path: Path):
    flag = tmp_path / "fixed"
    job = enqueue("DASH_FLAKY", {"flag": str(flag), "note": EVIL}, idempotency_key="flaky:1")
    start_pool("-c", "1")
    wait_for(lambda: status(job) == "DEAD_LETTER", what="the job to be dead-lettered")
    board = start_dashboard("--allow-actions")
    page.goto(f"{board.url}/jobs/{job}")
    expect(page.locator("h1 .status")).to_have_text("DEAD_LETTER")
    expect(page.locator("pre.error")).to_contain_text(f"flag {flag} is missing")
    expect(page.locator("pre.error")).to_contain_text("<b>not html</b>")
    assert page.locator('button[data-action="run-now"]').count() == 0
    screenshot(page, "job")

    flag.touch()
    page.click('button[data-action="retry"]')
    expect(page.locator(".flash.ok")).to_contain_text("moved back to PENDING")
    wait_for(lambda: status(job) == "COMPLETED", what="the retried job to run")
    page.reload()
    expect(page.locator("h1 .status")).to_have_text("COMPLETED")
    expect(page.locator("pre.result")).to_contain_text('"fixed": true')
    expect(page.locator("table.log")).to_contain_text("retry")
    [entry] = logged_actions()
    assert (entry.who, entry.address, entry.action, entry.target, entry.affected) == \
        ("local", "127.0.0.1", "retry", job, 1)
    page.goto(f"{board.url}/actions")
    expect(page.locator("table.log tbody tr")).to_have_count(1)
    screenshot(page, "actions")


def test_a_payload_holding_a_script_is_shown_as_text(start_dashboard, page):
    sql('''INSERT INTO "User" (id, name, timezone) VALUES ('<i>user</i>', 'x', 'UTC')''')
    job = enqueue("DASH_OK", {"html": EVIL}, delay=3600, user_id="<i>user</i>",
                  idempotency_key="<b>key</b>")
    sql('UPDATE "WorkerJob" SET "lastError" = :e WHERE id = :id', e=EVIL, id=job)
    board = start_dashboard("--allow-actions")
    for path in (f"/jobs/{job}", "/jobs?type=DASH_OK", "/jobs?q=%3Cb%3Ekey%3C%2Fb%3E", "/"):
        page.goto(board.url + path)
        assert page.evaluate("window.__pwned") is None, path
        assert page.locator("main script, main img").count() == 0, path
    page.goto(f"{board.url}/jobs/{job}")
    expect(page.locator("pre.payload")).to_contain_text(EVIL.replace('"', '\\"'))
    expect(page.locator("pre.error")).to_have_text(EVIL)
    expect(page.locator("dl.details")).to_contain_text("<b>key</b>")
    page.goto(f"{board.url}/jobs?type=DASH_OK")
    expect(page.locator("td.error")).to_have_text(EVIL)


def test_an_action_without_the_csrf_token_is_refused(start_dashboard, page):
    job = enqueue("DASH_OK", {})
    make_dead(job)
    board = start_dashboard("--allow-actions")
    page.goto(f"{board.url}/jobs/{job}")  # the session cookie, as a logged-in operator has it
    url = f"{board.url}/jobs/{job}/actions/retry"
    own = {"Origin": board.url}  # as the browser sends with a form of the page
    for form in ({}, {"csrf_token": "forged"}):
        refused = page.request.post(url, form=form, headers=own, max_redirects=0)
        assert refused.status == 403, form
        assert "CSRF" in refused.text()
    assert status(job) == "DEAD_LETTER" and logged_actions() == []
    token = page.locator('input[name="csrf_token"]').first.get_attribute("value")
    accepted = page.request.post(url, form={"csrf_token": token}, headers=own, max_redirects=0)
    assert accepted.status == 303
    assert status(job) == "PENDING"
    assert [a.action for a in logged_actions()] == ["retry"]


def test_a_read_only_dashboard_offers_no_action_and_refuses_posts(start_dashboard, page):
    job = enqueue("DASH_OK", {})
    make_dead(job)
    board = start_dashboard()
    page.goto(f"{board.url}/jobs/{job}")
    expect(page.locator(".job-actions")).to_contain_text("Read-only")
    assert page.locator("main button").count() == 0
    expect(page.locator("header .mode")).to_have_text("read-only")
    token = page.locator('input[name="csrf_token"]').count()
    assert token == 0
    refused = page.request.post(f"{board.url}/jobs/{job}/actions/retry", form={}, max_redirects=0)
    assert refused.status == 403 and "read-only" in refused.text()
    assert status(job) == "DEAD_LETTER"


def test_retrying_every_dead_letter_of_a_type_asks_for_confirmation(start_dashboard, page):
    jobs = [enqueue("DASH_OK", {"i": i}) for i in range(3)]
    other = enqueue("DASH_SLOW", {})
    for job in [*jobs, other]:
        make_dead(job)
    board = start_dashboard("--allow-actions")
    page.goto(board.url)
    page.locator('tr[data-type="DASH_OK"] button[data-action="retry-type"]').click()
    expect(page.locator("p.confirm")).to_have_text(
        "Move 3 dead letters of DASH_OK back to PENDING with fresh attempts?")
    assert [status(j) for j in jobs] == ["DEAD_LETTER"] * 3  # nothing happened yet
    page.click('button[data-action="confirm"]')
    expect(page.locator(".flash.ok")).to_contain_text("3 jobs")
    assert [status(j) for j in jobs] == ["PENDING"] * 3
    assert status(other) == "DEAD_LETTER"
    # "No, go back" leaves everything as it was.
    page.locator('button[data-action="retry-all"]').click()
    expect(page.locator("p.confirm")).to_contain_text("all 1 dead letters")
    page.click("text=No, go back")
    assert status(other) == "DEAD_LETTER"
    assert [(a.action, a.target, a.affected) for a in logged_actions()] == [("retry-type", "DASH_OK", 3)]


def test_pausing_a_type_holds_its_jobs_until_it_is_resumed(start_dashboard, start_pool, page):
    start_pool("-c", "1")
    board = start_dashboard("--allow-actions")
    enqueue("DASH_OK", {}, delay=3600)  # so the type has a row on the overview
    page.goto(board.url)
    page.locator('tr[data-type="DASH_OK"] button[data-action="pause"]').click()
    expect(page.locator("p.confirm")).to_contain_text("Pause DASH_OK?")
    page.click('button[data-action="confirm"]')
    expect(page.locator('tr[data-type="DASH_OK"] .status.paused')).to_be_visible()
    [pause] = sql('SELECT reason FROM "WorkerJobPause" WHERE type = \'DASH_OK\'')
    assert pause.reason == "from the dashboard, by local"
    held = enqueue("DASH_OK", {"held": True})
    probe = enqueue("DASH_SLOW", {"seconds": 0})  # the pool is alive and claiming
    wait_for(lambda: status(probe) == "COMPLETED", what="the pool to run another type")
    assert status(held) == "PENDING"
    page.locator('tr[data-type="DASH_OK"] button[data-action="resume"]').click()
    wait_for(lambda: status(held) == "COMPLETED", what="the resumed type to run")
    assert [a.action for a in logged_actions()] == ["pause", "resume"]


def test_processes_schedules_and_paged_jobs(start_dashboard, start_pool, page, tmp_path: Path):
    schedule = tmp_path / "schedule.toml"
    schedule.write_text('[[schedule]]\nname = "nightly-digest"\ncron = "0 3 * * *"\n'
                        'timezone = "Europe/Paris"\ntype = "DASH_OK"\n')
    running = enqueue("DASH_SLOW", {"seconds": 60})
    pool = start_pool("-c", "2", "--schedule-file", str(schedule))
    wait_for(lambda: status(running) == "PROCESSING", what="the slow job to start")
    for i in range(120):
        enqueue("DASH_OK", {"i": i}, delay=3600 + i)
    board = start_dashboard("--schedule-file", str(schedule))
    wait_for(lambda: sql('''SELECT count(*) AS n, count("jobId") AS busy FROM "WorkerProcess"
                            WHERE kind = 'child' ''')[0] == (2, 1),
             what="the master to write both children and the running job")

    page.goto(f"{board.url}/processes")
    expect(page.locator("section.pool h2")).to_contain_text(f"master pid {pool.pid}")
    expect(page.locator("table.children tbody tr")).to_have_count(2)
    expect(page.locator(f'table.children a[href="/jobs/{running}"]')).to_be_visible()
    screenshot(page, "processes")
    page.click(f'table.children a[href="/jobs/{running}"]')
    expect(page.locator("p.outcome.running")).to_contain_text(
        re.compile(rf"running on worker \d \(pid \d+ on {re.escape(pool_host())}\) since "))

    page.goto(f"{board.url}/schedules")
    row = page.locator("table.schedules tbody tr").first
    expect(row).to_contain_text("nightly-digest")
    expect(row).to_contain_text("0 3 * * *")
    expect(row.locator("td").last).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d 0[12]:00:00"))
    screenshot(page, "schedules")

    # Keyset paging through 120 pending jobs in claim order, 50 a page.
    page.goto(f"{board.url}/jobs?status=PENDING&type=DASH_OK")
    seen: list[str] = []
    while True:
        links = page.locator("td.id a")
        ids = [links.nth(i).get_attribute("title") or "" for i in range(links.count())]
        assert links.all_inner_texts() == ["…" + i[-8:] for i in ids]  # the random end
        seen += ids
        if len(seen) == 50:
            screenshot(page, "jobs")
        nxt = page.locator('a[rel="next"]')
        if nxt.count() == 0:
            break
        nxt.click()
    assert len(seen) == len(set(seen)) == 120
    ordered = [r.id for r in sql("""SELECT id FROM "WorkerJob" WHERE type = 'DASH_OK'
                                    ORDER BY priority DESC, "availableAt", id""")]
    assert seen == ordered


def pool_host() -> str:
    import socket

    return socket.gethostname()


def test_run_now_starts_a_delayed_job_at_once(start_dashboard, start_pool, page):
    job = enqueue("DASH_OK", {"later": True}, delay=3600)
    start_pool("-c", "1")
    board = start_dashboard("--allow-actions")
    page.goto(f"{board.url}/jobs/{job}")
    assert page.locator('button[data-action="retry"]').count() == 0
    page.click('button[data-action="run-now"]')
    expect(page.locator(".flash.ok")).to_contain_text("made ready to run now")
    wait_for(lambda: status(job) == "COMPLETED", what="the job to run")
    assert [(a.action, a.target, a.affected) for a in logged_actions()] == [("run-now", job, 1)]


def test_cancelling_a_running_job_from_its_page_stops_it(start_dashboard, start_pool, page):
    job = enqueue("DASH_SLOW", {"seconds": 60})
    start_pool("-c", "1")
    wait_for(lambda: status(job) == "PROCESSING", what="the job to start")
    board = start_dashboard("--allow-actions")
    page.goto(f"{board.url}/jobs/{job}")
    page.click('button[data-action="cancel"]')
    expect(page.locator(".flash.ok")).to_contain_text("cancelled")
    wait_for(lambda: status(job) == "FAILED", 15, what="the pool to stop the job")
    [(last_error,)] = sql('SELECT "lastError" FROM "WorkerJob" WHERE id = :id', id=job)
    assert re.match(r"cancelled by dashboard:\S+ at \S+ while running", last_error)
    assert [(a.action, a.target, a.affected) for a in logged_actions()] == [("cancel", job, 1)]
    page.reload()
    assert page.locator('button[data-action="cancel"]').count() == 0
