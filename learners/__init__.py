"""Everything that learns. Knows nothing about Kafka: the stream worker talks to a
learner only through :class:`learners.base.Learner`."""

from learners.base import Learner, LearnReport, VectorBatch
from learners.ledger import EventLedger
from learners.registry import build_learner

__all__ = ["EventLedger", "LearnReport", "Learner", "VectorBatch", "build_learner"]
