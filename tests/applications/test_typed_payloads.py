"""Typed payloads: `@handler(TYPE, payload=Model)` with a pydantic model or a dataclass.

Checked at enqueue with one line naming the field (nothing written), stored as
JSON, checked again before the job runs, and handed to the handler as the model
instance: inline (`skiplock.testing`), through a real pool, and by the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Annotated, Any

import pytest
from click.testing import CliRunner

import skiplock
from skiplock import testing
from skiplock.cli import main
from skiplock.handlers import registry
from skiplock.queue_core import config, payloads
from skiplock.queue_core.errors import InvalidJob, InvalidPayload
from skiplock.queue_core.payload_models import NonEmpty, model_of
from tests.applications import typed_handlers
from tests.applications.typed_handlers import PLAIN, RESIZE, THUMB, ResizeArgs, Size, ThumbArgs
from tests.packaging.snippets import snippet
from tests.queue_core.helpers import count, row, sql
from tests.support import wait_for

APP_HANDLERS = "tests.applications.typed_handlers"


def refused(job_type: str, payload: Any) -> str:
    """The one line an enqueue of `payload` is refused with; nothing was written."""
    with pytest.raises(InvalidPayload) as caught:
        skiplock.enqueue(job_type, payload)
    assert count() == 0
    message = str(caught.value)
    assert "\n" not in message
    return message


def insert_raw(job_type: str, payload: dict[str, Any]) -> str:
    """A row as another producer writes it: no model checked it."""
    sql("""INSERT INTO "WorkerJob" (id, type, payload, "maxAttempts")
           VALUES ('raw-' || :t, :t, CAST(:p AS jsonb), 3)""", t=job_type, p=json.dumps(payload))
    return f"raw-{job_type}"


@pytest.mark.parametrize(("payload", "message"), [
    ({"url": "https://x/a.png", "width": "abc"},
     "field 'width' of TYPED_RESIZE is wrong: input should be a valid integer, unable to parse "
     "string as an integer (got 'abc')"),
    ({"width": 3}, "payload of TYPED_RESIZE is missing field 'url'"),
    ({"url": "ftp://x", "width": 3}, "field 'url' of TYPED_RESIZE is wrong: must be an http(s) URL"),
    ({"url": "https://x", "width": 3, "height": 0},
     "field 'height' of TYPED_RESIZE is wrong: input should be greater than 0 (got 0)"),
    (["https://x"], "payload of TYPED_RESIZE must be a JSON object, not an array"),
])
def test_a_pydantic_typed_handler_refuses_a_bad_payload_at_enqueue_with_one_line(payload, message):
    assert refused(RESIZE, payload).startswith(message)


@pytest.mark.parametrize(("payload", "message"), [
    ({"path": "a.png", "size": {"width": "abc", "height": 2}},
     "field 'size.width' of TYPED_THUMB must be an integer, not 'abc'"),
    ({"path": "a.png"}, "payload of TYPED_THUMB is missing field 'size'"),
    ({"path": " ", "size": {"width": 1, "height": 2}},
     "field 'path' of TYPED_THUMB must be a non-empty string, not ' '"),
    ({"path": "a", "size": {"width": 1, "height": 2}, "format": "gif"},
     "field 'format' of TYPED_THUMB must be one of png, jpeg, not 'gif'"),
    ({"path": "a", "size": {"width": 1, "height": 2}, "tags": ["ok", 7]},
     "field 'tags[1]' of TYPED_THUMB must be a string, not 7"),
    ({"path": "a", "size": {"width": 1, "height": 2}, "quality": 0.5},
     "field 'quality' of TYPED_THUMB is wrong: a png has no quality"),
    ({"path": "a", "size": {"width": True, "height": 2}},
     "field 'size.width' of TYPED_THUMB must be an integer, not true"),
])
def test_a_dataclass_typed_handler_refuses_a_bad_payload_at_enqueue_with_one_line(payload, message):
    assert refused(THUMB, payload) == message


def test_a_bad_job_in_a_batch_of_typed_jobs_writes_none_of_them():
    with pytest.raises(InvalidPayload, match="field 'width' of TYPED_RESIZE"):
        skiplock.enqueue_many([{"type": RESIZE, "payload": {"url": "http://x", "width": 1}},
                               {"type": RESIZE, "payload": {"url": "http://x", "width": []}}])
    assert count() == 0


def test_a_good_dict_is_stored_as_given_and_a_model_instance_as_its_json():
    given = {"url": "https://x/a.png", "width": 640, "unknown": "kept"}
    assert row(skiplock.enqueue(RESIZE, given)).payload == given
    resized = skiplock.enqueue(RESIZE, ResizeArgs(url="https://x/b.png", width=320))
    assert row(resized).payload == {"url": "https://x/b.png", "width": 320, "height": 100}
    thumb = skiplock.enqueue(THUMB, ThumbArgs(path="a.png", size=Size(2, 3), tags=["t"]))
    assert row(thumb).payload == {"path": "a.png", "size": {"width": 2, "height": 3},
                                  "format": "png", "tags": ["t"], "quality": None}


def test_a_dataclass_instance_is_checked_too_though_making_it_checked_nothing():
    wrong = ThumbArgs(path="a.png", size=Size("wide", 3))  # type: ignore[arg-type]
    assert refused(THUMB, wrong) == "field 'size.width' of TYPED_THUMB must be an integer, not 'wide'"


def test_a_model_instance_of_a_type_without_a_model_is_checked_against_its_own_class():
    assert refused("TYPED_NOBODY_SERVES", Size(4, None)) == (  # type: ignore[arg-type]
        "field 'height' of TYPED_NOBODY_SERVES must be an integer, not null")
    job_id = skiplock.enqueue("TYPED_NOBODY_SERVES", Size(4, 5))
    assert row(job_id).payload == {"width": 4, "height": 5}


def test_drain_hands_the_handlers_their_model_instances_and_untyped_ones_the_dict():
    ids = [skiplock.enqueue(RESIZE, {"url": "https://x", "width": "640"}),  # pydantic: lax
           skiplock.enqueue(THUMB, {"path": "a", "size": {"width": 9, "height": 2}}),
           skiplock.enqueue(PLAIN, {"anything": ["goes"]})]
    report = testing.drain([RESIZE, THUMB, PLAIN])
    assert report.outcomes == {"completed": 3}, report.errors
    assert [row(i).result for i in ids] == [
        {"model": "ResizeArgs", "width": 640, "height": 100},
        {"model": "ThumbArgs", "width": 9, "format": "png"},
        {"model": "dict"},
    ]


def test_drain_fails_a_row_that_does_not_fit_the_model_without_retry():
    job_id = insert_raw(THUMB, {"path": "a", "size": {"width": "nine", "height": 2}})
    report = testing.drain([THUMB])
    assert report.outcomes == {"dead_lettered": 1}
    r = row(job_id)
    assert (r.st, r.attempts) == ("DEAD_LETTER", 1)
    assert r.lastError == "field 'size.width' of TYPED_THUMB must be an integer, not 'nine'"


def test_a_pool_hands_the_model_to_the_handler_and_fails_a_bad_row_without_retry(start_pool,
                                                                               jobs):
    good = [jobs.enqueue(RESIZE, {"url": "https://x", "width": 64}),
            jobs.enqueue(THUMB, {"path": "a", "size": {"width": 8, "height": 2},
                                 "format": "jpeg", "quality": 0.9})]
    bad_resize = insert_raw(RESIZE, {"url": "https://x", "width": "wide"})
    bad_thumb = insert_raw(THUMB, {"path": "a"})
    start_pool("--concurrency", "1", handlers=APP_HANDLERS)
    wait_for(lambda: jobs.statuses(RESIZE) == {"COMPLETED": 1, "DEAD_LETTER": 1}
             and jobs.statuses(THUMB) == {"COMPLETED": 1, "DEAD_LETTER": 1}, 30,
             "the typed jobs to end")
    assert [jobs.get(j)["result"] for j in good] == [
        {"model": "ResizeArgs", "width": 64, "height": 100},
        {"model": "ThumbArgs", "width": 8, "format": "jpeg"},
    ]
    for job_id, error in [
        (bad_resize, "field 'width' of TYPED_RESIZE is wrong: input should be a valid integer"),
        (bad_thumb, "payload of TYPED_THUMB is missing field 'size'"),
    ]:
        dead = jobs.get(job_id)
        assert dead["attempts"] == 1 and dead["lastError"].startswith(error)


runner = CliRunner()


def cli(*args: str) -> Any:
    config.clear_cache()
    try:
        return runner.invoke(main, list(args), catch_exceptions=False)
    finally:
        config.clear_cache()


@pytest.mark.parametrize("any_type", [(), ("--any-type",)])
def test_cli_enqueue_checks_the_payload_against_the_model_of_the_handlers_module(any_type):
    bad = cli("enqueue", RESIZE, '{"url": "https://x", "width": "abc"}',
              "--handlers", APP_HANDLERS, *any_type)
    assert bad.exit_code == 1
    assert bad.output.splitlines() == [
        "skiplock: error: field 'width' of TYPED_RESIZE is wrong: input should be a valid "
        "integer, unable to parse string as an integer (got 'abc')"]
    assert count() == 0
    good = cli("enqueue", RESIZE, '{"url": "https://x", "width": 3}', "--handlers", APP_HANDLERS,
               *any_type)
    assert good.exit_code == 0, good.output
    assert row(good.output.strip()).payload == {"url": "https://x", "width": 3}


def test_where_the_model_is_not_known_a_payload_only_has_to_be_a_json_object(monkeypatch):
    monkeypatch.setattr(payloads, "_models", {})  # a process that never imported the module
    job_id = skiplock.enqueue(RESIZE, {"width": "abc"})
    assert row(job_id).payload == {"width": "abc"}


def test_an_untyped_replacement_of_a_builtin_handler_keeps_its_checks_a_typed_one_its_own(
        monkeypatch):
    for table in ("_registered", "_defaults", "_models"):
        monkeypatch.setattr(payloads, table, dict(getattr(payloads, table)))
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))
    skiplock.register_handler("INTERPRET_EVENT", typed_handlers.plain)
    assert refused("INTERPRET_EVENT", {"eventId": 7}).startswith("field 'eventId' of INTERPRET_EVENT")
    registration = registry.get_registration("INTERPRET_EVENT")
    assert registration is not None
    assert registration.payload_for({"eventId": "e1"}) == {"eventId": "e1"}  # the dict

    skiplock.register_handler("INTERPRET_EVENT", typed_handlers.thumb, payload=ThumbArgs)
    assert refused("INTERPRET_EVENT", {"eventId": "e1"}) == (
        "payload of INTERPRET_EVENT is missing field 'path'")
    registry.unregister_handler("INTERPRET_EVENT")  # back to the type's own contract
    assert refused("INTERPRET_EVENT", {}) == "payload of INTERPRET_EVENT is missing field 'eventId'"


@dataclasses.dataclass(frozen=True)
class Everything:
    counts: dict[str, int]
    points: tuple[int, ...]
    either: int | str
    ratio: float
    flag: bool
    anything: Any = None
    note: Annotated[str, NonEmpty] | None = None


EVERYTHING = {"counts": {"a": 1}, "points": [1, 2], "either": "x", "ratio": 2, "flag": False}


@pytest.mark.parametrize(("change", "message"), [
    ({"counts": {"a": "1"}}, "field 'counts.a' of T must be an integer, not '1'"),
    ({"counts": []}, "field 'counts' of T must be an object, not an array"),
    ({"points": [1, 2.5]}, "field 'points[1]' of T must be an integer, not 2.5"),
    ({"either": 1.5}, "field 'either' of T must be an integer or a string, not 1.5"),
    ({"ratio": "2"}, "field 'ratio' of T must be a number, not '2'"),
    ({"ratio": True}, "field 'ratio' of T must be a number, not true"),
    ({"flag": 0}, "field 'flag' of T must be a boolean, not 0"),
    ({"note": ""}, "field 'note' of T must be a non-empty string, not an empty string"),
])
def test_a_dataclass_checks_each_json_type_exactly(change, message):
    model = model_of(Everything)
    with pytest.raises(InvalidPayload) as caught:
        model.validate("T", {**EVERYTHING, **change})
    assert str(caught.value) == message


def test_a_dataclass_takes_what_fits_converts_an_integer_to_float_and_ignores_the_unknown():
    given = {**EVERYTHING, "anything": [{"x": None}], "note": None, "later": "field"}
    made = model_of(Everything).validate("T", given)
    assert made == Everything({"a": 1}, (1, 2), "x", 2.0, False, [{"x": None}], None)
    assert isinstance(made.ratio, float)
    assert model_of(Everything).dump(made) == {**EVERYTHING, "points": [1, 2], "ratio": 2.0,
                                               "anything": [{"x": None}], "note": None}


@pytest.mark.parametrize(("annotation", "message"), [
    (tuple[int, str], r"only tuple\[X, \.\.\.\]"),
    (dict[int, str], r"the keys of a JSON object are strings"),
    (Annotated[int, "positive"], r"'positive' in Annotated is not a check"),
    (Annotated[int, NonEmpty], r"NonEmpty goes with str"),
])
def test_a_dataclass_annotation_it_cannot_check_is_refused(annotation, message):
    with pytest.raises(TypeError, match=message):
        model_of(dataclasses.make_dataclass("Odd", [("field", annotation)]))


@dataclasses.dataclass(frozen=True)
class Fragile:
    name: str

    def __post_init__(self) -> None:
        if self.name == "boom":
            raise KeyError(self.name)  # a bug of the model's, not a ValueError


def test_a_model_whose_own_code_fails_refuses_the_payload_and_a_worker_fails_the_job():
    skiplock.register_handler("TYPED_FRAGILE", typed_handlers.plain, payload=Fragile)
    try:
        assert refused("TYPED_FRAGILE", {"name": "boom"}) == (
            "payload of TYPED_FRAGILE could not be checked: KeyError: 'boom'")
        job_id = insert_raw("TYPED_FRAGILE", {"name": "boom"})
        assert testing.drain(["TYPED_FRAGILE"]).outcomes == {"dead_lettered": 1}
        assert row(job_id).lastError == "payload of TYPED_FRAGILE could not be checked: KeyError: 'boom'"
    finally:
        registry.unregister_handler("TYPED_FRAGILE")


def test_a_model_that_cannot_be_checked_is_refused_when_it_is_registered():
    @dataclasses.dataclass
    class WithADate:
        when: complex

    with pytest.raises(InvalidJob, match=r"payload of TYPED_BAD: payload model .*WithADate, "
                                         r"field 'when': complex is not a type a dataclass "
                                         r"payload can check"):
        skiplock.register_handler("TYPED_BAD", typed_handlers.plain, payload=WithADate)
    with pytest.raises(InvalidJob, match="is neither a dataclass nor a pydantic model"):
        skiplock.register_handler("TYPED_BAD", typed_handlers.plain, payload=dict)
    assert registry.get_registration("TYPED_BAD") is None
    assert payloads.payload_model("TYPED_BAD") is None


def test_skiplock_imports_without_pydantic():
    # A dataclass payload needs nothing more; only a pydantic model brings pydantic in.
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, skiplock; print('pydantic' in sys.modules)"],
        capture_output=True, text=True, timeout=60)
    assert probe.stdout.strip() == "False", probe.stderr


def run_as_written(text: str, scope: dict[str, Any]) -> None:
    # Not under this module's `from __future__ import annotations`, which exec() would
    # pass on: the snippet's annotations are evaluated as in the reader's module.
    exec(compile(text, "<snippet>", "exec", dont_inherit=True), scope)


def test_the_readme_snippet_runs_and_refuses_what_its_comment_says():
    text = snippet("typed-payloads")
    scope: dict[str, Any] = {}
    run_as_written(text, scope)
    try:
        assert row(scope["job_id"]).payload == {"url": "https://example.com/a.png", "width": 640}
        bad_call, said = (line.removeprefix("# ") for line in text.strip().splitlines()[-2:])
        with pytest.raises(InvalidPayload) as caught:
            eval(bad_call.removesuffix(" raises"), scope)
        assert said.startswith("InvalidPayload: ") and said.endswith(", ...")
        assert str(caught.value).startswith(said.removeprefix("InvalidPayload: ")[:-len(", ...")])
        report = testing.drain(["RESIZE"])
        assert report.outcomes == {"completed": 1}, report.errors
        assert row(scope["job_id"]).result == {"width": 640}  # read off the model
    finally:
        registry.unregister_handler("RESIZE")


def test_the_dataclass_snippet_of_the_applications_page_refuses_what_the_page_says():
    scope: dict[str, Any] = {}
    run_as_written(snippet("typed-dataclass", "docs/applications.md"), scope)
    try:
        assert refused("THUMB", {"path": "a.png", "size": {"width": "abc", "height": 1}}) == (
            "field 'size.width' of THUMB must be an integer, not 'abc'")
        assert refused("THUMB", {"path": "a.png", "size": {"width": 1, "height": 1},
                                 "quality": 0.8}) == (
            "field 'quality' of THUMB is wrong: a png has no quality")
        job_id = skiplock.enqueue("THUMB", scope["ThumbArgs"](
            path="a.jpg", size=scope["Size"](640, 480), format="jpeg", quality=0.8))
        assert testing.drain(["THUMB"]).outcomes == {"completed": 1}
        assert row(job_id).result == {"width": 640}
    finally:
        registry.unregister_handler("THUMB")


def test_the_builtin_typed_helpers_take_their_dataclass_and_keep_their_keys():
    from skiplock.handlers.payloads import GenerateInsights, InterpretEvent

    job_id = skiplock.enqueue_interpret_event(InterpretEvent(eventId="e1"))
    assert (row(job_id).payload, row(job_id).idempotencyKey) == ({"eventId": "e1"}, "interpret:e1")
    insights = skiplock.enqueue_generate_insights(
        GenerateInsights(userId="u1", triggerType="pattern_created", patternId="p1"))
    assert row(insights).idempotencyKey == "insights:u1:pattern_created:p1"
    assert row(insights).userId == "u1"
    assert refused_by_helper(lambda: skiplock.enqueue_interpret_event(InterpretEvent(eventId=""))) \
        == "field 'eventId' of INTERPRET_EVENT must be a non-empty string, not an empty string"


def refused_by_helper(call: Any) -> str:
    before = count()
    with pytest.raises(InvalidPayload) as caught:
        call()
    assert count() == before
    return str(caught.value)
