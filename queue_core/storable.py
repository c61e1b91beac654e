"""Making what handlers and producers hand us fit PostgreSQL, one job at a time.

A handler's error text and result come from arbitrary code, and a payload
from any producer: they may hold what PostgreSQL refuses to store (a NUL
character; a lone UTF-16 surrogate, which no UTF-8 encoder accepts), be larger
than is sensible for one row, or be JSON that Python cannot decode (nested
deeper than its recursion limit, or a number with more digits than
`int()` converts). Such data must cost its own job at most, never the child
or the other jobs of a batch, and never turn a success into a failure:

- text is escaped (NUL as the four characters `\\x00`, a lone surrogate as
  `\\udXXX`) and cut at a limit with a marker that says how much was left out;
- a result that cannot be encoded as JSON is stored as a small object saying
  why, and one larger than the limit as a marker with its size and a preview;
- a payload is decoded per job; one that cannot be decoded fails that job,
  without a retry (it would fail the same way every time), with the reason.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_ERROR_CHARS = 64 * 1024
MAX_RESULT_BYTES = 1024 * 1024
PREVIEW_CHARS = 1000
# Deeper than this, a result is stored as a marker instead of walked.
MAX_RESULT_DEPTH = 200


def storable_text(value: Any, limit: int = MAX_ERROR_CHARS) -> str:
    """`value` as text PostgreSQL stores: NUL and lone surrogates escaped, at most `limit`
    characters, the cut marked."""
    try:
        text = value if isinstance(value, str) else str(value)
    except Exception as exc:  # a __str__ that raises: say so instead
        text = f"<{type(value).__name__} whose str() raised {type(exc).__name__}>"
    text = text.replace("\x00", "\\x00")
    # "backslashreplace" writes a lone surrogate as the text \udc80; everything
    # else round-trips unchanged.
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        left_out = len(text) - limit
        marker = f" … [truncated: {left_out} more characters]"
        text = text[: max(0, limit - len(marker))] + marker
    return text


# How much of a job's error a log line quotes: the whole of it is in "lastError"
# (`skiplock job ID`); a log line is read among others.
LOG_REASON_CHARS = 300
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^\s/:@]*:)[^\s/@]+@")


def log_reason(error: Any, limit: int = LOG_REASON_CHARS) -> str:
    """A job's error as a log line quotes it: on one line, at most `limit` characters
    (the cut marked), the password of any URL in it masked. The log's formatter also
    removes every form of the configured database's password (queue_core/logs.py)."""
    text = " ".join(storable_text(error if error is not None else "unknown error").split())
    text = _URL_PASSWORD.sub(r"\1***@", text)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or "unknown error"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when it has none): what
    a log line or a lastError says of a database error whose message runs on."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def describe_exception(exc: BaseException) -> str:
    """`Type: message`, storable; a driver error gives the server's message (with its
    DETAIL and HINT), without the SQL statement and parameters SQLAlchemy appends."""
    inner: BaseException = getattr(exc, "orig", None) or exc
    message = storable_text(inner).strip()
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def _clean(value: Any, depth: int) -> Any:
    if depth > MAX_RESULT_DEPTH:
        raise _Unstorable(f"nested deeper than {MAX_RESULT_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > 13000:  # about 4000 digits: int -> str is refused past 4300
            return f"<integer of {value.bit_length()} bits>"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return storable_text(value, limit=MAX_RESULT_BYTES)
    if isinstance(value, dict):
        return {storable_text(k, 1000): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, depth + 1) for v in value]
    return storable_text(value, limit=MAX_RESULT_BYTES)


class _Unstorable(Exception):
    pass


def storable_json(value: Any, limit: int = MAX_RESULT_BYTES) -> str | None:
    """A handler's result as JSON text that jsonb accepts, or None for no result."""
    if value is None:
        return None
    try:
        encoded = json.dumps(_clean(value, 0), ensure_ascii=False, separators=(",", ":"))
    except (_Unstorable, RecursionError, ValueError, TypeError) as exc:
        reason = str(exc) if isinstance(exc, _Unstorable) else type(exc).__name__
        return json.dumps({"unstorable": f"the handler's result could not be stored: {reason}"})
    size = len(encoded.encode("utf-8"))
    if size > limit:
        return json.dumps({"truncated": True, "bytes": size, "limit": limit,
                           "preview": encoded[:PREVIEW_CHARS]}, ensure_ascii=False)
    return encoded


def load_json(text: str) -> tuple[Any, str | None]:
    """Decode JSON text read from the database: (value, None), or (None, why it cannot be)."""
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "it is nested too deeply for a Python worker to decode (RecursionError)"
    except (ValueError, MemoryError) as exc:
        return None, f"it cannot be decoded ({type(exc).__name__}: {storable_text(exc, 300)})"
