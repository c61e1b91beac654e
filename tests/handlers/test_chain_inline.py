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
