"""The grants a least-privileged role needs, and naming the one that is missing.

PostgreSQL says "permission denied for table X"; the operator needs the GRANT
that fixes it. `explain(exc)` turns the driver's error into that one line:
which privilege, on which object, for which role. The privilege comes from the
statement that was refused (an INSERT needs INSERT); a function needs EXECUTE,
a sequence USAGE, a schema USAGE.
"""

from __future__ import annotations

import re
from typing import Any

from skiplock.queue_core.database.faults import sqlstate

INSUFFICIENT_PRIVILEGE = "42501"
_DENIED = re.compile(r"permission denied for (table|relation|function|procedure|sequence|"
                     r"schema|database|view|materialized view) (\S+)", re.IGNORECASE)
_TABLE_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
_OBJECT_PRIVILEGE = {"function": "EXECUTE", "procedure": "EXECUTE", "sequence": "USAGE",
                     "schema": "USAGE", "database": "CONNECT"}


def is_denied(exc: Any) -> bool:
    return sqlstate(getattr(exc, "orig", exc)) == INSUFFICIENT_PRIVILEGE


def explain(exc: Any, role: str | None = None) -> str:
    """One line naming the missing grant, from a driver error with SQLSTATE 42501."""
    orig = getattr(exc, "orig", None) or exc
    message = (str(orig).strip().splitlines() or ["permission denied"])[0]
    who = f'"{role}"' if role else "the database role"
    match = _DENIED.search(message)
    if not match:
        return f"{who} lacks a grant: {message} (docs/operations.md lists every grant skiplock needs)"
    kind, name = match.group(1).lower(), match.group(2)
    if kind in ("table", "relation", "view", "materialized view"):
        kind = "table"
        statement = (getattr(exc, "statement", None) or "").lstrip().upper()
        verb = next((v for v in _TABLE_VERBS if statement.startswith(v)), None)
        if statement.startswith("SELECT") and "FOR UPDATE" in statement:
            verb = "SELECT, UPDATE"
        privilege = verb or "SELECT, INSERT, UPDATE, DELETE"
    else:
        privilege = _OBJECT_PRIVILEGE[kind]
    if kind == "schema" and (getattr(exc, "statement", None) or "").lstrip().upper().startswith(
            "CREATE"):
        privilege = "CREATE"
    quoted = name if name.startswith('"') else f'"{name}"'
    return (f"{who} lacks a grant: {message}; it needs GRANT {privilege} ON {kind.upper()} "
            f"{quoted} (docs/operations.md lists every grant skiplock needs)")


# -- what a worker needs, checked when a child boots ---------------------------------
# (privileges, kind, object). The list of grants in docs/operations.md says the same; a test
# holds the two together and runs a worker with exactly these on a database where
# PUBLIC has nothing (no default EXECUTE on functions, no use of the schema).
WORKER_GRANTS: tuple[tuple[str, str, str], ...] = (
    ("CONNECT", "DATABASE", "current_database()"),
    ("USAGE", "SCHEMA", "public"),
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerJob"'),
    # History (migration 0022): the claim, completions and the triggers' functions name
    # the live part, the key trigger reads history; the mover makes partitions through
    # the first function (SECURITY DEFINER: the role need not own the table) and reads
    # its settings through the others. Statements on "WorkerJob" need no grant on its
    # partitions.
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerJobLive"'),
    ("SELECT", "TABLE", '"WorkerJobHistory"'),
    ("EXECUTE", "FUNCTION", "skiplock_history_partition(timestamptz)"),
    ("EXECUTE", "FUNCTION", "skiplock_history_width()"),
    ("EXECUTE", "FUNCTION", "skiplock_interval_setting(text, interval)"),
    ("EXECUTE", "FUNCTION", "skiplock_history_partitions()"),
    # Concurrency limits: the job table's triggers count each key's slots here,
    # through skiplock_fill_slots; cleanup forgets idle keys.
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerConcurrencyKey"'),
    ("SELECT", "TABLE", '"WorkerJobPause"'),
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerProcess"'),
    ("SELECT, INSERT, UPDATE", "TABLE", '"WorkerSchedule"'),
    # Which revisions are installed: the pool serves the built-in handlers only
    # where their demo domain is.
    ("SELECT", "TABLE", "skiplock_version"),
    # The claim asks the first about each candidate while a type is paused (and
    # the server checks the grant whether or not it asks); the limits' triggers
    # call the second. Not skiplock_recount_slots(): only `cleanup` and
    # `recount-slots` call it, never a pool, so a pool whose role was granted
    # before that function existed still starts.
    ("EXECUTE", "FUNCTION", "skiplock_type_paused(text)"),
    ("EXECUTE", "FUNCTION", "skiplock_fill_slots(text)"),
    # Dependencies and batches (migration 0016): the trigger that ends a parent
    # makes its dependents ready through the first function, which calls the
    # second for a batch's callback; an enqueue with depends_on writes the edges.
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerJobDependency"'),
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerBatch"'),
    ("EXECUTE", "FUNCTION", "skiplock_resolve_edges(text, text, text[])"),
    ("EXECUTE", "FUNCTION", "skiplock_batch_ready(text)"),
    # Sequences (migration 0019): the job table's insert trigger numbers each key's
    # jobs from its row here; `skiplock sequence release` calls the function.
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerSequence"'),
    ("EXECUTE", "FUNCTION", "skiplock_sequence_advance(text)"),
    # Fairness (migration 0021): a fair job's triggers read its key's weight and let
    # the key's next job in through the function; `skiplock weight` writes weights.
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerFairKey"'),
    ("EXECUTE", "FUNCTION", "skiplock_fair_fill(text)"),
    # Per-type policies (migration 0017): a master writes its handlers' options at
    # boot, a child reads an operator's backoff; the job table's insert trigger reads
    # them for every enqueue (so every role that enqueues needs SELECT on it).
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerTypePolicy"'),
    # Rate limits (migration 0018): the job table's triggers record each key's tokens
    # and let its jobs in through the first function; a master's maintenance calls
    # the second.
    ("SELECT, INSERT, UPDATE, DELETE", "TABLE", '"WorkerRateKey"'),
    ("SELECT, INSERT, DELETE", "TABLE", '"WorkerRateToken"'),
    ("EXECUTE", "FUNCTION", "skiplock_rate_admit(text, timestamptz, boolean)"),
    ("EXECUTE", "FUNCTION", "skiplock_rate_wake()"),
)
# Where the demo domain is installed, the built-in handlers write it.
DEMO_TABLES = ('"User"', '"Event"', '"Interpretation"', '"Pattern"', '"Insight"',
               '"Review"', '"DailyPlan"', '"UomSuggestion"', '"UomEntry"')
DEMO_GRANTS: tuple[tuple[str, str, str], ...] = tuple(
    ("SELECT, INSERT, UPDATE", "TABLE", table) for table in DEMO_TABLES)
_CHECKS = {
    "TABLE": "has_table_privilege(:o{i}, :p{i})",
    "FUNCTION": "has_function_privilege(:o{i}, :p{i})",
    "SCHEMA": "has_schema_privilege(:o{i}, :p{i})",
    "DATABASE": "has_database_privilege(current_database(), :p{i})",
}


def _flat(demo: bool) -> list[tuple[str, str, str]]:
    wanted = WORKER_GRANTS + (DEMO_GRANTS if demo else ())
    return [(p, kind, name) for ps, kind, name in wanted for p in ps.split(", ")]


def _missing_statement(demo: bool) -> tuple[Any, dict[str, str]]:
    # One statement, generated from WORKER_GRANTS so that the list is the only
    # place the grants are written down in code.
    from sqlalchemy import text

    columns, params = [], {}
    for i, (privilege, kind, name) in enumerate(_flat(demo)):
        columns.append(_CHECKS[kind].format(i=i))
        params[f"o{i}"], params[f"p{i}"] = name, privilege  # names as SQL writes them
    return text("SELECT current_user, " + ", ".join(columns)), params


def missing_worker_grants(conn: Any, *, demo: bool = False) -> tuple[str, list[str]]:
    """(role, the GRANT statements it lacks) on the connection's database; with `demo`,
    those on the demo domain's tables too."""
    statement, params = _missing_statement(demo)
    row = conn.execute(statement, params).one()
    role, held = row[0], list(row[1:])
    lacking: dict[tuple[str, str], list[str]] = {}
    for (privilege, kind, name), ok in zip(_flat(demo), held, strict=True):
        if not ok:
            lacking.setdefault((kind, name), []).append(privilege)
    return role, [f"GRANT {', '.join(p)} ON {kind} "
                  f"{'<this database>' if kind == 'DATABASE' else name} TO \"{role}\""
                  for (kind, name), p in lacking.items()]
