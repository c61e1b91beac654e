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

INSUFFICIENT_PRIVILEGE = "42501"
_DENIED = re.compile(r"permission denied for (table|relation|function|procedure|sequence|"
                     r"schema|database|view|materialized view) (\S+)", re.IGNORECASE)
_TABLE_VERBS = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE")
_OBJECT_PRIVILEGE = {"function": "EXECUTE", "procedure": "EXECUTE", "sequence": "USAGE",
                     "schema": "USAGE", "database": "CONNECT"}


def is_denied(exc: Any) -> bool:
    return getattr(getattr(exc, "orig", exc), "pgcode", None) == INSUFFICIENT_PRIVILEGE


def explain(exc: Any, role: str | None = None) -> str:
    """One line naming the missing grant, from a driver error with SQLSTATE 42501."""
    orig = getattr(exc, "orig", None) or exc
    message = (str(orig).strip().splitlines() or ["permission denied"])[0]
    who = f'"{role}"' if role else "the database role"
    match = _DENIED.search(message)
    if not match:
        return f"{who} lacks a grant: {message} (the README lists every grant skiplock needs)"
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
            f"{quoted} (the README lists every grant skiplock needs)")
