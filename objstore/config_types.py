"""The value types shared by objstore's settings models: durations, whole numbers, masked URLs, and the base
of every section (unknown keys are errors; inputs never echoed in messages)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from objstore.durations import format_duration, to_timedelta
from objstore.urls import mask_password

__all__ = ["DatabaseUrl", "Duration", "Section", "WholeNumber"]


def _duration(value: object) -> timedelta:
    return to_timedelta(value)


def _whole_number(value: object) -> object:
    # pydantic's lax mode would take `true` as 1.
    if isinstance(value, bool):
        raise ValueError("expected a whole number, not true/false")
    return value


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str, when_used="json")
]
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


# A database URL may carry a password: masked in reprs and JSON dumps.
DatabaseUrl = Annotated[str, PlainSerializer(mask_password, return_type=str, when_used="json")]


class Section(BaseModel):
    """A section (or a list item) of objstore's settings: unknown keys are errors."""

    # hide_input_in_errors: pydantic's own messages must never echo a key; revalidate_instances: a section
    # passed in as an instance is copied, so resolving its relative paths never changes the caller's object.
    model_config = ConfigDict(
        extra="forbid", hide_input_in_errors=True, validate_default=True, revalidate_instances="always"
    )
