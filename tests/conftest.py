"""Session-wide real services for the tests.

``kafka_bootstrap`` starts one real Apache Kafka broker (KRaft) for the whole
session from deploy/kafka/, unless ``KAFKA_BOOTSTRAP_SERVERS`` points at an
existing cluster. Every test that uses Kafka gets uuid-named topics and groups.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from schemas.settings import Settings

# as the lorastream command sets it: workers the tests fork start without tokenizer threads
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability",
        choices=("reduced", "full"),
        default="reduced",
        help="scale of the fault-injection suite (tests/reliability); full writes"
        " benchmarks/results/reliability.json",
    )


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    existing = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if existing:
        yield existing
        return
    from deploy.kafka import LocalKafka

    with LocalKafka() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def make_settings(kafka_bootstrap: str, tmp_path: Any) -> Callable[..., Settings]:
    """Settings for one test: its own topics, group and checkpoint directory (the same
    for every call within the test), the River learner unless a test names another, and
    no environment."""
    run_id = uuid.uuid4().hex[:10]

    def make(**sections: dict[str, Any]) -> Settings:
        checkpoint = {"dir": str(tmp_path / "checkpoints"), **sections.pop("checkpoint", {})}
        sections = {"learner": {"kind": "river-mf"}, "checkpoint": checkpoint, **sections}
        return Settings.isolated("t", kafka_bootstrap, tmp_path, {}, run_id, **sections)

    return make
