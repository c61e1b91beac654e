"""A job's page shows its parents, its dependents and its batch, with links."""

from __future__ import annotations

from typing import Any

import pytest

import skiplock
from skiplock.dashboard.app import create_app
from skiplock.dashboard.settings import DashboardSettings
from skiplock.queue_core import claim, complete, enqueue, enqueue_many


@pytest.fixture
def client() -> Any:
    return create_app(DashboardSettings()).test_client()


def test_the_job_page_lists_parents_and_dependents_with_links(client: Any) -> None:
    parent, child = enqueue_many([{"type": "DASH_P", "payload": {}},
                                  {"type": "DASH_C", "payload": {}, "depends_on": [0],
                                   "on_parent_failure": "hold"}])
    body = client.get(f"/jobs/{child}").get_data(as_text=True)
    assert "<h2>Workflow</h2>" in body and "Parents: it waits for them" in body
    assert f'href="/jobs/{parent}"' in body and "hold" in body
    body = client.get(f"/jobs/{parent}").get_data(as_text=True)
    assert "Dependents: they wait for it" in body and f'href="/jobs/{child}"' in body
    plain = enqueue("DASH_P", {})
    assert "Workflow" not in client.get(f"/jobs/{plain}").get_data(as_text=True)


def test_a_members_page_names_its_batch_and_links_the_callback(client: Any) -> None:
    with skiplock.batch(on_complete=("DASH_DONE", {})) as b:
        enqueue("DASH_M", {})
        enqueue("DASH_M", {})
    complete(claim("w", types=["DASH_M"])[0])
    member = next(iter(b.members))
    body = client.get(f"/jobs/{member}").get_data(as_text=True)
    assert f"<code>{b.id}</code>" in body and "1 of 2 members ended" in body
    assert f'href="/jobs/{b.callback_id}"' in body
