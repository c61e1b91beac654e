"""The README's snippets, by name: `<!-- snippet: NAME -->` before a fenced block."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def snippet(name: str) -> str:
    found = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```\w*\n(.*?)```",
                      README.read_text(), re.S)
    assert found, f"README.md has no snippet {name!r}"
    return found.group(1)


def commands(name: str) -> list[str]:
    """The shell commands of a snippet, without their comments."""
    lines = (line.split("#", 1)[0].strip() for line in snippet(name).splitlines())
    return [line for line in lines if line]


def unit_commands(name: str) -> dict[str, str]:
    """A systemd snippet's settings (ExecStart=..., WorkingDirectory=...)."""
    pairs = (line.split("=", 1) for line in snippet(name).splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}
