"""An empty step: the domain tables it once created are the opt-in `demo` branch now.

Revision ID: 0002_domain
Revises: 0001_job_table

Until the queue's schema stood alone, this revision created the tables of the
built-in handlers' stand-in domain ("User", "Event", ...) and a foreign key
from "WorkerJob"."userId" to that "User", in every database skiplock
migrated: an application with a "User" of its own could not install skiplock.
Those tables are now the branch `demo` (demo_0001_domain.py), installed only
by `skiplock migrate --demo`, `skiplock demo` and `make worker` in a checkout.
The revision stays, empty, so that a database an older skiplock left here
still upgrades; a database that passed it keeps its tables and foreign key,
and is recorded as having the demo installed (queue_core/database/migrate.py).
"""

revision = "0002_domain"
down_revision = "0001_job_table"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
