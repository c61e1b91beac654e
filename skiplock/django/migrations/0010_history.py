"""skiplock's queue, to revision 0022_history of its own migrations (skiplock/django/schema.py)."""

from typing import Any

from django.db import migrations

from skiplock.django import schema

QUEUE_REVISION = "0022_history"


def upgrade_queue(apps: Any, schema_editor: Any) -> None:
    schema.apply(schema_editor, QUEUE_REVISION)


class Migration(migrations.Migration):
    # The queue's migrations run on a connection of their own, in a transaction of
    # their own: none of Django's is held open meanwhile.
    atomic = False
    dependencies = [("skiplock", "0009_fairness")]
    operations = [migrations.RunPython(upgrade_queue, migrations.RunPython.noop)]
