"""The documentation's snippets, by name: `<!-- snippet: NAME -->` before a fenced block.

The README's, and those of the pages in docs/ (`snippet(name, "docs/schema.md")`).
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

# The snippets that enqueue in the application's transaction, and the application's
# own table they write in it (the README's `signup`), which their tests create.
ENQUEUE_SNIPPETS = ("enqueue-session", "enqueue-psycopg", "enqueue-psycopg2")
SIGNUP_TABLE = "CREATE TABLE IF NOT EXISTS signup (id text PRIMARY KEY, email text NOT NULL)"


def readme_url(url: str) -> str:
    """`url` in the README's form: postgresql://, no driver named."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def snippet(name: str, page: str = "README.md") -> str:
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```\w*\n(.*?)```",
                      (REPO / page).read_text(), re.S)
    assert found, f"{page} has no snippet {name!r}"
    return found.group(1)


def commands(name: str, page: str = "README.md") -> list[str]:
    """The shell commands of a snippet, without their comments, continued lines joined."""
    text = snippet(name, page).replace("\\\n", " ")
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def unit_commands(name: str) -> dict[str, str]:
    """A systemd snippet's settings (ExecStart=..., WorkingDirectory=...)."""
    pairs = (line.split("=", 1) for line in snippet(name).splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}
