"""Every invalid payload of the six types fails validation with the field named."""

import pytest

from skiplock.queue_core.errors import InvalidPayload
from skiplock.queue_core.payloads import validate_payload

GOOD = {
    "INTERPRET_EVENT": {"eventId": "e1"},
    "DETECT_PATTERNS": {"userId": "u1", "triggerEventId": "e1", "interpretationId": "i1"},
    "GENERATE_INSIGHTS": {"userId": "u1", "triggerType": "pattern_created"},
    "GENERATE_REVIEW": {"userId": "u1", "type": "WEEKLY", "periodKey": "2026-W53",
                        "timezone": "Europe/Paris"},
    "GENERATE_TOMORROW_PLAN": {"userId": "u1", "reviewId": "r1", "targetDate": "2026-03-29"},
    "SUGGEST_UOM_UPDATE": {"userId": "u1", "dailyPlanId": "p1"},
}

REQUIRED = [(t, f) for t, p in GOOD.items() for f in p]

WRONG_VALUES = [
    ("INTERPRET_EVENT", "eventId", 42),
    ("INTERPRET_EVENT", "eventId", ""),
    ("DETECT_PATTERNS", "userId", ["u1"]),
    ("GENERATE_INSIGHTS", "triggerType", "new_pattern"),
    ("GENERATE_INSIGHTS", "patternId", 7),
    ("GENERATE_REVIEW", "type", "YEARLY"),
    ("GENERATE_REVIEW", "periodKey", "2026-03"),  # a month key on a WEEKLY review
    ("GENERATE_REVIEW", "periodKey", "2025-W53"),  # 2025 has 52 ISO weeks
    ("GENERATE_REVIEW", "timezone", "Europe/Atlantis"),
    ("GENERATE_REVIEW", "timezone", "+02:00"),
    ("GENERATE_TOMORROW_PLAN", "targetDate", "2026-02-30"),
    ("GENERATE_TOMORROW_PLAN", "targetDate", "29/03/2026"),
    ("SUGGEST_UOM_UPDATE", "dailyPlanId", {"id": "p1"}),
]


@pytest.mark.parametrize(("job_type", "payload"), GOOD.items())
def test_good_payloads_pass(job_type, payload):
    assert validate_payload(job_type, dict(payload)) == payload


@pytest.mark.parametrize(("job_type", "field"), REQUIRED)
def test_missing_field_is_named(job_type, field):
    payload = dict(GOOD[job_type])
    del payload[field]
    with pytest.raises(InvalidPayload, match=f"{job_type} is missing field '{field}'"):
        validate_payload(job_type, payload)


@pytest.mark.parametrize(("job_type", "field", "value"), WRONG_VALUES)
def test_wrong_value_is_named(job_type, field, value):
    payload = {**GOOD[job_type], field: value}
    with pytest.raises(InvalidPayload, match=f"field '{field}' of {job_type}"):
        validate_payload(job_type, payload)


def test_optional_fields_of_insights_may_be_missing_or_null():
    payload = {**GOOD["GENERATE_INSIGHTS"], "eventId": None, "patternId": None}
    validate_payload("GENERATE_INSIGHTS", payload)


def test_payload_must_be_an_object():
    with pytest.raises(InvalidPayload, match="must be a JSON object, not an array"):
        validate_payload("INTERPRET_EVENT", ["e1"])


@pytest.mark.parametrize("kind,key", [("DAILY", "2026-03-29"), ("WEEKLY", "2020-W53"),
                                      ("MONTHLY", "2026-12")])
def test_every_period_format(kind, key):
    validate_payload("GENERATE_REVIEW", {**GOOD["GENERATE_REVIEW"], "type": kind,
                                         "periodKey": key})
