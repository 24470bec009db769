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
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def make_settings(kafka_bootstrap: str, run_id: str, tmp_path: Any) -> Callable[..., Settings]:
    """Settings for one test: its own topics, group and checkpoint directory."""

    def make(**sections: dict[str, Any]) -> Settings:
        base: dict[str, dict[str, Any]] = {
            "kafka": {"bootstrap_servers": kafka_bootstrap, "client_id": f"test-{run_id}"},
            "topics": {
                "events": f"t-{run_id}.events",
                "user_vectors": f"t-{run_id}.user-vectors",
                "item_vectors": f"t-{run_id}.item-vectors",
                "dead_letters": f"t-{run_id}.dead-letters",
            },
            "consumer": {"group_id": f"g-{run_id}"},
            "checkpoint": {"dir": str(tmp_path / "checkpoints")},
            "learner": {"kind": "river-mf"},
            "metrics": {"enabled": False},
        }
        for name, fields in sections.items():
            base[name] = {**base.get(name, {}), **fields}
        return Settings.load(environ={}, **base)

    return make
