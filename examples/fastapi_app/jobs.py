"""The example's job handlers: `skiplock worker --handlers examples.fastapi_app.jobs`."""

from __future__ import annotations

from skiplock import JobResult, handler


@handler("SEND_EMAIL")
def send_email(payload: dict, job_id: str) -> JobResult:
    # A real application sends the email here; raise to retry with backoff.
    return JobResult(success=True, data={"sent_to": payload["to"]})
