"""Learner configurations: validated, frozen, saved beside every checkpoint.

They live in ``schemas`` because the process settings embed them; the learners
read them and write them next to their state, so a checkpoint says how it was made.

>>> RiverMFConfig(n_factors=8).n_factors
8
>>> RiverMFConfig(n_factors=0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for RiverMFConfig
n_factors
  Input should be greater than or equal to 1 ...
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["DEFAULT_IMPLICIT_TARGETS", "RiverMFConfig"]

_CONFIG = ConfigDict(extra="forbid", frozen=True)

#: Regression targets (on the 1-5 rating scale) for implicit feedback.
DEFAULT_IMPLICIT_TARGETS: dict[str, float] = {
    "impression": 2.5,
    "view": 3.5,
    "click": 4.0,
    "add_to_cart": 4.5,
    "purchase": 5.0,
    "review": 4.0,
    "skip": 1.5,
    "dislike": 1.0,
}


class RiverMFConfig(BaseModel):
    """River ``BiasedMF`` online matrix factorisation, the baseline learner.

    Explicit ratings are the regression target as given; implicit events map
    to ``implicit_targets``; every positive event also teaches
    ``negative_samples`` random known items as ``negative_target`` so the
    factors learn to rank, not only to predict high values.
    """

    model_config = _CONFIG

    n_factors: int = Field(default=16, ge=1, le=1024)
    learning_rate: float = Field(default=0.05, gt=0)
    l2: float = Field(default=0.002, ge=0)
    init_sigma: float = Field(default=0.1, gt=0)
    implicit_targets: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_IMPLICIT_TARGETS)
    )
    negative_samples: int = Field(default=2, ge=0, le=64)
    negative_target: float = Field(default=1.0)
    max_users: int = Field(default=100_000, ge=1)
    max_items: int = Field(default=200_000, ge=1)
    history_len: int = Field(default=20, ge=1, le=1000)
    seed: int = 0

    @model_validator(mode="after")
    def _targets_known(self) -> RiverMFConfig:
        known = set(DEFAULT_IMPLICIT_TARGETS)
        unknown = set(self.implicit_targets) - known
        if unknown:
            raise ValueError(f"implicit_targets has unknown event types {sorted(unknown)}")
        return self
