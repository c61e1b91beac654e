"""The shop's own tests, as `manage.py test` runs them: Django's test database gets
skiplock's schema from `migrate`, and skiplock finds it without DATABASE_URL."""

from django.db import connection
from django.test import TestCase, TransactionTestCase

import skiplock
from shop.orders import place_order
from skiplock import testing


class InTheTestsTransaction(TestCase):
    def test_an_order_and_its_job_are_written_in_the_tests_transaction(self) -> None:
        order, job_id = place_order("ada@example.com")
        job = skiplock.get_job(job_id, conn=connection)
        assert job is not None and job.payload == {"order": order.pk}


class Committed(TransactionTestCase):
    def setUp(self) -> None:
        # Django empties its models' tables after each test, not skiplock's.
        with connection.cursor() as cursor:
            cursor.execute('TRUNCATE "WorkerJob"')

    def test_drain_runs_the_committed_job_with_the_apps_handler(self) -> None:
        import shop.jobs  # noqa: F401 - registers SHIP_ORDER

        order, _ = place_order("grace@example.com")
        report = testing.drain()
        assert report.outcomes == {"completed": 1}, report.errors
        order.refresh_from_db()
        assert order.shipped
