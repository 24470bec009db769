"""Build the configured learner. Heavy learners are imported only when chosen."""

from __future__ import annotations

from learners.base import Learner
from learners.data_parallel import Shard
from schemas.settings import LearnerSettings

__all__ = ["build_learner"]


def build_learner(settings: LearnerSettings, shard: Shard | None = None) -> Learner:
    """The learner ``settings.kind`` names, configured by its section of the settings (one
    rank of a data-parallel group under ``shard``)."""
    if shard is not None and settings.kind != "llm":
        raise ValueError(
            f"ranks share one LLM learner; learner.kind is {settings.kind!r}: set it to llm"
            " or run one worker"
        )
    if settings.kind == "river-mf":
        from learners.river_mf import RiverMFLearner

        return RiverMFLearner(settings.river_mf)
    if settings.kind == "llm":
        from learners.llm import LLMLearner

        return LLMLearner(settings.llm, shard)
    raise ValueError(f"unknown learner kind {settings.kind!r}")
