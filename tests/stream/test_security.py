"""The worker against a secured broker: SASL_SSL (SCRAM-SHA-512, a throwaway CA) and ACLs.

A broker of its own for this module (``deploy.kafka.BrokerSecurity``): the admin is a
super user; the worker's user gets exactly the ACLs the README lists.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import WorkerProcess, event_record, make_events, write_config
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ResourcePattern,
    ResourceType,
)

from deploy.kafka import BrokerSecurity, LocalKafka
from schemas.settings import Settings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WORKER_PASSWORD = "w0rker-Pa55-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def secured() -> Iterator[LocalKafka]:
    security = BrokerSecurity(users={"worker": WORKER_PASSWORD})
    with LocalKafka(security=security) as broker:
        yield broker


def client(broker: LocalKafka, user: str, password: str) -> dict[str, Any]:
    kwargs = broker.client_settings(user, password)
    kwargs["bootstrap_servers"] = [kwargs["bootstrap_servers"]]
    return kwargs


def settings_for(
    broker: LocalKafka, tmp_path: Path, run: str, password: str = WORKER_PASSWORD
) -> Settings:
    return Settings.load(
        environ={},
        kafka={**broker.client_settings("worker", password), "client_id": f"sec-{run}"},
        topics={
            "events": f"sec-{run}.events",
            "user_vectors": f"sec-{run}.user-vectors",
            "item_vectors": f"sec-{run}.item-vectors",
            "dead_letters": f"sec-{run}.dead-letters",
            "partitions": 1,
        },
        consumer={"group_id": f"sec-{run}"},
        checkpoint={"dir": str(tmp_path / "checkpoints")},
        batch={"max_events": 50, "max_wait_s": 0.3},
        learner={"kind": "river-mf"},
        metrics={"enabled": False},
    )


def prepare(broker: LocalKafka, settings: Settings, grant_group: bool = True) -> None:
    """As the admin: create the topics, grant the worker's user what it needs."""
    t = settings.topics
    admin = KafkaAdminClient(**client(broker, "admin", "admin-secret"))
    try:
        outputs = [t.user_vectors, t.item_vectors, t.dead_letters]
        admin.create_topics(
            {name: {"num_partitions": 1, "replication_factor": 1} for name in [t.events, *outputs]}
        )
        grants = [(ResourceType.TOPIC, t.events, op) for op in ("READ", "DESCRIBE")]
        grants += [(ResourceType.TOPIC, o, op) for o in outputs for op in ("WRITE", "DESCRIBE")]
        if grant_group:
            grants.append((ResourceType.GROUP, settings.consumer.group_id, "READ"))
        admin.create_acls(
            [
                ACL(
                    principal="User:worker",
                    host="*",
                    operation=ACLOperation[op],
                    permission_type=ACLPermissionType.ALLOW,
                    resource_pattern=ResourcePattern(kind, name, ACLResourcePatternType.LITERAL),
                )
                for kind, name, op in grants
            ]
        )
    finally:
        admin.close()
    producer = KafkaProducer(**client(broker, "admin", "admin-secret"), acks="all")
    for event in make_events(200, n_users=10):
        key, value = event_record(event)
        producer.send(t.events, key=key, value=value)
    producer.flush()
    producer.close()


def vectors_written(broker: LocalKafka, topic: str) -> int:
    consumer = KafkaConsumer(**client(broker, "admin", "admin-secret"))
    try:
        tp = TopicPartition(topic, 0)
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


def test_the_worker_runs_over_sasl_ssl_with_only_its_acls_and_never_logs_its_password(
    secured: LocalKafka, tmp_path: Path
) -> None:
    settings = settings_for(secured, tmp_path, uuid.uuid4().hex[:8])
    prepare(secured, settings)
    config = write_config(tmp_path / "worker.toml", settings)
    worker = WorkerProcess(config, tmp_path / "worker.log", "-v", "--debug-kafka")
    try:
        worker.wait_for(
            lambda: vectors_written(secured, settings.topics.user_vectors) >= 10,
            120,
            "user vectors on the secured broker",
        )
    finally:
        code = worker.stop(signal.SIGTERM)
    log = worker.log.read_text()
    assert code == 0, worker.tail()
    assert "sasl_plain_password" in log, "the client's debug line with its settings is there"
    assert WORKER_PASSWORD not in log, "but the password in it is redacted"


def test_a_wrong_password_is_a_clear_error_not_a_crash_loop(
    secured: LocalKafka, tmp_path: Path
) -> None:
    settings = settings_for(secured, tmp_path, uuid.uuid4().hex[:8], password="wrong-one")
    config = write_config(tmp_path / "worker.toml", settings)
    started = time.monotonic()
    worker = WorkerProcess(config, tmp_path / "worker.log")
    code = worker.proc.wait(120)
    assert code == 2, worker.tail()
    assert "the credentials of user 'worker'" in worker.tail()
    assert "wrong-one" not in worker.log.read_text()
    assert time.monotonic() - started < 120


def test_a_missing_acl_is_a_clear_error_naming_what_to_grant(
    secured: LocalKafka, tmp_path: Path
) -> None:
    settings = settings_for(secured, tmp_path, uuid.uuid4().hex[:8])
    prepare(secured, settings, grant_group=False)
    config = write_config(tmp_path / "worker.toml", settings)
    worker = WorkerProcess(config, tmp_path / "worker.log")
    code = worker.proc.wait(120)
    assert code == 2, worker.tail()
    assert "GroupAuthorizationFailed" in worker.tail()
    assert f"on consumer group {settings.consumer.group_id!r}" in worker.tail()
    assert "Traceback" not in worker.log.read_text()
