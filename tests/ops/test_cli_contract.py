"""What every operator command promises: --help explains each flag; bad input and a
database that is down give one line, exit 1 (2 for usage errors), and write nothing."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from skiplock.cli import main
from tests.ops.helpers import run, skiplock
from tests.queue_core.helpers import count

COMMANDS = [("stats",), ("jobs",), ("pause",), ("resume",), ("ps",), ("backfill", "interpret"),
            ("backfill", "reviews"), ("schedule", "list"), ("schedule", "run"), ("recover",),
            ("cleanup",), ("retry",), ("cancel",), ("dashboard",)]


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        found = command.commands.get(name)
        assert found is not None, path
        command = found
    return command


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_explains_every_flag(path):
    result = run(*path, "--help")
    assert result.exit_code == 0
    for param in _command(path).params:
        if isinstance(param, click.Option):
            assert param.help, f"{' '.join(path)} {param.opts[0]} has no help"
            assert param.opts[0] in result.output


DOWN = {"DATABASE_URL": "postgresql://ops:s3cret-pw@127.0.0.1:1/nowhere"}


@pytest.mark.parametrize("args", [
    ["stats"], ["jobs"], ["ps"], ["pause", "A"], ["backfill", "interpret"],
    ["backfill", "reviews", "--period", "daily", "--from", "2026-11-01", "--to", "2026-11-02"],
])
def test_a_database_that_is_down_is_one_line_without_a_password(args):
    result = skiplock(*args, env=DOWN)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("skiplock: error: cannot use the database at")
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_unknown_ids_and_types_are_one_line_and_change_nothing():
    for args, fragment in ((["job", "nope"], "no job with id 'nope'"),
                           (["resume", "NOPE"], "NOPE is not paused")):
        result = run(*args)
        assert result.exit_code == 1
        assert result.output.strip().splitlines() == [f"skiplock: error: {fragment}"]
    assert "not dead-lettered (left alone): nope" in run("retry", "nope").output
    assert count() == 0


def test_cancel_is_listed_where_operators_look_for_actions():
    """`skiplock --help`, the dashboard's --allow-actions and the README's operator
    commands name the cancel action beside retry, run now, pause and resume."""
    listing = run("--help").output
    assert any(line.split()[:1] == ["cancel"] for line in listing.splitlines()), listing
    allow = _command(("dashboard",)).params
    [actions] = [p for p in allow if isinstance(p, click.Option) and "--allow-actions" in p.opts]
    assert "cancel" in (actions.help or "")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    operate = readme.split("## Operate it", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in operate.splitlines() if line.startswith("| `skiplock ")]
    assert any("`skiplock cancel ID…`" in row for row in rows), rows
    [dashboard] = [row for row in rows if row.startswith("| `skiplock dashboard")]
    assert "cancel" in dashboard
