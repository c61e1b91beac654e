"""`skiplock prisma-schema`'s reading of the catalog, value by value (the whole printout is
generated into a real Prisma client in tests/prisma)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from skiplock.ops.prisma_schema import _default, _type


def column(default: str | None = None, sql_type: str = "text", kind: str = "b") -> SimpleNamespace:
    return SimpleNamespace(default=default, sql_type=sql_type, kind=kind, type_name="JobStatus")


@pytest.mark.parametrize(("expression", "kind", "printed"), [
    ("'it''s \"here\"'::text", "b", '@default("it\'s \\"here\\"")'),
    ("'{}'::jsonb", "b", '@default("{}")'),
    ("'PENDING'::\"JobStatus\"", "e", "@default(PENDING)"),
    ("-3", "b", "@default(-3)"),
    ("now()", "b", "@default(now())"),
    ("statement_timestamp()", "b", '@default(dbgenerated("statement_timestamp()"))'),
    ("(gen_random_uuid())::text", "b", '@default(dbgenerated("(gen_random_uuid())::text"))'),
    (None, "b", ""),
])
def test_defaults_read_as_prisma_writes_them(expression, kind, printed):
    assert _default(column(expression, kind=kind)) == printed


@pytest.mark.parametrize(("sql_type", "prisma"), [
    ("timestamp with time zone", ("DateTime", "@db.Timestamptz(6)")),
    ("timestamp(3) without time zone", ("DateTime", "")),
    ("real", ("Float", "@db.Real")),
    ("character varying(40)", ("String", "@db.VarChar(40)")),
    ("tsvector", ('Unsupported("tsvector")', "")),
])
def test_types_map_to_prisma_scalars(sql_type, prisma):
    assert _type(column(sql_type=sql_type)) == prisma
