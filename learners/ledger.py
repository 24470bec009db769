"""Per-event accounting: how many events a learner's state reflects, and which.

The fingerprint is the sum, modulo 2**64, of a 64-bit hash of every event id
learned. It is order-independent and bounded (16 bytes), so a test can check
that a state restored from a checkpoint plus the events re-applied after it
reflects every event of a stream exactly once:

>>> ledger = EventLedger()
>>> ledger.record(["e1", "e2"])
>>> other = EventLedger()
>>> other.record(["e2"]); other.record(["e1"])
>>> ledger == other, ledger.count
(True, 2)
>>> EventLedger.expected(["e1", "e2"]) == ledger
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["EventLedger", "event_hash"]

_MASK = (1 << 64) - 1


def event_hash(event_id: str) -> int:
    """A stable unsigned 64-bit hash of an event id (BLAKE2b, 8 bytes)."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


@dataclass
class EventLedger:
    """Count and order-independent fingerprint of the events learned."""

    count: int = 0
    fingerprint: int = 0

    def record(self, event_ids: Iterable[str]) -> None:
        total, n = self.fingerprint, 0
        for event_id in event_ids:
            total += event_hash(event_id)
            n += 1
        self.fingerprint = total & _MASK
        self.count += n

    @classmethod
    def expected(cls, event_ids: Iterable[str]) -> EventLedger:
        """The ledger of a state that learned each of ``event_ids`` exactly once."""
        ledger = cls()
        ledger.record(event_ids)
        return ledger

    def to_json(self) -> dict[str, Any]:
        return {"count": self.count, "fingerprint": f"{self.fingerprint:016x}"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventLedger:
        return cls(count=int(data["count"]), fingerprint=int(data["fingerprint"], 16))
