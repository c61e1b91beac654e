"""The whole chain, jobs run one by one in this process the way a pool child runs them."""

from __future__ import annotations

from datetime import date

from skiplock.handlers.demo import format_report, pending_jobs, report, seed_demo
from tests.handlers.chains import assert_chains_complete, drain_inline


def test_demo_data_drains_into_complete_chains(database_url):
    seeded = seed_demo("America/New_York", days=14, today=date(2026, 3, 16))  # spans DST
    ran = drain_inline()
    assert pending_jobs(seeded.user_id) == 0
    assert_chains_complete(seeded)
    lines = format_report(seeded, report(seeded.user_id), wall_s=1.0)
    assert f"{ran} jobs in" in "\n".join(lines)
    assert any(line.startswith("SUGGEST_UOM_UPDATE:") for line in lines)


def test_the_demo_weekly_reviews_wait_for_their_daily_reviews(database_url):
    """The demo's fan-in: a WEEKLY review starts only after its week's DAILY reviews
    completed, and names them in its result."""
    from skiplock.queue_core import parents
    from tests.queue_core.helpers import sql

    seeded = seed_demo("Europe/Paris", days=10, today=date(2026, 3, 16))
    drain_inline()
    weekly = sql("""SELECT id, "startedAt", result FROM "WorkerJob"
                    WHERE type = 'GENERATE_REVIEW' AND payload->>'type' = 'WEEKLY'
                    ORDER BY payload->>'periodKey'""")
    assert len(weekly) == 2  # the week of 2026-03-09 (7 days), and the 3 days before it
    sizes = []
    for job in weekly:
        ups = parents(job.id)
        sizes.append(len(ups))
        assert {p.type for p in ups} == {"GENERATE_REVIEW"}
        assert all(p.status == "COMPLETED" for p in ups)
        done = sql("""SELECT max("completedAt") FROM "WorkerJob" WHERE id = ANY(:ids)""",
                   ids=[p.id for p in ups])[0][0]
        assert done <= job.startedAt
        assert len(job.result["dailyReviews"]) == len(ups)
    assert sizes == [3, 7]
    lines = format_report(seeded, report(seeded.user_id), wall_s=1.0)
    assert "fan-in: each WEEKLY review waited for its week's DAILY reviews" in lines
