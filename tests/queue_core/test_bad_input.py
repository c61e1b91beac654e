"""Bad input is refused where it enters, in one clear sentence, and nothing is written:
payloads nested too deep, text that is not UTF-8, numbers JSON cannot hold,
settings out of range; what is stored is shown on the terminal escaped."""

from __future__ import annotations

import json
import os

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skiplock import enqueue
from skiplock.cli import main
from skiplock.queue_core import config
from skiplock.queue_core.config import Settings, describe, load_settings
from skiplock.queue_core.enqueue import MAX_PAYLOAD_DEPTH
from skiplock.queue_core.errors import ConfigurationError, InvalidJob, InvalidPayload
from tests.queue_core.helpers import count, sql
from tests.support import IN_CI, examples


def nested(depth: int) -> dict[str, object]:
    payload: dict[str, object] = {}
    for _ in range(depth - 1):
        payload = {"a": payload}
    return payload


def test_payloads_nest_at_most_the_limit() -> None:
    assert enqueue("X", nested(MAX_PAYLOAD_DEPTH))
    with pytest.raises(InvalidPayload, match=f"deeper than {MAX_PAYLOAD_DEPTH}"):
        enqueue("X", nested(MAX_PAYLOAD_DEPTH + 1))
    deep: list[object] = []
    for _ in range(3000):
        deep = [deep]
    with pytest.raises(InvalidPayload, match="deeper"):
        enqueue("X", {"a": deep})  # no RecursionError
    assert count() == 1


@pytest.mark.parametrize(("payload", "message"), [
    ({"a": "\udc80"}, "not valid UTF-8"),
    ({"\udcff": 1}, "not valid UTF-8"),
    ({"a": [1, {"b": "x\ud800"}]}, "not valid UTF-8"),
    ({"n": float("inf")}, "not JSON"),
    ({"n": float("nan")}, "not JSON"),
    ({"n": 10 ** 5000}, "not JSON"),  # more digits than Python's int/str limit
])
def test_payloads_json_or_postgresql_cannot_hold_are_refused(payload: object, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        enqueue("X", payload)  # type: ignore[arg-type]
    assert count() == 0


def test_a_valid_surrogate_pair_is_fine() -> None:
    job = enqueue("X", {"emoji": "\U0001F600", "escaped": "\\ud800 is text"})
    assert sql('SELECT payload FROM "WorkerJob" WHERE id = :i', i=job)[0][0]["emoji"] == "\U0001F600"


@pytest.mark.parametrize("field", ["job_type", "idempotency_key", "user_id"])
@pytest.mark.parametrize("value", ["bad\udc80", "bad\x1b[2J", "bad\x9b"])
def test_types_keys_and_user_ids_hold_no_control_or_invalid_text(field: str, value: str) -> None:
    kwargs = {"idempotency_key": None, "user_id": None, field: value}
    job_type = kwargs.pop("job_type", "X")
    with pytest.raises(InvalidJob):
        enqueue(job_type, {}, **kwargs)  # type: ignore[arg-type]
    assert count() == 0


@pytest.mark.parametrize(("env", "value", "words"), [
    ("SKIPLOCK_LOG_LEVEL", "verbose", "must be one of DEBUG, INFO, WARNING, ERROR"),
    ("SKIPLOCK_HEARTBEAT_S", "nan", "not a finite number"),
    ("SKIPLOCK_HEARTBEAT_S", "-1", "more than 0"),
    ("SKIPLOCK_METRICS_PORT", "70000", "at most 65535"),
    ("SKIPLOCK_MAX_JOBS_PER_CHILD", "-1", "at least 1"),
    ("SKIPLOCK_POLL_STEP_S", "-1", "at least 0"),
    ("SKIPLOCK_GRACEFUL_TIMEOUT_S", "inf", "not a finite number"),
    ("SKIPLOCK_CONCURRENCY", "ten", "not an integer"),
])
def test_settings_say_what_is_wrong_with_them(monkeypatch: pytest.MonkeyPatch, env: str, value: str,
                                              words: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError, match=words):
        load_settings()


def test_values_given_in_code_are_checked_by_the_same_rules() -> None:
    with pytest.raises(ConfigurationError, match="SKIPLOCK_HEARTBEAT_S not a finite number"):
        Settings(heartbeat_s=float("nan")).validate()
    with pytest.raises(ConfigurationError, match="SKIPLOCK_METRICS_PORT must be at most 65535"):
        Settings(metrics_port=70000).validate()


ENVS = [env for _, env, _ in describe()]


@settings(max_examples=examples(300), deadline=None, derandomize=IN_CI,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env=st.sampled_from(ENVS), value=st.text(max_size=12) | st.sampled_from(
    ["nan", "inf", "-inf", "-1", "0", "1e400", "70000", "1e-320", "0x1", " 5 ", "\udc80"]))
def test_any_setting_value_is_accepted_or_refused_in_one_sentence(env: str, value: str) -> None:
    saved = os.environ.get(env)
    os.environ[env] = value.replace("\x00", "")
    try:
        try:
            load_settings()
        except ConfigurationError as exc:
            assert "\n" not in str(exc)
        # The worker's flag for the same setting goes through the same parser.
        flag = next(o for o in main.commands["worker"].params
                    if f"[env: {env};" in (getattr(o, "help", None) or "")
                    or f"[env: {env}]" in (getattr(o, "help", None) or ""))
        try:
            main.commands["worker"].make_context("worker", [flag.opts[0], value])
        except (click.UsageError, click.exceptions.Exit):  # Exit: a value such as --help
            pass
        except ConfigurationError:
            pass
    finally:
        if saved is None:
            os.environ.pop(env, None)
        else:
            os.environ[env] = saved
        config.clear_cache()


def test_stored_control_characters_reach_the_terminal_escaped() -> None:
    job = enqueue("X", {"a": "\x1b[2J\x9b31m"}, idempotency_key="k")
    sql("""UPDATE "WorkerJob" SET "lastError" = :e, status = 'DEAD_LETTER' WHERE id = :i""",
        e="boom \x1b]0;owned\x07\nsecond line\u202e", i=job)
    runner = CliRunner()
    for args in (["job", job], ["jobs"], ["jobs", "--json"], ["job", job, "--json"]):
        out = runner.invoke(main, args).stdout
        assert not any(ch in out for ch in "\x1b\x9b\x07\u202e"), (args, out)
        assert "\\x1b" in out or "\\u001b" in out, (args, out)
    detail = runner.invoke(main, ["job", job]).stdout
    assert "\nsecond line" in detail  # a multi-line error keeps its lines
    listed = json.loads(runner.invoke(main, ["jobs", "--json"]).stdout)
    assert listed[0]["lastError"].startswith("boom \x1b]0;owned")  # JSON keeps the data exact
