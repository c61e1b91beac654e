"""The command line, fuzzed: whatever the arguments, no traceback, exit 0, 1 or 2,
one `skiplock: error:` line on failure, nothing written when it fails, and no
control character of the input on the terminal.

Through click's runner (many examples, in process), and a sample through real
subprocesses, where arguments and the environment can hold bytes that are not
UTF-8, as they do from a shell.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiplock.cli import main
from skiplock.queue_core import config
from tests.queue_core.helpers import sql
from tests.support import IN_CI, examples

TEXT = st.one_of(
    st.sampled_from(["X", "", " ", "\x1b[31mred\x1b[0m", "a\nb", "é", "\u202eevil", "x" * 300,
                     "--json", "-", "@/nonexistent", "'", '"', "%s", "\x07\x9b2J", "\udc80",
                     "INTERPRET_EVENT", "k" * 1001]),
    st.text(max_size=12))
NUMBER = st.sampled_from(["0", "-1", "-5", "nan", "inf", "-inf", "1e400", "70000", "1", "3",
                          "2147483648", "abc", "1.5", "5m", "30s", "9999999999d", "0x10", ""])
JSON = st.sampled_from([
    "{}", '{"a": 1}', "[" * 5000 + "]" * 5000, '{"a": ' * 100 + "1" + "}" * 100,
    '{"n": 1e400}', '{"n": ' + "9" * 5000 + "}", '"str"', "null", '{"a": "\\udc80"}',
    '{"a": "\\u0000"}', "{bad", '{"eventId": "e1"}', '{"a": "\\u001b[2J"}', "-"])
DATE = st.sampled_from(["0001-01-01", "9999-12-31", "2026-02-30", "2026-01-01", "x",
                        "1899-12-31", "2026-01-01T00:00:00", "9000-12-31"])


def _options(*choices: tuple[str, st.SearchStrategy[str] | None]) -> st.SearchStrategy[list[str]]:
    def flat(picked: list[tuple[str, st.SearchStrategy[str] | None]]) -> st.SearchStrategy[list[str]]:
        parts = [st.just([flag]) if value is None else value.map(lambda v, f=flag: [f, v])
                 for flag, value in picked]
        return st.tuples(*parts).map(lambda groups: [a for g in groups for a in g])
    if not choices:
        return st.just([])
    return st.lists(st.sampled_from(choices), max_size=4).flatmap(flat)


def _command(words: list[str], positional: list[st.SearchStrategy[str]],
             options: st.SearchStrategy[list[str]]) -> st.SearchStrategy[list[str]]:
    return st.tuples(st.tuples(*positional) if positional else st.just(()), options).map(
        lambda parts: [*words, *parts[0], *parts[1]])


COMMANDS = st.one_of(
    _command(["enqueue"], [st.one_of(st.sampled_from(["X", "INTERPRET_EVENT", "GENERATE_REVIEW"]),
                                     TEXT), JSON],
             _options(("--priority", NUMBER), ("--delay", NUMBER), ("--key", TEXT),
                      ("--max-attempts", NUMBER), ("--user-id", TEXT), ("--any-type", None))),
    _command(["job"], [TEXT], _options(("--json", None))),
    _command(["jobs"], [], _options(("--status", TEXT), ("--type", TEXT), ("--limit", NUMBER),
                                    ("--json", None), ("--user-id", TEXT))),
    _command(["retry"], [TEXT], _options(("--all-dead", None), ("--type", TEXT))),
    _command(["recover"], [], _options(("--stuck-timeout", NUMBER))),
    _command(["cleanup"], [], _options(("--older-than", NUMBER), ("--keep-dead", None))),
    # --watch only with values that must be refused: a valid one runs until Ctrl-C.
    _command(["stats"], [], _options(("--json", None), ("--exact", None),
                                     ("--watch", st.sampled_from(["nan", "-1", "inf", "0", "x"])))),
    _command(["pause"], [TEXT], _options(("--reason", TEXT))),
    _command(["resume"], [TEXT], _options()),
    _command(["ps"], [], _options(("--json", None))),
    _command(["backfill", "interpret"], [], _options(
        ("--since", DATE), ("--until", DATE), ("--user-id", TEXT), ("--batch-size", NUMBER),
        ("--dry-run", None))),
    _command(["backfill", "reviews"], [], _options(
        ("--period", st.sampled_from(["daily", "weekly", "monthly", "yearly"])), ("--from", DATE),
        ("--to", DATE), ("--dry-run", None), ("--batch-size", NUMBER))),
    _command(["schedule", "list"], [], _options(("--file", TEXT), ("--count", NUMBER),
                                                ("--offline", None))),
    _command(["db", "url"], [], _options()),
    # Only values that must be refused: a valid command line serves until Ctrl-C.
    _command(["dashboard", "--refresh", "nan"], [], _options(("--port", NUMBER))),
    _command(["dashboard", "--port", "70000"], [], _options(("--refresh", NUMBER))),
)

# On a terminal: C0 but newline and tab, DEL, C1, bidi overrides, lone surrogates.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
runner = CliRunner()


def _state() -> list[tuple[object, ...]]:
    return [tuple(r) for r in sql(
        """SELECT 'job', status::text, count(*) FROM "WorkerJob" GROUP BY status
           UNION ALL SELECT 'pause', type, 1 FROM "WorkerJobPause" ORDER BY 1, 2""")]


@settings(max_examples=examples(250), deadline=None, derandomize=IN_CI,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=COMMANDS)
def test_fuzzed_command_lines_end_in_one_clear_way(argv: list[str]) -> None:
    before = _state()
    config.clear_cache()
    result = runner.invoke(main, argv, input="not json")
    config.clear_cache()
    out, err = result.stdout, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        argv, repr(result.exception))
    assert result.exit_code in (0, 1, 2), (argv, result.exit_code, err)
    assert "Traceback" not in out + err, argv
    assert not RAW_CONTROL.search(out + err), (argv, out, err)
    if result.exit_code == 1:
        assert err.strip().splitlines()[-1].startswith("skiplock: error: "), (argv, err)
    if result.exit_code != 0:
        assert _state() == before, (argv, err)


ISSUE_INPUTS = [
    (["enqueue", "X", "[" * 5000 + "]" * 5000, "--any-type"], {}, 1),
    (["enqueue", "X", '{"a": ' * 200 + "1" + "}" * 200, "--any-type"], {}, 1),
    ([b"enqueue", b"X\xff", b"{}", b"--any-type"], {}, 2),
    ([b"enqueue", b"X", b"{}", b"--any-type", b"--key", b"k\xfe"], {}, 2),
    ([b"job", b"\xff\xfe"], {}, 2),
    (["stats"], {"SKIPLOCK_LOG_LEVEL": "verbose"}, 1),
    (["worker", "--metrics-port", "70000"], {}, 2),
    (["cleanup", "--older-than", "nan"], {}, 2),
    (["recover", "--stuck-timeout", "-5"], {}, 2),
    (["stats", "--watch", "nan"], {}, 2),
    (["worker"], {"SKIPLOCK_HEARTBEAT_S": "nan"}, 1),
    (["worker", "--job-timeout", "-5"], {}, 2),
    (["worker", "--graceful-timeout", "nan"], {}, 2),
    (["worker", "--poll-step", "-1"], {}, 2),
    (["worker", "--max-jobs-per-child", "-1"], {}, 2),
    (["backfill", "reviews", "--period", "daily", "--from", "0001-01-01"], {}, 2),
    (["backfill", "interpret", "--until", "9999-12-31"], {}, 2),
    (["stats"], {"DATABASE_URL": b"postgresql://u:p\xffw@127.0.0.1:1/x"}, 1),
]


@pytest.mark.parametrize(("argv", "env", "status"), ISSUE_INPUTS,
                         ids=[str(i) for i in range(len(ISSUE_INPUTS))])
def test_the_inputs_that_gave_tracebacks_now_give_one_line(
        argv: list[str | bytes], env: dict[str, str | bytes], status: int) -> None:
    full_env: dict[str | bytes, str | bytes] = {**os.environ, **env}
    before = _state()
    result = subprocess.run([sys.executable.encode(), b"-m", b"skiplock",
                             *[a if isinstance(a, bytes) else a.encode() for a in argv]],
                            env={os.fsencode(k): os.fsencode(v) for k, v in full_env.items()},
                            capture_output=True, timeout=60)
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode == status, err
    assert "Traceback" not in err and result.stdout == b""
    lines = err.strip().splitlines()
    if status == 1:
        assert len(lines) == 1 and lines[0].startswith("skiplock: error: "), err
    assert _state() == before


def _as_bytes(arg: str) -> bytes:
    try:
        return arg.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return arg.encode("utf-8", "surrogatepass")


@settings(max_examples=examples(10), deadline=None, derandomize=IN_CI,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(argv=COMMANDS)
def test_a_sample_of_fuzzed_command_lines_through_real_processes(argv: list[str]) -> None:
    before = _state()
    # From a shell, an argument is bytes (never a NUL): a lone surrogate goes as bytes
    # that are not UTF-8, which is how Python received it in the first place.
    raw = [_as_bytes(a.replace("\x00", "")) for a in argv]
    result = subprocess.run([sys.executable.encode(), b"-m", b"skiplock", *raw], input=b"{}",
                            capture_output=True, timeout=60)
    out = result.stdout.decode("utf-8", "replace")
    err = result.stderr.decode("utf-8", "replace")
    assert result.returncode in (0, 1, 2), (argv, result.returncode, err)
    assert "Traceback" not in out + err, (argv, err)
    assert not RAW_CONTROL.search(out + err), (argv, out, err)
    if result.returncode != 0:
        assert _state() == before, (argv, err)
