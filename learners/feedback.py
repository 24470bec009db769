"""One vocabulary for what an event says about the user's taste, shared by every learner.

:class:`HistoryKind` refines :class:`~schemas.events.EventType`: ratings split by the
rating thresholds (a 5-star and a 1-star rating mean opposite things). :func:`classify`
is the only place that decides what is positive or negative feedback.

>>> from datetime import datetime, UTC
>>> from schemas.events import InteractionEvent
>>> t = datetime(2026, 1, 1, tzinfo=UTC)
>>> e = InteractionEvent(event_id="e", user_id="u", item_id="i", event_type="rating",
...                      value=2.0, timestamp=t)
>>> f = classify(e, positive_rating=3.5, negative_rating=2.0)
>>> f.kind, f.negative, f.positive
(<HistoryKind.RATING_LOW: 'rating_low'>, True, False)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from schemas.events import EventType, InteractionEvent

__all__ = ["HISTORY_KINDS", "Feedback", "HistoryKind", "classify"]


class HistoryKind(StrEnum):
    """An event as a user's history remembers it (code 0 is padding in tensors)."""

    IMPRESSION = "impression"
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    REVIEW = "review"
    RATING_HIGH = "rating_high"
    RATING_MID = "rating_mid"
    RATING_LOW = "rating_low"
    SKIP = "skip"
    DISLIKE = "dislike"

    @property
    def code(self) -> int:
        return HISTORY_KINDS.index(self) + 1

    @property
    def negative(self) -> bool:
        """Explicit negative feedback."""
        return self in (HistoryKind.SKIP, HistoryKind.DISLIKE, HistoryKind.RATING_LOW)


HISTORY_KINDS: tuple[HistoryKind, ...] = tuple(HistoryKind)


@dataclass(frozen=True, slots=True)
class Feedback:
    """What one event says: its kind, and its weight as positive feedback (0: none)."""

    kind: HistoryKind
    weight: float

    @property
    def positive(self) -> bool:
        return self.weight > 0

    @property
    def negative(self) -> bool:
        return self.kind.negative


def classify(
    event: InteractionEvent,
    positive_rating: float = 3.5,
    negative_rating: float = 2.0,
    weights: Mapping[str, float] | None = None,
) -> Feedback:
    """The feedback an event carries. Ratings at or above ``positive_rating`` are positives
    weighted by how far above they are; other event types weigh ``weights[type]`` (default:
    1 for view, click, cart, purchase and review, 0 otherwise)."""
    kind, value = event.event_type, event.value
    if kind is EventType.RATING and value is not None:
        if value >= positive_rating:
            return Feedback(HistoryKind.RATING_HIGH, 1.0 + (value - positive_rating))
        low = value <= negative_rating
        return Feedback(HistoryKind.RATING_LOW if low else HistoryKind.RATING_MID, 0.0)
    history_kind = HistoryKind(kind.value)
    default = 1.0 if kind in _IMPLICIT_POSITIVES else 0.0
    weight = default if weights is None else weights.get(kind.value, 0.0)
    return Feedback(history_kind, weight)


_IMPLICIT_POSITIVES = frozenset(
    {EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.REVIEW}
)
