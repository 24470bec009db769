"""Interaction events: what users did, as producers put it on the wire.

One JSON object per Kafka record, UTF-8, validated strictly: unknown fields,
oversize strings, NaN/inf, impossible ratings and timestamps far in the future
are rejected with a message that says which field and why.

>>> event = InteractionEvent.model_validate_json(
...     '{"event_id": "e-1", "user_id": "u-7", "item_id": "i-3", "event_type": "rating",'
...     ' "value": 4.5, "timestamp": "2026-01-02T03:04:05Z",'
...     ' "item": {"title": "Alien (1979)", "categories": ["Horror", "Sci-Fi"]}}'
... )
>>> event.event_type, event.value, event.item.text()
(<EventType.RATING: 'rating'>, 4.5, 'Alien (1979) | Horror, Sci-Fi')
>>> InteractionEvent.model_validate_json(
...     '{"event_id": "e-2", "user_id": "u", "item_id": "i", "event_type": "rating",'
...     ' "value": 9, "timestamp": "2026-01-02T03:04:05Z"}'
... )  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for InteractionEvent
  Value error, a rating must be between 1 and 5, got 9.0 ...
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Final

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "FUTURE_TOLERANCE",
    "MAX_CONTEXT_ENTRIES",
    "EventType",
    "InteractionEvent",
    "ItemText",
]

#: How far past the consumer's clock an event's timestamp may lie. Clocks drift;
#: a day ahead is a bug in the producer, not drift.
FUTURE_TOLERANCE: Final = timedelta(minutes=10)
MAX_CONTEXT_ENTRIES: Final = 16

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
]
ShortText = Annotated[str, StringConstraints(max_length=300)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ContextKey = Annotated[str, StringConstraints(min_length=1, max_length=64)]
ContextValue = Annotated[str, StringConstraints(max_length=256)] | int | float | bool

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, str_strip_whitespace=False)


class EventType(StrEnum):
    """What the user did. Order of strength for implicit feedback:
    purchase > add_to_cart > click > view > impression."""

    IMPRESSION = "impression"
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RATING = "rating"
    REVIEW = "review"
    SKIP = "skip"
    DISLIKE = "dislike"

    @property
    def is_negative(self) -> bool:
        """Explicit negative feedback (a skip or a dislike)."""
        return self in (EventType.SKIP, EventType.DISLIKE)


class ItemText(BaseModel):
    """The text a producer knows about the item: what the item tower reads."""

    model_config = _STRICT

    title: ShortText | None = None
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    categories: list[Category] = Field(default_factory=list, max_length=16)

    def text(self) -> str:
        """One line: title | categories | description (the parts that are present)."""
        parts = [self.title or "", ", ".join(self.categories), self.description or ""]
        return " | ".join(p for p in parts if p)


class InteractionEvent(BaseModel):
    """One thing one user did to one item, at one time.

    ``event_id`` is unique per event; the worker drops an id it has already
    learned (within a bounded window), so producers may retry safely.
    ``value`` is the rating (1-5) for ``rating`` events, dwell seconds for
    ``view``, and optional otherwise. ``review`` events carry ``review_text``;
    a ``rating`` may carry one too.
    """

    model_config = _STRICT

    event_id: Identifier
    user_id: Identifier
    item_id: Identifier
    event_type: EventType
    timestamp: AwareDatetime
    value: float | None = None
    review_text: LongText | None = None
    item: ItemText | None = None
    context: dict[ContextKey, ContextValue] = Field(
        default_factory=dict, max_length=MAX_CONTEXT_ENTRIES
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # allow_inf_nan covers JSON's NaN/Infinity literals; this covers huge ints.
        if value is not None and not math.isfinite(value):
            raise ValueError("value must be a finite number")
        return value

    @field_validator("timestamp")
    @classmethod
    def _not_far_future(cls, timestamp: datetime) -> datetime:
        latest = datetime.now(UTC) + FUTURE_TOLERANCE
        if timestamp > latest:
            raise ValueError(
                f"timestamp {timestamp.isoformat()} is more than {FUTURE_TOLERANCE} in the future;"
                " check the producer's clock and time zone"
            )
        return timestamp

    @model_validator(mode="after")
    def _value_fits_type(self) -> InteractionEvent:
        kind, value = self.event_type, self.value
        if kind is EventType.RATING:
            if value is None:
                raise ValueError("a rating event needs a value between 1 and 5")
            if not 1.0 <= value <= 5.0:
                raise ValueError(f"a rating must be between 1 and 5, got {value}")
        elif value is not None and value < 0:
            raise ValueError(f"value must not be negative for {kind.value} events, got {value}")
        if kind is EventType.REVIEW and not self.review_text:
            raise ValueError("a review event needs review_text")
        return self

    @property
    def item_text(self) -> str:
        """The item's text, or its id when the producer sent none."""
        return self.item.text() if self.item is not None else self.item_id
