"""Build the configured learner. Heavy learners are imported only when chosen."""

from __future__ import annotations

from learners.base import Learner
from schemas.settings import LearnerSettings

__all__ = ["build_learner"]


def build_learner(settings: LearnerSettings) -> Learner:
    """The learner ``settings.kind`` names, configured by its section of the settings."""
    if settings.kind == "river-mf":
        from learners.river_mf import RiverMFLearner

        return RiverMFLearner(settings.river_mf)
    if settings.kind == "llm":
        from learners.llm import LLMLearner

        return LLMLearner(settings.llm)
    raise ValueError(f"unknown learner kind {settings.kind!r}")
