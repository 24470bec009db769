"""What happens to a record that cannot be learned: pluggable error policies."""

from __future__ import annotations

from typing import Protocol

from stream.decode import Rejection
from stream.publisher import Publisher

__all__ = ["DeadLetterPolicy", "ErrorPolicy", "InvalidRecord", "StopPolicy"]


class InvalidRecord(RuntimeError):
    """Raised by :class:`StopPolicy` on the first record that fails validation."""


class ErrorPolicy(Protocol):
    """What happens to a record that cannot be learned."""

    def on_rejected(self, rejection: Rejection, publisher: Publisher) -> None: ...


class DeadLetterPolicy:
    """Send it to the dead-letter topic and go on (the default)."""

    def on_rejected(self, rejection: Rejection, publisher: Publisher) -> None:
        publisher.dead_letter(rejection)


class StopPolicy:
    """Stop the worker on the first bad record, without committing it (for development)."""

    def on_rejected(self, rejection: Rejection, publisher: Publisher) -> None:
        r = rejection.record
        raise InvalidRecord(
            f"{r.topic}[{r.partition}]@{r.offset}: {rejection.code.value}: {rejection.reason}"
        )
