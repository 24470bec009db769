"""User and item vectors, as the worker produces them.

Both live in one space: a plain dot product of a user vector with an item
vector ranks items for that user (the vectors are L2-normalised by the LLM
learner, with an optional extra coordinate carrying an item's popularity bias).
User vectors are keyed by user id on a compacted topic, so the topic holds the
newest vector of every user.

>>> from datetime import datetime, UTC
>>> v = UserVector(user_id="u-1", vector=[0.6, 0.8], model_version="river-mf:v3",
...                produced_at=datetime(2026, 1, 1, tzinfo=UTC))
>>> v.dim
2
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.events import Identifier

__all__ = [
    "ItemVector",
    "SourcePosition",
    "SparseVector",
    "UserVector",
    "VectorVersion",
    "item_key",
]

_WIRE = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SourcePosition(BaseModel):
    """Where a record came from: topic, partition, offset (and its record timestamp)."""

    model_config = _WIRE

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp_ms: int | None = None


def item_key(item_id: str) -> int:
    """An item's index in sparse vectors: the first 31 bits of BLAKE2b-64 of its id (UTF-8),
    stable across processes and languages; collisions are negligible below millions of items.

    >>> item_key("sku-7")
    1822114719
    """
    digest = hashlib.blake2b(item_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


class SparseVector(BaseModel):
    """Non-zero entries of a vector indexed by item key (:func:`item_key`): a user's
    holds their top items by co-occurrence, an item's its own key with 1.0. The dot
    product of a user's and an item's sparse vectors adds to their dense one."""

    model_config = _WIRE

    indices: list[int] = Field(max_length=100_000)
    values: list[float] = Field(max_length=100_000)

    @model_validator(mode="after")
    def _aligned(self) -> SparseVector:
        if len(self.indices) != len(self.values):
            raise ValueError("indices and values must have the same length")
        if any(not 0 <= i < 2**31 for i in self.indices):
            raise ValueError("indices are item keys in [0, 2**31)")
        if not all(math.isfinite(x) for x in self.values):
            raise ValueError("values must be finite")
        return self


class _Vector(BaseModel):
    model_config = _WIRE

    vector: list[float] = Field(min_length=1, max_length=65536)
    dim: int = Field(default=0, ge=0, description="len(vector); filled in when omitted")
    model_version: str = Field(
        min_length=1, max_length=256, description="learner, model and adapter version"
    )
    produced_at: AwareDatetime

    @model_validator(mode="before")
    @classmethod
    def _fill_dim(cls, data: object) -> object:
        if isinstance(data, dict) and not data.get("dim") and "vector" in data:
            data = {**data, "dim": len(data["vector"])}
        return data

    @model_validator(mode="after")
    def _check_vector(self) -> _Vector:
        if self.dim != len(self.vector):
            raise ValueError(f"dim is {self.dim} but the vector has {len(self.vector)} entries")
        if not all(math.isfinite(x) for x in self.vector):
            raise ValueError("vector entries must be finite")
        return self


class UserVector(_Vector):
    """A user's current vector and the newest event it reflects."""

    user_id: Identifier
    last_event_id: str | None = None
    last_event_at: datetime | None = None
    last_position: SourcePosition | None = Field(
        default=None, description="source topic/partition/offset of the newest event reflected"
    )
    events_seen: int = Field(default=0, ge=0, description="events of this user the model learned")
    sparse: SparseVector | None = Field(
        default=None, description="added to the dense dot product (the user's top kNN items)"
    )
    consumed: list[str] | None = Field(
        default=None,
        max_length=100_000,
        description="items the user consumed, newest first: recommendations exclude them",
    )


class ItemVector(_Vector):
    """An item's current vector (item tower output, in the users' space)."""

    item_id: Identifier
    text: str | None = Field(default=None, max_length=4000)
    sparse: SparseVector | None = Field(
        default=None, description="added to the dense dot product (the item's own key)"
    )


class VectorVersion(BaseModel):
    """Every user and item vector on the topics is of one model version: a serving index
    that rebuilt from the topics can switch to it as a whole. Keyed ``current`` on the
    compacted ``topics.vector_versions``; announced once the worker's refreshes caught up."""

    model_config = _WIRE

    model_version: str = Field(min_length=1, max_length=256)
    users: int = Field(ge=0, description="user vectors published under it")
    items: int = Field(ge=0, description="item vectors published under it")
    complete_at: AwareDatetime
