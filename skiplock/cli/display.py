"""What reaches the operator's terminal: no control character from the data.

Payloads, errors, job types and ids come from whoever enqueued the job; an
escape sequence among them could rewrite the operator's screen or title, or
hide a line. Text is shown with every control character (C0, DEL, C1, and the
bidirectional overrides) written as an escape such as `\\x1b`; `--json`
output is valid JSON with the same characters as `\\u` escapes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import click

# C0 except tab and newline (handled per use), DEL, C1, and the bidi controls.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_AND_LINES = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(value: Any, *, lines: bool = False) -> str:
    """`value` as text fit for a terminal; newlines and tabs kept only with `lines`."""
    text = "" if value is None else str(value)
    text = _SURROGATE.sub(_escape, text)  # bytes that were not UTF-8
    return (_CONTROL if lines else _CONTROL_AND_LINES).sub(_escape, text)


def echo(value: Any = "", *, err: bool = False, lines: bool = False) -> None:
    click.echo(safe(value, lines=lines), err=err)


def print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    click.echo(json_safe(text))


def json_safe(text: str) -> str:
    """JSON text whose strings carry C1, bidi and surrogate characters as \\u escapes.

    json.dumps escapes C0 already; outside strings JSON holds none of these, so a
    replacement over the whole text is still valid JSON.
    """
    return re.sub("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]",
                  lambda m: f"\\u{ord(m.group()):04x}", text)
