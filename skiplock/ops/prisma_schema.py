"""`skiplock prisma-schema`: the Prisma blocks that match "WorkerJob" as it is in the database.

A team whose service writes jobs through Prisma keeps a `model WorkerJob` in
its schema. After `skiplock migrate` that model must change: the original
schema's `type JobType` enum makes the client refuse to read any row of another job
type (skiplock's own `BACKFILL_REVIEWS`, a schedule's type), and it knows
none of the columns skiplock adds. The blocks are read from the catalog, not
written by hand, so they say what the table is: every column with its type,
nullability and default, every index (partial ones with Prisma's `where:`),
the foreign key to the application's users where there is one, and, as
comments, the checks and triggers Prisma has no syntax for.

skiplock migrates these tables, not Prisma Migrate: the printed config lists
them as external tables, which Prisma's client reads and writes and its
migrations leave alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from skiplock.ops import sql
from skiplock.queue_core.database import migrate

TABLE = "WorkerJob"
LIVE = "WorkerJobLive"
# Not in the model: "archivedAt" is 'infinity' on every live row, which a JavaScript Date
# cannot hold (the client would fail to read the row); skiplock alone writes it.
HIDDEN = ("archivedAt",)
_SCALARS = {
    "text": ("String", ""),
    "jsonb": ("Json", ""),
    "json": ("Json", "@db.Json"),
    "integer": ("Int", ""),
    "smallint": ("Int", "@db.SmallInt"),
    "bigint": ("BigInt", ""),
    "real": ("Float", "@db.Real"),
    "double precision": ("Float", ""),
    "boolean": ("Boolean", ""),
    "uuid": ("String", "@db.Uuid"),
    "date": ("DateTime", "@db.Date"),
}
_TIME = re.compile(r"timestamp(?:\((\d)\))? (with|without) time zone")
_VARCHAR = re.compile(r"character varying\((\d+)\)")
_ACTIONS = {"a": "NoAction", "r": "Restrict", "c": "Cascade", "n": "SetNull", "d": "SetDefault"}


def render(conn: Any) -> str:
    """The enum and model blocks, and the config that keeps Prisma Migrate off the tables."""
    columns = [c for c in conn.execute(sql.TABLE_COLUMNS, {"table": f'"{TABLE}"'})
               if c.name not in HIDDEN]
    if not columns:
        raise LookupError(f'this database has no "{TABLE}": run `skiplock migrate` first')
    # Partitioned (migration 0022_history): the indexes, checks and row triggers are the
    # live part's, where every job a client writes lands.
    part = f'"{LIVE}"' if conn.execute(sql.TABLE_EXISTS, {"table": f'"{LIVE}"'}).scalar() \
        else f'"{TABLE}"'
    indexes = conn.execute(sql.TABLE_INDEXES, {"table": part}).fetchall()
    keys = conn.execute(sql.TABLE_FOREIGN_KEYS, {"table": f'"{TABLE}"'}).fetchall()
    others = [r for r in conn.execute(sql.TABLE_CHECKS_AND_TRIGGERS, {"table": part})
              if not any(name in r.definition for name in HIDDEN)]
    enums = {c.type_name: [r[0] for r in conn.execute(sql.ENUM_LABELS,
                                                      {"type": f'"{c.type_name}"'})]
             for c in columns if c.kind == "e"}
    revisions = ", ".join(migrate.read_revisions(conn)) or "none"
    lines = [
        f'// "{TABLE}" as skiplock made it (revision {revisions}), printed by '
        "`skiplock prisma-schema`.",
        "// Put these blocks in place of your `enum JobType`, `enum JobStatus` and",
        "// `model WorkerJob`. `type` is open text: with an enum, the client would refuse to",
        "// read any row of another job type. The partial indexes need",
        '// previewFeatures = ["partialIndexes"] in your `generator client` block.',
        "",
    ]
    for name, labels in enums.items():
        lines += [f"enum {name} {{", *(f"  {label}" for label in labels), "}", ""]
    lines += _model(columns, indexes, keys)
    checks = [f"//   {r.name}: {r.definition}" for r in others if r.kind == "check"]
    triggers = [r.name for r in others if r.kind == "trigger"]
    if checks or triggers:
        lines += ["", "// Kept by skiplock, with no syntax in a Prisma schema:", *checks]
        if triggers:
            lines.append(f"//   triggers: {', '.join(triggers)}")
    lines += ["", *_config(enums)]
    return "\n".join(lines) + "\n"


def _model(columns: list[Any], indexes: list[Any], keys: list[Any]) -> list[str]:
    field_attributes: dict[str, list[str]] = {c.name: [] for c in columns}
    block_attributes: list[str] = []
    for index in indexes:
        where = f', where: raw("{_quote(index.predicate)}")' if index.predicate else ""
        single = len(index.columns) == 1 and not any(index.descending)
        if index.is_primary and single:
            field_attributes[index.columns[0]].insert(0, _mapped("@id", index.name,
                                                                  f"{TABLE}_pkey"))
        elif index.is_unique and single and not where:
            field_attributes[index.columns[0]].append(
                _mapped("@unique", index.name, f"{TABLE}_{index.columns[0]}_key"))
        else:
            kind = "@@unique" if index.is_unique else "@@index"
            fields = ", ".join(f"{c}(sort: Desc)" if desc else c
                               for c, desc in zip(index.columns, index.descending, strict=True))
            block_attributes.append(f'{kind}([{fields}], map: "{index.name}"{where})')
    rows: list[tuple[str, str, str]] = []
    for column in columns:
        prisma_type, native = _type(column)
        optional = "" if column.not_null else "?"
        attributes = field_attributes[column.name]
        default = _default(column)
        if default:
            attributes.append(default)
        if native:
            attributes.append(native)
        rows.append((column.name, prisma_type + optional, " ".join(attributes)))
    for key in keys:
        target = key.target.strip('"')
        optional = "?" if any(not c.not_null for c in columns if c.name in key.columns) else ""
        rows.append((target[0].lower() + target[1:], f"{target}{optional}",
                     f"@relation(fields: [{', '.join(key.columns)}], references: "
                     f"[{', '.join(key.target_columns)}], onDelete: {_ACTIONS[key.on_delete]}, "
                     f"onUpdate: {_ACTIONS[key.on_update]}"
                     + ("" if key.name == f"{TABLE}_{'_'.join(key.columns)}_fkey"
                        else f', map: "{key.name}"') + ")"))
    width_name = max(len(r[0]) for r in rows)
    width_type = max(len(r[1]) for r in rows)
    body = [f"  {n:<{width_name}} {t:<{width_type}} {a}".rstrip() for n, t, a in rows]
    if block_attributes:
        body += [""] + [f"  {attribute}" for attribute in block_attributes]
    return [f"model {TABLE} {{", *body, "}"]


def _type(column: Any) -> tuple[str, str]:
    if column.kind == "e":
        return column.type_name, ""
    if column.sql_type in _SCALARS:
        return _SCALARS[column.sql_type]
    time = _TIME.fullmatch(column.sql_type)
    if time:
        precision = time.group(1) or "6"
        if time.group(2) == "with":
            return "DateTime", f"@db.Timestamptz({precision})"
        return "DateTime", "" if precision == "3" else f"@db.Timestamp({precision})"
    varchar = _VARCHAR.fullmatch(column.sql_type)
    if varchar:
        return "String", f"@db.VarChar({varchar.group(1)})"
    return f'Unsupported("{_quote(column.sql_type)}")', ""


def _default(column: Any) -> str:
    expression = column.default
    if expression is None:
        return ""
    if column.kind == "e":
        label = re.fullmatch(r"'([^']*)'::.*", expression)
        if label:
            return f"@default({label.group(1)})"
    if re.fullmatch(r"-?\d+(\.\d+)?", expression):
        return f"@default({expression})"
    if expression in ("now()", "CURRENT_TIMESTAMP"):
        return "@default(now())"
    literal = re.fullmatch(r"'((?:[^']|'')*)'::(?:text|jsonb|character varying)", expression)
    if literal:
        value = literal.group(1).replace("''", "'")  # SQL's quote in a literal, undone
        return f'@default("{_quote(value)}")'
    if expression in ("true", "false"):
        return f"@default({expression})"
    return f'@default(dbgenerated("{_quote(expression)}"))'


def _mapped(attribute: str, name: str, prisma_name: str) -> str:
    return attribute if name == prisma_name else f'{attribute}(map: "{name}")'


def _quote(text: str) -> str:
    """A string literal of the Prisma schema language (JSON-like escapes)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _config(enums: Iterable[str]) -> list[str]:
    tables = ", ".join(f'"public.{t}"' for t in migrate.QUEUE_TABLES)
    enum_names = ", ".join(f'"public.{e}"' for e in enums)
    return [
        "// In prisma.config.ts, so that `prisma migrate` leaves skiplock's tables to",
        "// `skiplock migrate` (the client still reads and writes them):",
        "//   experimental: { externalTables: true },",
        f"//   tables: {{ external: [{tables}] }},",
        f"//   enums: {{ external: [{enum_names}] }},",
    ]
