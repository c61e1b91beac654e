"""Typed handlers, one with a pydantic model and one with a dataclass.

Loaded by the tests in this process and by `skiplock worker --handlers
tests.applications.typed_handlers`. Each handler returns what it was given:
the class of its payload and a field read as an attribute, so that a test
reads from the job's result that the handler received the model instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from skiplock import JobResult, handler
from skiplock.queue_core.payload_models import FieldError, NonEmpty

RESIZE = "TYPED_RESIZE"
THUMB = "TYPED_THUMB"
PLAIN = "TYPED_PLAIN"


class ResizeArgs(BaseModel):
    url: str
    width: int
    height: int = Field(default=100, gt=0)

    @field_validator("url")
    @classmethod
    def http_only(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value


@dataclass(frozen=True)
class Size:
    width: int
    height: int


@dataclass(frozen=True)
class ThumbArgs:
    path: Annotated[str, NonEmpty]
    size: Size
    format: Literal["png", "jpeg"] = "png"
    tags: list[str] = field(default_factory=list)
    quality: float | None = None

    def __post_init__(self) -> None:
        if self.format == "png" and self.quality is not None:
            raise FieldError("quality", "a png has no quality")


@handler(RESIZE, payload=ResizeArgs)
def resize(payload: ResizeArgs, job_id: str) -> JobResult:
    return JobResult(success=True, data={"model": type(payload).__name__,
                                         "width": payload.width, "height": payload.height})


@handler(THUMB, payload=ThumbArgs)
def thumb(payload: ThumbArgs, job_id: str) -> JobResult:
    return JobResult(success=True, data={"model": type(payload).__name__,
                                         "width": payload.size.width, "format": payload.format})


@handler(PLAIN)
def plain(payload: dict[str, Any], job_id: str) -> JobResult:
    return JobResult(success=True, data={"model": type(payload).__name__})
