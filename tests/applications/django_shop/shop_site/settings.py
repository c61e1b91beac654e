"""A shop with skiplock among its apps; the test gives the database in SHOP_DB_* variables.

No DATABASE_URL: skiplock finds its database in DATABASES.
"""

import os
import sys

if os.environ.get("SHOP_DRIVER") == "psycopg2":
    # Django 4.2+ runs on psycopg 3 whenever it can import it (skiplock installs it);
    # this project runs on psycopg2, as one without psycopg 3 would.
    sys.modules["psycopg"] = None  # type: ignore[assignment]

SECRET_KEY = "not a secret: a test project"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["skiplock.django", "shop"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
if os.environ.get("SHOP_HANDLERS_AS") == "text":  # a mistake skiplock_worker must name
    SKIPLOCK_HANDLERS = os.environ["SHOP_HANDLERS"]
elif os.environ.get("SHOP_HANDLERS"):
    SKIPLOCK_HANDLERS = os.environ["SHOP_HANDLERS"].split(",")

if os.environ.get("SHOP_ENGINE") == "sqlite":
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["SHOP_DB_NAME"],
            "USER": os.environ.get("SHOP_DB_USER", ""),
            "PASSWORD": os.environ.get("SHOP_DB_PASSWORD", ""),
            "HOST": os.environ.get("SHOP_DB_HOST", ""),
            "PORT": os.environ.get("SHOP_DB_PORT", ""),
            # Kept across jobs and checked before each: the worker's children must
            # replace one that broke (skiplock/django/worker.py).
            "CONN_MAX_AGE": None,
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {"application_name": "shop"},
        }
    }
