"""The shop's handlers: found by `manage.py skiplock_worker` as the `jobs` module of an app."""

from django.db import connection

from shop.models import Order
from skiplock import JobResult, handler


@handler("SHIP_ORDER")
def ship_order(payload: dict, job_id: str) -> JobResult:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        [pid] = cursor.fetchone()
    Order.objects.filter(pk=payload["order"]).update(shipped=True, shipped_by=pid)
    return JobResult(success=True, data={"order": payload["order"]})
