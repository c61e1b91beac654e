"""Payload models: the dataclass or pydantic model a job type's payload must fit.

`model_of(cls)` turns a model class into a `PayloadModel`: `validate(job_type,
data)` gives the model instance for a JSON object, or raises `InvalidPayload`
with one line that names the field; `dump(instance)` gives the JSON object that
is stored. queue_core/payloads.py keeps which type has which model.

A pydantic model (v2; `BaseModel` or a pydantic dataclass) is validated by
pydantic itself; its first error becomes the line. pydantic is never imported
here: a class of it exists only once the application imported it.

A plain dataclass is checked here, for the JSON types only (this is not a
second pydantic):

- `str`, `int` (not a boolean), `float` (an integer is accepted, made a float),
  `bool`, `None`, `Any`/`object`, `list`/`list[X]`, `tuple[X, ...]`, `dict`/
  `dict[str, X]`, `X | None`, `X | Y` (the first that fits), `Literal[...]`, and
  nested dataclasses;
- `Annotated[T, check, ...]`: each callable `check(value)` runs after the type
  check, a ValueError it raises is the field's error (what it returns is
  ignored, so the stored JSON stays as given); `Annotated[str, NonEmpty]` is a
  string that is not blank;
- a field without a default is required; `__post_init__` may check several
  fields together: `raise FieldError("field", "why")` names a field, a plain
  ValueError is the payload's as a whole.

Fields the dataclass does not declare are ignored (and stay in the stored row),
as pydantic does by default: a producer deployed before its workers, with a new
optional field, does not have its jobs failed for good by the older workers. An
annotation outside the list above is refused when the model is registered,
never at the first job.
"""

from __future__ import annotations

import abc
import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union

from skiplock.queue_core.errors import InvalidPayload

__all__ = ["FieldError", "NonEmpty", "PayloadModel", "is_model_instance", "model_of"]


class NonEmpty:
    """`Annotated[str, NonEmpty]`: a string with something in it besides blanks."""


class FieldError(ValueError):
    """Raised by a dataclass payload's `__post_init__`: `field` is wrong, because `reason`."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


class PayloadModel(abc.ABC):
    """A model class, as skiplock validates and stores its payloads: a pydantic model
    (`_PydanticModel`) or a dataclass (`_DataclassModel`)."""

    cls: type

    @abc.abstractmethod
    def validate(self, job_type: str, data: Any) -> Any:
        """The model instance for `data` (a JSON object); InvalidPayload, one line, if it
        does not fit."""

    @abc.abstractmethod
    def dump(self, instance: Any) -> dict[str, Any]:
        """The JSON object stored for `instance`."""


_models: dict[type, PayloadModel] = {}


def model_of(cls: Any) -> PayloadModel:
    """The `PayloadModel` of a dataclass or pydantic model class; TypeError for anything
    else, or for a dataclass field whose type cannot be checked."""
    found = _models.get(cls) if isinstance(cls, type) else None
    if found is not None:
        return found
    if not isinstance(cls, type):
        raise TypeError(f"a payload model must be a dataclass or a pydantic model class, "
                        f"not {cls!r}")
    if _is_pydantic(cls):
        model: PayloadModel = _PydanticModel(cls)
        _models[cls] = model
        return model
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"payload model {cls.__qualname__} is neither a dataclass nor a "
                        "pydantic model")
    dc = _DataclassModel(cls)
    _models[cls] = dc  # before its fields: a dataclass may nest itself
    try:
        dc.compile()
    except BaseException:
        del _models[cls]
        raise
    return dc


def is_model_instance(value: Any) -> bool:
    """Whether `value` is an instance of a dataclass or of a pydantic model."""
    cls = type(value)
    return (dataclasses.is_dataclass(value) and not isinstance(value, type)) or _is_pydantic(cls)


def _is_pydantic(cls: type) -> bool:
    pydantic = sys.modules.get("pydantic")
    if pydantic is None:  # nothing can be one of its classes
        return False
    return issubclass(cls, pydantic.BaseModel) or bool(
        pydantic.dataclasses.is_pydantic_dataclass(cls))


# -- pydantic --------------------------------------------------------------------------


class _PydanticModel(PayloadModel):
    def __init__(self, cls: type) -> None:
        import pydantic

        self.cls = cls
        self._pydantic = pydantic
        self._adapter: Any = pydantic.TypeAdapter(cls)

    def validate(self, job_type: str, data: Any) -> Any:
        try:
            return self._adapter.validate_python(data)
        except self._pydantic.ValidationError as exc:
            raise InvalidPayload(_pydantic_line(job_type, exc)) from None
        except Exception as exc:  # a validator that raised what pydantic does not catch
            raise _unchecked(job_type, exc) from None

    def dump(self, instance: Any) -> dict[str, Any]:
        # By alias: pydantic validates by alias, so what is stored validates again.
        dumped = self._adapter.dump_python(instance, mode="json", by_alias=True)
        return typing.cast(dict[str, Any], dumped)


def _pydantic_line(job_type: str, exc: Any) -> str:
    errors = exc.errors(include_url=False, include_context=False)
    if not errors:
        return f"payload of {job_type} is wrong: {_one_line(str(exc))}"
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    path = _path(first.get("loc", ()))
    kind = first.get("type")
    message = _one_line(str(first.get("msg", "invalid"))).removeprefix("Value error, ")
    if message[:2].istitle():  # "Input should be ...", not an acronym: mid-sentence here
        message = message[0].lower() + message[1:]
    if not path:
        return f"payload of {job_type} is wrong: {message}{more}"
    if kind == "missing":
        return f"payload of {job_type} is missing field {path!r}{more}"
    if kind == "extra_forbidden":
        return f"payload of {job_type} has unknown field {path!r}{more}"
    given = first.get("input")
    shown = "" if isinstance(given, (dict, list)) else f" (got {_describe(given)})"
    return f"field {path!r} of {job_type} is wrong: {message}{shown}{more}"


def _unchecked(job_type: str, exc: Exception) -> InvalidPayload:
    # The model's own code failed on this payload: in a worker, an error that a
    # retry would meet again, so the job fails at once (and can be retried by hand
    # once the model is fixed).
    return InvalidPayload(f"payload of {job_type} could not be checked: "
                          f"{type(exc).__name__}: {_one_line(str(exc))}")


def _path(loc: Any) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# -- dataclasses -----------------------------------------------------------------------


class _Wrong(Exception):
    """A value that does not fit: `text` follows "field 'path' of TYPE"."""

    def __init__(self, path: str, text: str) -> None:
        super().__init__(text)
        self.path = path
        self.text = text


class _Missing(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


# A check takes the value and its path, and gives the value the instance holds.
_Check = Callable[[Any, str], Any]


class _Field(typing.NamedTuple):
    name: str
    check: _Check
    required: bool


class _DataclassModel(PayloadModel):
    def __init__(self, cls: type) -> None:
        self.cls = cls
        self.fields: tuple[_Field, ...] = ()

    def compile(self) -> None:
        try:
            hints = typing.get_type_hints(self.cls, include_extras=True)
        except NameError as exc:  # an annotation naming what the module does not define
            raise TypeError(f"payload model {self.cls.__qualname__}: cannot resolve its "
                            f"annotations ({exc})") from None
        compiled = []
        for spec in dataclasses.fields(self.cls):
            if not spec.init:
                continue
            try:
                check = _compile(hints.get(spec.name, Any))
            except TypeError as exc:
                raise TypeError(f"payload model {self.cls.__qualname__}, field "
                                f"{spec.name!r}: {exc}") from None
            required = (spec.default is dataclasses.MISSING
                        and spec.default_factory is dataclasses.MISSING)
            compiled.append(_Field(spec.name, check, required))
        self.fields = tuple(compiled)

    def validate(self, job_type: str, data: Any) -> Any:
        try:
            return self.build(data, "")
        except _Missing as exc:
            raise InvalidPayload(f"payload of {job_type} is missing field {exc.path!r}") from None
        except _Wrong as exc:
            if not exc.path:
                raise InvalidPayload(f"payload of {job_type} {exc.text}") from None
            raise InvalidPayload(f"field {exc.path!r} of {job_type} {exc.text}") from None
        except RecursionError:
            raise InvalidPayload(f"payload of {job_type} is nested too deeply") from None
        except Exception as exc:  # a check or __post_init__ that raised other than ValueError
            raise _unchecked(job_type, exc) from None

    def build(self, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            wanted = "an object" if path else "a JSON object"
            raise _Wrong(path, f"must be {wanted}, not {_describe(data)}")
        values = {}
        for name, check, required in self.fields:  # plain tuples: a backfill builds millions
            if name in data:
                values[name] = check(data[name], f"{path}.{name}" if path else name)
            elif required:
                raise _Missing(f"{path}.{name}" if path else name)
        try:
            return self.cls(**values)
        except FieldError as exc:
            where = f"{path}.{exc.field}" if path else exc.field
            raise _Wrong(where, f"is wrong: {_one_line(exc.reason)}") from None
        except ValueError as exc:
            raise _Wrong(path, f"is wrong: {_one_line(str(exc))}") from None

    def dump(self, instance: Any) -> dict[str, Any]:
        return typing.cast(dict[str, Any], _dump(instance))


def _dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _dump(getattr(value, f.name))
                for f in dataclasses.fields(value) if f.init}
    if isinstance(value, (list, tuple)):
        return [_dump(item) for item in value]
    if isinstance(value, dict):
        return {key: _dump(item) for key, item in value.items()}
    return value


def _compile(hint: Any) -> _Check:
    """The check of one annotation; TypeError for one it cannot check."""
    check, _ = _compile_described(hint)
    return check


def _compile_described(hint: Any) -> tuple[_Check, str]:
    """The check, and what it wants in words ("an integer")."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any or hint is object:
        return (lambda value, path: value), "anything"
    if origin is typing.Annotated:
        return _annotated(args[0], args[1:])
    if hint is None or hint is type(None):
        return _scalar(lambda v: v is None, "null"), "null"
    if hint is str:
        return _scalar(lambda v: isinstance(v, str), "a string"), "a string"
    if hint is bool:
        return _scalar(lambda v: isinstance(v, bool), "a boolean"), "a boolean"
    if hint is int:
        return _scalar(lambda v: isinstance(v, int) and not isinstance(v, bool),
                       "an integer"), "an integer"
    if hint is float:
        def number(value: Any, path: str) -> Any:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _Wrong(path, f"must be a number, not {_describe(value)}")
            return float(value)
        return number, "a number"
    if hint is list or hint is tuple or origin in (list, tuple):
        return _array(hint, origin or hint, args), "an array"
    if hint is dict or origin is dict:
        return _object(args), "an object"
    if origin is Literal:
        return _literal(args), "one of " + ", ".join(_literal_text(a) for a in args)
    if origin in (Union, types.UnionType):
        return _union(args)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        nested = model_of(hint)
        if not isinstance(nested, _DataclassModel):  # a pydantic dataclass inside a plain one
            raise TypeError(f"{hint.__qualname__} is a pydantic dataclass: make the outer "
                            "model a pydantic one too")
        return nested.build, "an object"
    name = hint.__qualname__ if isinstance(hint, type) else repr(hint)
    raise TypeError(f"{name} is not a type a dataclass payload can check (str, int, float, "
                    "bool, list, dict, Optional, Literal, nested dataclasses; a pydantic "
                    "model checks more)")


def _scalar(fits: Callable[[Any], bool], wanted: str) -> _Check:
    def check(value: Any, path: str) -> Any:
        if not fits(value):
            raise _Wrong(path, f"must be {wanted}, not {_describe(value)}")
        return value
    return check


def _annotated(base: Any, metadata: tuple[Any, ...]) -> tuple[_Check, str]:
    inner, wanted = _compile_described(base)
    non_empty = any(meta is NonEmpty for meta in metadata)
    checks = []
    for meta in metadata:
        if meta is NonEmpty:
            if base is not str:
                raise TypeError("NonEmpty goes with str")
        elif callable(meta):
            checks.append(meta)
        else:
            raise TypeError(f"{meta!r} in Annotated is not a check a dataclass payload runs "
                            "(a callable, or NonEmpty; a pydantic model runs more)")
    if non_empty:
        wanted = "a non-empty string"

    def check(value: Any, path: str) -> Any:
        if non_empty:
            if not isinstance(value, str) or not value.strip():
                raise _Wrong(path, f"must be a non-empty string, not {_describe(value)}")
        else:
            value = inner(value, path)
        for run in checks:
            try:
                run(value)
            except ValueError as exc:
                raise _Wrong(path, f"is wrong: {_one_line(str(exc))}") from None
        return value

    return check, wanted


def _array(hint: Any, container: type, args: tuple[Any, ...]) -> _Check:
    if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        raise TypeError(f"{hint!r}: only tuple[X, ...] (an array of X) is checked")
    item = _compile(args[0]) if args else None

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, (list, tuple)):
            raise _Wrong(path, f"must be an array, not {_describe(value)}")
        checked = value if item is None else [
            item(element, f"{path}[{i}]") for i, element in enumerate(value)]
        return tuple(checked) if container is tuple else list(checked)

    return check


def _object(args: tuple[Any, ...]) -> _Check:
    if args and args[0] is not str:
        raise TypeError("the keys of a JSON object are strings: dict[str, X]")
    item = _compile(args[1]) if args else None

    def check(value: Any, path: str) -> Any:
        if not isinstance(value, dict):
            raise _Wrong(path, f"must be an object, not {_describe(value)}")
        if item is None:
            return value
        return {key: item(element, f"{path}.{key}") for key, element in value.items()}

    return check


def _literal(choices: tuple[Any, ...]) -> _Check:
    listed = ", ".join(_literal_text(choice) for choice in choices)

    def check(value: Any, path: str) -> Any:
        # By type as well: True == 1, and Literal[1] is no boolean.
        if not any(value == choice and type(value) is type(choice) for choice in choices):
            raise _Wrong(path, f"must be one of {listed}, not {_describe(value)}")
        return value

    return check


def _literal_text(choice: Any) -> str:
    return choice if isinstance(choice, str) else _describe(choice)


def _union(arms: tuple[Any, ...]) -> tuple[_Check, str]:
    nullable = type(None) in arms
    described = [_compile_described(arm) for arm in arms if arm is not type(None)]
    wanted = " or ".join(text for _, text in described) + (" or null" if nullable else "")
    if len(described) == 1:
        only = described[0][0]

        def optional(value: Any, path: str) -> Any:
            # The arm's own error: "must be a non-empty string", not a list of arms.
            return None if value is None and nullable else only(value, path)

        return optional, wanted
    checks = [check for check, _ in described]

    def check(value: Any, path: str) -> Any:
        if value is None and nullable:
            return None
        for arm in checks:
            try:
                return arm(value, path)
            except (_Wrong, _Missing):
                continue
        raise _Wrong(path, f"must be {wanted}, not {_describe(value)}")

    return check, wanted


def _describe(value: Any) -> str:
    """A value as an error shows it: short, one line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else "a number"
    if isinstance(value, str):
        if not value:
            return "an empty string"
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "…"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split()) or "invalid"
