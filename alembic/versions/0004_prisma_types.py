"""The Prisma schema's "JobType", as an open domain, so that its client keeps working.

Revision ID: 0004_prisma_types
Revises: 0003_ops
Create Date: 2026-12-01

A Prisma client generated from the original schema (docs/README.md, "The
seed") casts every job type it
sends: `CAST($1::text AS "public"."JobType")`, in the VALUES of an INSERT and
in WHERE clauses. Without a type of that name each such statement fails.

"JobType" is a DOMAIN over text, not an enum: a cast to it accepts any type
name (custom types such as SEND_EMAIL need no migration), a value of it is
stored in the text column `type` and compared with it as text, and the
column's own CHECK still bounds its length. "JobStatus" is already the enum
the Prisma schema declares.
"""

from alembic import op

revision = "0004_prisma_types"
down_revision = "0003_ops"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        DO $$ BEGIN
            CREATE DOMAIN "JobType" AS text;
        EXCEPTION WHEN duplicate_object THEN NULL;
        END $$
        """
    )


def downgrade() -> None:
    op.execute('DROP DOMAIN IF EXISTS "JobType"')
