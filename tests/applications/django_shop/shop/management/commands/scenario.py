"""`manage.py scenario NAME EMAIL`: one way of enqueueing, its ids printed as JSON."""

import json
from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection, transaction

import skiplock
import skiplock.django
from shop.models import Order
from shop.orders import place_order


class Refused(Exception):
    pass


def commit(email: str) -> dict[str, Any]:
    order, job = place_order(email)
    return {"order": order.pk, "job": job}


def rollback(email: str) -> dict[str, Any]:
    # The shop's code raises after the enqueue, in the same atomic() block.
    try:
        with transaction.atomic():
            order = Order.objects.create(email=email)
            job = skiplock.django.enqueue("SHIP_ORDER", {"order": order.pk})
            more = skiplock.django.enqueue_many([{"type": "SHIP_ORDER", "payload": {"order": 0}}])
            raise Refused(job)
    except Refused:
        return {"order": order.pk, "job": job, "more": more}


def outer_rollback(email: str) -> dict[str, Any]:
    # The README's place_order inside a block that rolls back: its atomic() is a
    # savepoint, released, and the outer rollback takes the order and the job.
    try:
        with transaction.atomic():
            order, job = place_order(email)
            raise Refused(job)
    except Refused:
        return {"order": order.pk, "job": job}


def autocommit(email: str) -> dict[str, Any]:
    # Outside atomic() Django's connection commits each write at once; so does the job.
    order = Order.objects.create(email=email)
    job = skiplock.enqueue("SHIP_ORDER", {"order": order.pk}, conn=connection)
    connection.close()  # nothing left open to commit
    return {"order": order.pk, "job": job}


def nested(email: str) -> dict[str, Any]:
    # An inner atomic() is a savepoint: rolled back, it takes the job with it alone.
    with transaction.atomic():
        order = Order.objects.create(email=email)
        try:
            with transaction.atomic():
                job = skiplock.enqueue("SHIP_ORDER", {"order": order.pk}, conn=connection)
                raise Refused(job)
        except Refused:
            pass
    return {"order": order.pk, "job": job}


def own_connection(email: str) -> dict[str, Any]:
    # No conn=: skiplock's own connection, to the database DATABASES names.
    from skiplock.queue_core.config import load_settings
    from skiplock.queue_core.database.urls import redact

    job = skiplock.enqueue("SHIP_ORDER", {"order": 0}, idempotency_key=f"own:{email}")
    return {"job": job, "url": redact(load_settings().database_url)}


def driver(email: str) -> dict[str, Any]:
    return {"driver": type(skiplock.django.connection()).__module__.split(".")[0]}


def handlers(email: str) -> dict[str, Any]:
    # What `manage.py skiplock_worker` hands `skiplock worker`, without and with --handlers.
    from skiplock.django.worker import worker_args

    return {"plain": worker_args([]), "flag": worker_args(["--handlers", "shop.more_jobs"])}


SCENARIOS = {"commit": commit, "rollback": rollback, "outer-rollback": outer_rollback,
             "autocommit": autocommit,
             "nested": nested, "own-connection": own_connection, "driver": driver,
             "handlers": handlers}


class Command(BaseCommand):
    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("name", choices=sorted(SCENARIOS))
        parser.add_argument("email")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(SCENARIOS[options["name"]](options["email"])))
