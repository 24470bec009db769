"""The local Apache Kafka broker (KRaft) used by tests, the CLI and the demo."""

from deploy.kafka.broker import (
    BrokerSecurity,
    KafkaSetupError,
    LocalKafka,
    broker_classpath,
    fetch_jars,
    kafka_version,
)

__all__ = [
    "BrokerSecurity",
    "KafkaSetupError",
    "LocalKafka",
    "broker_classpath",
    "fetch_jars",
    "kafka_version",
]
