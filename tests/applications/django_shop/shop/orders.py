"""The shop's own code, as its views would call it: an order and its shipping job commit together."""

from django.db import transaction

import skiplock
import skiplock.django
from shop.models import Order


class Refused(Exception):
    pass


def place_order(email: str, *, refuse: bool = False) -> tuple[int, str]:
    """The order and its SHIP_ORDER job, in one transaction; `refuse` raises at its end."""
    with transaction.atomic():
        order = Order.objects.create(email=email)
        job_id = skiplock.django.enqueue("SHIP_ORDER", {"order": order.pk},
                                         idempotency_key=f"ship:{order.pk}")
        if refuse:
            raise Refused(job_id)
    return order.pk, job_id
