"""The payload a job type takes: the six built-in types' names, and which model checks
each type's payload.

A payload is a JSON object. A type may have a model (queue_core/payload_models.py:
a dataclass or a pydantic model), registered with its handler
(`@handler(TYPE, payload=Model)`) or, for the six built-in types, by the domain
that defines them (handlers/payloads.py); the payload is then checked against it
where the job is enqueued, and again before it runs (a row may come from
elsewhere, such as the original TypeScript service, or from a process that did
not import the handler module). An error is one line naming the type and the
missing or wrong field.

The check at enqueue needs the model known in the enqueuing process: where the
handler module was not imported, a payload only has to be a JSON object.
"""

from __future__ import annotations

from typing import Any

from skiplock.queue_core import payload_models
from skiplock.queue_core.errors import InvalidPayload
from skiplock.queue_core.payload_models import PayloadModel

INTERPRET_EVENT = "INTERPRET_EVENT"
DETECT_PATTERNS = "DETECT_PATTERNS"
GENERATE_INSIGHTS = "GENERATE_INSIGHTS"
GENERATE_REVIEW = "GENERATE_REVIEW"
GENERATE_TOMORROW_PLAN = "GENERATE_TOMORROW_PLAN"
SUGGEST_UOM_UPDATE = "SUGGEST_UOM_UPDATE"

BUILTIN_TYPES = (
    INTERPRET_EVENT,
    DETECT_PATTERNS,
    GENERATE_INSIGHTS,
    GENERATE_REVIEW,
    GENERATE_TOMORROW_PLAN,
    SUGGEST_UOM_UPDATE,
)

# A type's own contract (the six built-in types'), which stays when an application
# replaces the type's handler without a model of its own; a registration's model
# takes its place. `_models` is what is in force, one look-up per enqueued job.
_defaults: dict[str, PayloadModel] = {}
_registered: dict[str, PayloadModel] = {}
_models: dict[str, PayloadModel] = {}


def set_payload_model(job_type: str, model: PayloadModel | None, *,
                      default: bool = False) -> None:
    """Check `job_type`'s payloads against `model` (None: no model of a registration's,
    so the type's default, if any). `default=True` sets the type's own contract."""
    table = _defaults if default else _registered
    if model is None:
        table.pop(job_type, None)
    else:
        table[job_type] = model
    in_force = _registered.get(job_type) or _defaults.get(job_type)
    if in_force is None:
        _models.pop(job_type, None)
    else:
        _models[job_type] = in_force


def payload_model(job_type: str) -> PayloadModel | None:
    """The model `job_type`'s payloads are checked against here, if any."""
    return _models.get(job_type)


def validate_payload(job_type: str, payload: Any) -> dict[str, Any]:
    """The JSON object to store for `payload`: a dict, checked against the type's model
    (and stored as given), or a model instance (stored as its JSON dump)."""
    model = _models.get(job_type)
    if isinstance(payload, dict):
        if model is not None:
            model.validate(job_type, payload)
        return payload
    if payload_models.is_model_instance(payload):
        try:
            own = payload_models.model_of(type(payload))
        except TypeError as exc:
            raise InvalidPayload(f"payload of {job_type}: {exc}") from None
        try:
            data = own.dump(payload)
        except Exception as exc:  # pydantic's serializer, on a value it cannot write
            reason = " ".join(str(exc).split())
            raise InvalidPayload(f"payload of {job_type}: cannot write its "
                                 f"{type(payload).__name__} as JSON: {reason}") from None
        # The type's model is what the handler will be given; an instance of no
        # registered type is at least checked against its own class (a dataclass
        # checks nothing when it is made).
        (model or own).validate(job_type, data)
        return data
    raise InvalidPayload(
        f"payload of {job_type} must be a JSON object, not {_json_kind(payload)}"
    )


def parse_payload(job_type: str, payload: Any) -> Any:
    """A stored payload as the type's model takes it: the model instance, or the JSON
    object itself for a type without a model; InvalidPayload names the field."""
    if not isinstance(payload, dict):
        raise InvalidPayload(
            f"payload of {job_type} must be a JSON object, not {_json_kind(payload)}"
        )
    model = _models.get(job_type)
    return payload if model is None else model.validate(job_type, payload)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string" if value.strip() else "an empty string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
