"""The local Apache Kafka broker starts, serves, and leaves no JVM behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka


def jvm_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"kafka.Kafka" in f.read()
    except OSError:
        return False


def test_broker_is_stopped_when_its_python_parent_is_killed() -> None:
    """kill -9 of the process that started the broker must not orphan the JVM."""
    script = textwrap.dedent("""
        import sys, time
        from deploy.kafka import LocalKafka
        k = LocalKafka()
        k.start()
        print(k._proc.pid, flush=True)
        time.sleep(600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    jvm_pid = int(parent.stdout.readline())
    assert jvm_alive(jvm_pid)
    parent.kill()
    parent.wait()
    import time

    deadline = time.monotonic() + 30
    while jvm_alive(jvm_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not jvm_alive(jvm_pid)


def test_context_manager_serves_metadata_and_cleans_up() -> None:
    from kafka import KafkaAdminClient

    from deploy.kafka import LocalKafka

    with LocalKafka() as broker:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        admin.create_topics({"probe": {"num_partitions": 1, "replication_factor": 1}})
        assert "probe" in admin.list_topics()
        admin.close()
        workdir, pid = broker.workdir, broker._proc.pid if broker._proc else 0
    assert not workdir.exists()
    assert not jvm_alive(pid)


def test_a_broker_with_a_data_dir_restarts_on_its_data_at_the_same_address(
    tmp_path: Path,
) -> None:
    """What `lorastream kafka --data-dir D` relies on: the same cluster id, port, topics and
    records after a restart (a fresh cluster id every start made the old data unusable)."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

    from deploy.kafka import LocalKafka

    broker = LocalKafka(workdir=tmp_path)
    broker.start()
    try:
        address = broker.bootstrap_servers
        admin = KafkaAdminClient(bootstrap_servers=address)
        admin.create_topics({"kept": {"num_partitions": 1, "replication_factor": 1}})
        admin.close()
        producer = KafkaProducer(bootstrap_servers=address, acks="all")
        for k in range(5):
            producer.send("kept", value=f"r{k}".encode())
        producer.flush()
        producer.close()
        cluster_id = (tmp_path / "cluster.id").read_text()
        broker.restart()
        assert broker.bootstrap_servers == address
        assert (tmp_path / "cluster.id").read_text() == cluster_id
        consumer = KafkaConsumer(bootstrap_servers=address, enable_auto_commit=False)
        tp = TopicPartition("kept", 0)
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        values = [r.value for recs in consumer.poll(timeout_ms=5000).values() for r in recs]
        consumer.close()
        assert values == [f"r{k}".encode() for k in range(5)]
    finally:
        broker.stop()
    assert tmp_path.exists(), "a given data directory is kept"
