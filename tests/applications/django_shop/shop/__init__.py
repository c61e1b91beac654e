"""The shop: an order model, its SHIP_ORDER handler (jobs.py), and orders.py, which is the
README's `django-enqueue` snippet: tests/applications/test_django.py writes it there."""
