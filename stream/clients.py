"""kafka-python clients built from the settings, topic checks, and errors people can act on."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import (
    AuthorizationError,
    CoordinatorNotAvailableError,
    KafkaError,
    KafkaTimeoutError,
    RetriableError,
    TopicAlreadyExistsError,
)

from schemas.settings import Settings
from stream.stall import CallWatch

__all__ = [
    "BrokerUnreachable",
    "MissingTopic",
    "NotAuthorized",
    "PartitionWatch",
    "StreamSetupError",
    "at_high_watermark",
    "await_partitions",
    "broker_contact",
    "close_producer",
    "committed_offsets",
    "ensure_output_topics",
    "group_instance_id",
    "make_admin",
    "make_consumer",
    "make_producer",
    "not_authorized",
    "partition_lag",
    "require_topic",
    "subscribe",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Dead letters carry the original record base64-encoded in JSON: allow records
#: of up to the broker's default 1 MiB limit to fit.
DEAD_LETTER_MAX_BYTES = 8 * 1024 * 1024
BOOTSTRAP_TIMEOUT_MS = 10_000
METADATA_MAX_AGE_MS = 30_000
_TOPIC_AUTHORIZATION_FAILED = 29


class StreamSetupError(RuntimeError):
    """The worker cannot start; the message says what to do."""


class BrokerUnreachable(StreamSetupError):
    pass


class MissingTopic(StreamSetupError):
    pass


class NotAuthorized(StreamSetupError):
    """The broker refuses the worker's credentials or an operation (ACLs)."""


class _BootstrapErrors(logging.Handler):
    """Keeps the reasons kafka-python logs while it retries a bootstrap connection (it does
    not raise them: a wrong password looks like a timeout otherwise)."""

    MARKERS = (
        "AuthenticationFailed",
        "CERTIFICATE_VERIFY_FAILED",
        "SSLError",
        "socket disconnected",
        "ECONNREFUSED",
    )

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.seen.update(m for m in self.MARKERS if m in message)


def _connect(factory: Callable[[], T], settings: Settings) -> T:
    seen, client_log = _BootstrapErrors(), logging.getLogger("kafka")
    client_log.addHandler(seen)
    try:
        return factory()
    except KafkaTimeoutError as exc:
        k = settings.kafka
        check = (
            " check LORASTREAM_KAFKA__SASL_PLAIN_USERNAME / _PASSWORD, the mechanism and"
            " kafka.security_protocol."
        )
        if "AuthenticationFailed" in seen.seen:
            raise NotAuthorized(
                f"Kafka at {k.bootstrap_servers} refused the credentials of user"
                f" {k.sasl_plain_username!r} ({k.sasl_mechanism}):{check}"
            ) from exc
        sasl = k.security_protocol.startswith("SASL")
        if sasl and "socket disconnected" in seen.seen and "ECONNREFUSED" not in seen.seen:
            # the broker may close the connection before the client reads its SASL error
            raise NotAuthorized(
                f"Kafka at {k.bootstrap_servers} closed every connection while checking the"
                f" credentials of user {k.sasl_plain_username!r} ({k.sasl_mechanism}); most"
                f" likely a wrong user name or password:{check}"
            ) from exc
        if seen.seen & {"CERTIFICATE_VERIFY_FAILED", "SSLError"}:
            raise BrokerUnreachable(
                f"the TLS handshake with {k.bootstrap_servers} failed: the broker's certificate"
                f" is not trusted (kafka.ssl_cafile = {k.ssl_cafile!r}) or names another host."
            ) from exc
        raise BrokerUnreachable(
            f"cannot reach Kafka at {k.bootstrap_servers} ({exc}). Check that the"
            " broker runs and the address is right (LORASTREAM_KAFKA__BOOTSTRAP_SERVERS or"
            " KAFKA_BOOTSTRAP_SERVERS), and the security settings (LORASTREAM_KAFKA__*)."
        ) from exc
    finally:
        client_log.removeHandler(seen)


def not_authorized(exc: BaseException, settings: Settings) -> NotAuthorized:
    """What to grant when the broker refuses an operation."""
    t, user = settings.topics, settings.kafka.sasl_plain_username or "(this client)"
    return NotAuthorized(
        f"Kafka refused an operation ({type(exc).__name__}: {exc}). The worker's user {user}"
        f" needs READ and DESCRIBE on topic {t.events!r} and on consumer group"
        f" {settings.consumer.group_id!r}, WRITE and DESCRIBE on {t.user_vectors!r},"
        f" {t.item_vectors!r} and {t.dead_letters!r} (and CREATE if it should create them)."
    )


def make_admin(settings: Settings) -> KafkaAdminClient:
    kwargs = settings.kafka.client_kwargs() | {"bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS}
    return _connect(lambda: KafkaAdminClient(**kwargs), settings)


def make_producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """An idempotent producer (``acks=all``) for vectors and dead letters."""
    kwargs = (
        settings.kafka.client_kwargs()
        | {
            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            "compression_type": None
            if settings.topics.compression == "none"
            else settings.topics.compression,
            "max_request_size": DEAD_LETTER_MAX_BYTES,
            "delivery_timeout_ms": 120_000,
            "allow_auto_create_topics": False,
        }
        | overrides
    )
    return _connect(lambda: KafkaProducer(**kwargs), settings)


def close_producer(producer: KafkaProducer, timeout_s: float, dropped: str = "") -> None:
    """Close ``producer``, waiting at most ``timeout_s`` for what it still holds.

    kafka-python's ``close`` flushes first and raises when the flush times out (the broker
    unreachable at shutdown), leaving its sender thread running and, raised from a cleanup,
    hiding the error the caller was stopping for. Records not delivered by then are dropped
    and said so in the log, with ``dropped`` saying what that means to the caller (a
    worker's records are never covered by a commit: acknowledgement comes before it); the
    sender is then stopped (private, guarded)."""
    try:
        producer.close(timeout_s)
    except KafkaTimeoutError:
        log.warning(
            "the producer still held undelivered records after %.0fs (is the broker up?);"
            " closing it without them%s",
            timeout_s,
            f" — {dropped}" if dropped else "",
        )
        sender = getattr(producer, "_sender", None)
        with contextlib.suppress(Exception):
            sender.force_close()  # type: ignore[union-attr]
            sender.join(timeout_s)  # type: ignore[union-attr]
        producer._closed = True  # its __del__ would try the failing flush again


def group_instance_id(settings: Settings) -> str | None:
    """The static member id: as configured, else client id + host + a hash of the
    checkpoint directory — the same on every restart of one worker (its state lives in
    that directory), different for two workers on one host."""
    c = settings.consumer
    if not c.static_membership:
        return None
    # ranks of one model share the directory: each is its own member, the same on restart
    rank = f"-rank{os.environ['RANK']}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
    if c.group_instance_id:
        return c.group_instance_id + rank
    where = str(settings.checkpoint.dir.resolve()) if settings.checkpoint.dir else "-"
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    return f"{settings.kafka.client_id}-{socket.gethostname()}-{digest}"[:190] + rank


def make_consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    """A group consumer with manual offset management (no auto-commit), a static member."""
    c = settings.consumer
    kwargs = (
        settings.kafka.client_kwargs()
        | {
            "bootstrap_timeout_ms": BOOTSTRAP_TIMEOUT_MS,
            "group_id": c.group_id,
            "group_instance_id": group_instance_id(settings),
            "enable_auto_commit": False,
            "auto_offset_reset": c.auto_offset_reset,
            "max_poll_interval_ms": c.max_poll_interval_ms,
            "session_timeout_ms": c.session_timeout_ms,
            "heartbeat_interval_ms": c.heartbeat_interval_ms,
            "fetch_max_wait_ms": c.fetch_max_wait_ms,
            "max_poll_records": settings.batch.max_events,
            "isolation_level": "read_committed",
            "allow_auto_create_topics": False,
            # eager: a worker's group holds one member (or ranks that start and restart
            # together), so moving only some partitions gains nothing, and kafka-python's
            # cooperative protocol was seen to wait forever for its follow-up rebalance
            "partition_assignment_strategy": (RangePartitionAssignor,),
            # partitions added to the topic (or metadata late for a new one) are noticed
            # within this, not the client's default of five minutes
            "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        }
        | overrides
    )
    return _connect(lambda: KafkaConsumer(**kwargs), settings)


def await_partitions(
    consumer: KafkaConsumer,
    topic: str,
    timeout_s: float = 30.0,
    watch: CallWatch | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Block until ``consumer``'s metadata lists ``topic``'s partitions (a topic created a
    moment ago may not be in every broker's metadata yet; a group joined before it is would
    be assigned nothing until the next metadata refresh). Returns the partition count (0 when
    the metadata still lists none after ``timeout_s`` or once ``stop`` is set: the group is
    joined anyway). Each lookup runs under ``watch``: kafka-python can wait for one without
    a bound."""
    deadline = time.monotonic() + timeout_s
    stop = stop or threading.Event()
    while True:
        with watch.call("partition lookup") if watch else contextlib.nullcontext():
            partitions = consumer.partitions_for_topic(topic)  # None while the topic is unknown
        if partitions or time.monotonic() >= deadline or stop.wait(0.2):
            return len(partitions or ())


def subscribe(
    consumer: KafkaConsumer,
    topic: str,
    listener: Any,
    timeout_s: float = 5.0,
    stop: threading.Event | None = None,
) -> bool:
    """Subscribe ``consumer`` to ``topic``, then wait (at most ``timeout_s``, and no longer
    once ``stop`` is set) until its group coordinator's metadata snapshot lists the topic's
    partitions. Returns whether it did.

    kafka-python 3.0 refreshes that snapshot only when a metadata response arrives after the
    subscription; a first join that comes before it assigns the partitions as leader against
    an empty snapshot, sees the snapshot change a moment later and rejoins — every start read
    its first records twice and checkpointed between the two assignments. The snapshot is
    private state, read defensively: a client without it is not waited for."""
    consumer.subscribe([topic], listener=listener)
    coordinator = getattr(consumer, "_coordinator", None)
    deadline = time.monotonic() + timeout_s
    stop = stop or threading.Event()
    while True:
        snapshot = getattr(coordinator, "_metadata_snapshot", None)
        if not isinstance(snapshot, dict):
            return False
        if snapshot.get(topic):
            return True
        if time.monotonic() >= deadline:
            log.info(
                "the group coordinator's metadata does not list %s after %.0fs; joining anyway"
                " (the client may rebalance once more when it does)",
                topic,
                timeout_s,
            )
            return False
        if stop.wait(0.02):
            return False


class PartitionWatch:
    """Rejoins the group when the topic has more partitions than when this worker joined.

    kafka-python leaves that to the group leader, and a static member that rejoins after a
    restart is told it is a follower (JoinGroup v7, before KIP-814), so after a restart
    nobody watches: partitions added later would never be read. The check reads the
    client's cached metadata (refreshed every ``metadata_max_age_ms``), at most every
    ``every_s`` seconds.

    >>> class Meta:
    ...     partitions = {0, 1}
    ...     def partitions_for_topic(self, topic): return self.partitions
    >>> consumer, watch = Meta(), PartitionWatch("events", known=2, every_s=0.0)
    >>> watch.grew(consumer)
    False
    >>> consumer.partitions = {0, 1, 2}
    >>> watch.grew(consumer), watch.grew(consumer)  # once per growth
    (True, False)
    """

    def __init__(self, topic: str, known: int, every_s: float = 5.0) -> None:
        self.topic, self.known, self.every_s = topic, known, every_s
        self._next = 0.0

    def grew(self, consumer: Any) -> bool:
        """Whether the topic gained partitions since the last check that said so."""
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every_s
        count = len(consumer.partitions_for_topic(self.topic) or ())
        if count <= self.known:
            return False
        log.info("%s grew from %d to %d partitions: rejoining", self.topic, self.known, count)
        self.known = count
        return True

    def rejoin_if_grown(self, consumer: KafkaConsumer) -> None:
        """Ask for a rejoin when the topic grew; the consumer's next poll performs it."""
        if self.grew(consumer):
            consumer._coordinator.request_rejoin()  # kafka-python has no public call for it


def at_high_watermark(consumer: KafkaConsumer, partitions: Iterable[tuple[str, int]]) -> bool:
    """Has ``consumer`` read up to each partition's high watermark (as of its last fetch)?
    Never blocks: a partition without a known position or watermark is not caught up."""
    try:
        for topic, partition in partitions:
            tp = TopicPartition(topic, partition)
            high = consumer.highwater(tp)
            position = consumer.position(tp, timeout_ms=0) if high is not None else None
            if high is None or position is None or position < high:
                return False
    except KafkaError:  # e.g. the partition was revoked meanwhile
        return False
    return True


def wake_io_loop(consumer: KafkaConsumer) -> Callable[[], None]:
    """A function that wakes ``consumer``'s I/O loop from any thread (the client's own
    thread-safe wakeup; private, so a missing one is a no-op)."""

    def wake() -> None:
        with contextlib.suppress(Exception):
            consumer._net.wakeup()

    return wake


def describe_partition(consumer: KafkaConsumer, tp: TopicPartition) -> str:
    """kafka-python's own view of one assigned partition, for a log line. It reads the
    client's private state, so it says "unavailable" rather than fail when that changes."""
    try:
        state = consumer._subscription.assignment[tp]
        pending = sorted(consumer._fetcher._nodes_with_pending_fetch_requests)
        return (
            f"position={state.position} awaiting_reset={state.awaiting_reset}"
            f" awaiting_validation={state.awaiting_validation} paused={state.paused}"
            f" fetchable={state.is_fetchable()} highwater={state.highwater}"
            f" leader={consumer._manager.cluster.leader_for_partition(tp)}"
            f" nodes_with_pending_fetches={pending}"
        )
    except Exception as exc:  # private state: never let a log line fail the worker
        return f"unavailable ({type(exc).__name__})"


def unread(
    consumer: KafkaConsumer, partitions: Iterable[TopicPartition], timeout_ms: int
) -> set[TopicPartition]:
    """Those of ``partitions`` where ``consumer``'s position is short of the end the broker
    reports now (the last stable offset, under read_committed), in one lookup. Asks the
    broker: the client's cached high watermark is stale for a partition it has stopped
    fetching. Empty when the broker does not answer (nothing can be told)."""
    tps = list(partitions)
    try:
        ends = consumer.end_offsets(tps, timeout_ms=timeout_ms)
        positions = {tp: consumer.position(tp, timeout_ms=0) for tp in tps}
    except KafkaError:
        return set()
    return {tp for tp in tps if positions[tp] is None or positions[tp] < ends[tp]}


def start_offset(
    consumer: KafkaConsumer, tp: TopicPartition, earliest: bool, timeout_ms: int
) -> int | None:
    """Where a partition without a position begins, asked of the broker directly: its
    earliest offset when ``earliest``, else the group's committed offset, else the reset
    policy's end. None when the broker does not answer within ``timeout_ms``."""
    try:
        committed = None if earliest else consumer.committed(tp, timeout_ms=timeout_ms)
        if committed is not None:
            return int(committed)
        if earliest or consumer.config["auto_offset_reset"] == "earliest":
            return int(consumer.beginning_offsets([tp], timeout_ms=timeout_ms)[tp])
        return int(consumer.end_offsets([tp], timeout_ms=timeout_ms)[tp])
    except KafkaError:
        return None


def partition_lag(
    consumer: KafkaConsumer,
    processed: Mapping[tuple[str, int], int],
    partitions: Iterable[tuple[str, int]],
) -> dict[tuple[str, int], int]:
    """High watermark minus processed offset, for each partition whose watermark is known."""
    out = {}
    for topic, partition in partitions:
        try:
            high = consumer.highwater(TopicPartition(topic, partition))
        except KafkaError:
            continue
        if high is not None:
            out[(topic, partition)] = max(0, high - processed.get((topic, partition), 0))
    return out


def require_topic(admin: KafkaAdminClient, topic: str) -> int:
    """The topic's partition count; :class:`MissingTopic` when it does not exist,
    :class:`NotAuthorized` when this client may not see it."""
    described = admin.describe_topics([topic])
    for entry in described:
        if entry.get("name") == topic and not entry.get("error_code"):
            return len(entry.get("partitions") or [])
        if entry.get("name") == topic and entry.get("error_code") == _TOPIC_AUTHORIZATION_FAILED:
            raise NotAuthorized(
                f"this client may not describe the events topic {topic!r}: grant the worker's"
                " user READ and DESCRIBE on it (and READ on its consumer group)."
            )
    raise MissingTopic(
        f"the events topic {topic!r} does not exist. Create it, e.g. `kafka-topics.sh --create"
        f" --topic {topic} --partitions 3`, or run `lorastream topics create`; or point"
        " LORASTREAM_TOPICS__EVENTS at the topic your producers write to."
    )


def output_topic_specs(settings: Settings) -> dict[str, dict[str, Any]]:
    """How the worker's output topics are created when absent."""
    t = settings.topics
    base: dict[str, Any] = {
        "num_partitions": t.partitions,
        "replication_factor": t.replication_factor,
    }
    compacted = {
        "cleanup.policy": "compact",
        "min.compaction.lag.ms": "0",
        "segment.ms": str(60 * 60 * 1000),
    }
    specs = {
        t.user_vectors: base | {"configs": compacted},
        t.dead_letters: base
        | {
            "configs": {
                "cleanup.policy": "delete",
                "retention.ms": str(14 * 24 * 3600 * 1000),
                "max.message.bytes": str(DEAD_LETTER_MAX_BYTES),
            }
        },
    }
    if t.produce_item_vectors:
        specs[t.item_vectors] = base | {"configs": compacted}
    if t.vector_versions is not None:
        specs[t.vector_versions] = base | {"num_partitions": 1, "configs": compacted}
    if t.adapters is not None:  # one partition: a reader gathers one adapter's chunks
        specs[t.adapters] = base | {"num_partitions": 1, "configs": compacted}
    return specs


def ensure_output_topics(
    admin: KafkaAdminClient, settings: Settings, include_events: bool = False
) -> list[str]:
    """Create the output topics that do not exist yet; returns the names created."""
    specs = output_topic_specs(settings)
    if include_events:
        t = settings.topics
        specs[t.events] = {
            "num_partitions": t.partitions,
            "replication_factor": t.replication_factor,
        }
    existing = set(admin.list_topics())
    missing = {name: spec for name, spec in specs.items() if name not in existing}
    if not missing:
        return []
    try:
        admin.create_topics(missing, wait_for_metadata=True)
    except TopicAlreadyExistsError:
        pass  # another worker created it meanwhile
    except AuthorizationError as exc:
        raise NotAuthorized(
            f"topics {sorted(missing)} are not visible to this client and it may not create"
            f" them ({exc}): grant the worker's user DESCRIBE and WRITE on them (and CREATE"
            " on the cluster if the worker should create them)."
        ) from exc
    except KafkaError as exc:
        raise StreamSetupError(
            f"could not create topics {sorted(missing)}: {exc}. Create them yourself (user and"
            " item vector topics with cleanup.policy=compact) or grant CREATE on the cluster."
        ) from exc
    log.info("created topics %s", sorted(missing))
    return sorted(missing)


def committed_offsets(
    admin: KafkaAdminClient, group_id: str, topic: str, timeout_s: float = 30.0
) -> dict[int, int]:
    """The group's committed offsets on ``topic`` per partition ({} for a new group).
    Retries while the group coordinator is not available yet (a fresh cluster creates
    its offsets topic on the first request)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = admin.list_group_offsets({group_id: None}).get(group_id, {})
            break
        except (RetriableError, CoordinatorNotAvailableError) as exc:
            if time.monotonic() > deadline:
                raise StreamSetupError(
                    f"cannot read the committed offsets of consumer group {group_id!r} ({exc});"
                    " is the broker healthy?"
                ) from exc
            time.sleep(0.5)
    return {tp.partition: om.offset for tp, om in found.items() if tp.topic == topic}


def broker_contact(consumer: KafkaConsumer) -> bool:
    """True while the consumer knows its group coordinator. kafka-python drops the
    coordinator when its connection fails (a broker outage) and finds it again when the
    broker is back; this reads that state without side effects."""
    coordinator = getattr(consumer, "_coordinator", None)
    return getattr(coordinator, "coordinator_id", None) is not None
