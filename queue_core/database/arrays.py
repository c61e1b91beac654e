"""PostgreSQL array literals, sent as one bound text parameter per array.

psycopg2 sends a Python list as `ARRAY['a', 'b', ...]`: one constant per
element, which the server parses and types again for every statement. One
literal per column (`'{"a","b"}'`, read by the array type's input function,
the statement casting it: `CAST(:ids AS text[])`) costs the client a join and
the server one cast, and made bulk enqueues, a pool child's batch statement
and a master's heartbeat faster (docs/benchmarks.md, "Figures behind the code").
The values never hold NUL: PostgreSQL's text cannot, and every caller refuses
or escapes it first (queue_core/storable.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def text_array(values: Iterable[str | None]) -> str:
    """`{"a","b",NULL}`: each value quoted, its backslashes and quotes escaped."""
    return "{" + ",".join(
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        for v in values
    ) + "}"


def number_array(values: Sequence[float | None]) -> str:
    """`{1,2.5,NULL}`: ints and floats as Python writes them, which PostgreSQL reads back."""
    if None in values:
        return "{" + ",".join("NULL" if v is None else repr(v) for v in values) + "}"
    return "{" + ",".join(map(repr, values)) + "}"


def flag_array(values: Iterable[bool]) -> str:
    """`{t,f}`: PostgreSQL's own spelling of booleans."""
    return "{" + ",".join("t" if v else "f" for v in values) + "}"
