"""Helpers shared by the tests: building events, reading topics, waiting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from pydantic import SecretStr

from schemas.events import InteractionEvent
from schemas.settings import Settings
from stream.clients import close_producer, wake_io_loop
from stream.stall import CallWatch

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def make_events(n: int, n_users: int, n_items: int = 40, seed: int = 0) -> list[InteractionEvent]:
    """``n`` valid events spread over ``n_users`` users, with unique ids."""
    import random

    rng = random.Random(seed)
    kinds = ["click", "view", "add_to_cart", "purchase", "rating", "impression", "skip"]
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        out.append(
            InteractionEvent(
                event_id=f"{uuid.uuid4().hex}",
                user_id=f"user-{i % n_users}",
                item_id=f"item-{rng.randrange(n_items)}",
                event_type=kind,
                value=float(rng.randint(1, 5)) if kind == "rating" else None,
                timestamp=T0 + timedelta(seconds=i),
                item={"title": f"Item {i % n_items}", "categories": ["cat"]},
            )
        )
    return out


def create_topic(settings: Settings, topic: str, partitions: int = 3) -> None:
    admin = KafkaAdminClient(**settings.kafka.client_kwargs())
    try:
        admin.create_topics(
            {topic: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True
        )
    finally:
        admin.close()


def producer_for(settings: Settings) -> KafkaProducer:
    return KafkaProducer(**settings.kafka.client_kwargs(), acks="all")


def send_raw(
    settings: Settings,
    records: Sequence[tuple[bytes | None, bytes | None]],
    rate: float | None = None,
) -> None:
    """Send (key, value) records to the events topic, in order (at ``rate`` per second), and
    wait until the broker acknowledged each."""
    producer = producer_for(settings)
    try:
        started, futures = time.monotonic(), []
        for k, (key, value) in enumerate(records):
            if rate is not None and (wait := started + k / rate - time.monotonic()) > 0:
                time.sleep(wait)
            futures.append(producer.send(settings.topics.events, key=key, value=value))
        producer.flush()
        for f in futures:
            f.get(30)
    finally:  # a send that failed leaves no producer behind, busy on the broker
        close_producer(producer, 5)


class Sender(threading.Thread):
    """:func:`send_raw` at ``rate`` in the background; :meth:`check` raises what stopped it,
    so a wait on the worker fails at once instead of waiting for records never sent."""

    def __init__(
        self,
        settings: Settings,
        records: Sequence[tuple[bytes | None, bytes | None]],
        rate: float,
    ) -> None:
        super().__init__(name="test-sender", daemon=True)
        self.args_ = (settings, records, rate)
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            send_raw(*self.args_)
        except BaseException as exc:  # the test thread reports it
            self.error = exc

    def check(self) -> bool:
        """True while sending goes well (a condition for waits: a failed send fails them)."""
        if self.error is not None:
            raise AssertionError(f"sending the events failed: {self.error!r}") from self.error
        return True

    def finish(self, timeout_s: float) -> None:
        """Wait until every record is sent and acknowledged."""
        self.join(timeout_s)
        assert not self.is_alive(), f"still sending after {timeout_s:.0f}s"
        self.check()


def event_record(event: InteractionEvent) -> tuple[bytes, bytes]:
    return event.user_id.encode(), event.model_dump_json(exclude_none=True).encode()


def read_topic(
    settings: Settings,
    topic: str,
    idle_s: float = 3.0,
    expect: int | None = None,
    timeout_s: float = 60.0,
) -> list[Any]:
    """All records of ``topic`` from the beginning (until ``expect`` or ``idle_s`` of quiet)."""
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
    with watched(consumer, f"partitions of {topic}"):
        parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    records: list[Any] = []
    deadline, quiet_since = time.monotonic() + timeout_s, time.monotonic()
    try:
        while time.monotonic() < deadline:
            polled = consumer.poll(timeout_ms=300)
            if polled:
                quiet_since = time.monotonic()
                for recs in polled.values():
                    records.extend(recs)
            if expect is not None and len(records) >= expect:
                # read a little longer to catch extras
                if time.monotonic() - quiet_since > 1.0:
                    break
            elif expect is None and time.monotonic() - quiet_since > idle_s:
                break
    finally:
        consumer.close()
    return records


def announced_versions(settings: Settings) -> list[str]:
    """The model versions announced complete on ``topics.vector_versions``, oldest first."""
    from schemas.vectors import VectorVersion

    records = read_topic(settings, str(settings.topics.vector_versions), idle_s=1.0)
    return [VectorVersion.model_validate_json(r.value).model_version for r in records]


def latest_by_key(records: list[Any]) -> dict[str, dict[str, Any]]:
    """The newest JSON value per record key (what a compacted topic converges to)."""
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
        out[r.key.decode()] = json.loads(r.value)
    return out


@contextmanager
def watched(client: Any, what: str) -> Iterator[None]:
    """Run a blocking call of a helper's Kafka ``client`` under the worker's own call watch,
    which wakes the client's I/O loop after 2 s inside it: kafka-python 3.0 waits for some
    calls (``partitions_for_topic`` among them) without a bound, and a wait whose I/O loop
    was never woken held a test for minutes. It does not bound the call: a broker that is
    really gone still holds it."""
    watch = CallWatch(wake_io_loop(client), poke_after_s=2.0, dump_after_s=float("inf"))
    watch.start()
    try:
        with watch.call(what):
            yield
    finally:
        watch.stop()


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    # no auto-commit: a group-less consumer otherwise warns on every call, burying a failing
    # test's captured log (the worker's own lines) under one line per poll of a wait
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
    try:
        with watched(consumer, "tests' end-offsets lookup"):
            parts = consumer.partitions_for_topic(topic) or set()
            ends = consumer.end_offsets([TopicPartition(topic, p) for p in parts], 30_000)
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        consumer.close()


def committed_offsets(settings: Settings) -> dict[int, int]:
    """The group's committed offsets on the events topic ({} while the group has none)."""
    admin = KafkaAdminClient(**settings.kafka.client_kwargs())
    try:
        group = settings.consumer.group_id
        with watched(admin, "tests' committed-offsets lookup"):
            offsets = admin.list_group_offsets({group: None})[group]
        return {
            tp.partition: om.offset
            for tp, om in offsets.items()
            if tp.topic == settings.topics.events
        }
    except KafkaError:  # e.g. the coordinator is still loading the new group
        return {}
    finally:
        admin.close()


def all_committed(settings: Settings) -> bool:
    """True when the group has committed the end offset of every events partition."""
    ends = end_offsets(settings, settings.topics.events)
    committed = committed_offsets(settings)
    return all(committed.get(p, 0) == o for p, o in ends.items())


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2
) -> None:
    """Until ``condition()``; a timeout fails with the state of every worker running in this
    process (its partitions as the client sees them, its thread's stack)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval_s)
    message = f"timed out after {timeout_s:.0f}s waiting for {what}"
    raise AssertionError("\n\n".join([message, *WorkerThread.describe_all()]))


SHUTDOWN_BOUND_S = 30.0


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def _toml_table(name: str, data: dict[str, Any]) -> list[str]:
    """``[name]`` with its scalar and list keys, then each nested table."""
    lines = [f"[{name}]"]
    lines += [
        f"{json.dumps(k)} = {_toml_value(v)}"
        for k, v in data.items()
        if v is not None and not isinstance(v, dict)
    ]
    for k, v in data.items():
        if isinstance(v, dict):
            lines += _toml_table(f"{name}.{json.dumps(k)}", v)
    return lines


def _revealed(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_revealed(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_config(path: Path, settings: Settings) -> Path:
    """The test's settings, every section and nested field (secrets revealed), as a TOML
    file for a worker process."""
    lines: list[str] = []
    for section in Settings.model_fields:
        data = _revealed(getattr(settings, section).model_dump(mode="python"))
        lines += _toml_table(section, data)
    path.write_text("\n".join(lines) + "\n")
    assert Settings.load(path, environ={}) == settings, "the TOML file must round-trip"
    return path


class WorkerProcess:
    """``lorastream run`` in a subprocess, its log in a file."""

    def __init__(self, config: Path, log: Path, *args: str) -> None:
        self.log = log
        self._log_file = log.open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "run", "--config", str(config), *args],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_for(
        self, condition: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2
    ) -> None:
        """Like `wait_for`, but fails at once if the worker exits; either failure shows its log
        (a timeout also every thread's stack, then kills the worker)."""

        def done() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the worker exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.tail()
                )
            return condition()

        try:
            wait_for(done, timeout_s, what, interval_s)
        except AssertionError as e:
            if "the worker exited" in str(e):
                raise
            stacks = self.stacks()
            self.proc.kill()  # a failed test leaves no worker behind, busy on the broker's cores
            self.proc.wait()
            raise AssertionError(f"{e}; the worker's log ends:\n{stacks}") from None

    def stacks(self) -> str:
        """The log's tail after the running worker printed every thread's stack (SIGUSR1)."""
        if self.proc.poll() is None:
            before = self.log.stat().st_size
            self.proc.send_signal(signal.SIGUSR1)
            # until the dump has come and stopped growing for 1.5 s: on a loaded machine the
            # process can be off the CPU for half a second in the middle of writing it
            deadline, size, still = time.monotonic() + 15.0, before, 0
            while time.monotonic() < deadline and still < 3:
                time.sleep(0.5)
                size, grown = self.log.stat().st_size, size
                still = still + 1 if size > before and size == grown else 0
        return self.log.read_text(errors="replace")[-12000:]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = SHUTDOWN_BOUND_S) -> int:
        """Signal the worker and wait for its exit code; one that has not exited within
        ``timeout`` is killed (no worker outlives its test) and the wait fails."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise
        finally:
            self._log_file.close()


def cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin,
        timeout=120,
        check=False,
    )


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "LORASTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "LORASTREAM_TOPICS__EVENTS": settings.topics.events,
        "LORASTREAM_TOPICS__USER_VECTORS": settings.topics.user_vectors,
        "LORASTREAM_TOPICS__DEAD_LETTERS": settings.topics.dead_letters,
        "LORASTREAM_TOPICS__ITEM_VECTORS": settings.topics.item_vectors,
        "COLUMNS": "200",
    }


class WorkerThread:
    """A worker running in a thread of the test process; keeps what it raised."""

    running: ClassVar[weakref.WeakSet[WorkerThread]] = weakref.WeakSet()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="worker", daemon=True)
        with WorkerThread._lock:
            WorkerThread.running.add(self)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:
            self.error = exc
        finally:
            with WorkerThread._lock:
                WorkerThread.running.discard(self)

    @classmethod
    def describe_all(cls) -> list[str]:
        """:meth:`describe` of every worker running in this process; one that cannot be
        described says why (it may be stopping as it is asked)."""
        with cls._lock:
            running = list(cls.running)
        states = []
        for w in running:
            try:
                states.append(w.describe())
            except Exception as exc:
                states.append(f"worker: not described ({exc!r})")
        return states

    def describe(self) -> str:
        """What the worker has done, each assigned partition as the client sees it, and where
        the worker's thread is now: what a timed-out wait shows."""
        from stream.clients import describe_partition

        w = self.worker
        lines = [f"worker: {w.records_seen} records seen, {w.events_learned} events learned"]
        consumer = w._consumer
        for key in sorted(w.book.assigned()):
            state = describe_partition(consumer, TopicPartition(*key)) if consumer else "-"
            lines.append(f"  {key[0]}[{key[1]}]: {state}")
        frame = sys._current_frames().get(self.thread.ident or -1)
        if frame is not None:
            lines.append("  its thread is at:\n" + "".join(traceback.format_stack(frame)[-12:]))
        return "\n".join(lines)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop on request; a worker that raised meanwhile fails the test with its error."""
        self.worker.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.error is not None:
            raise AssertionError(f"the worker failed: {self.error!r}") from self.error

    def wait_failed(self, timeout: float = 120.0) -> BaseException:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker was expected to stop on its own"
        assert self.error is not None, "the worker stopped without an error"
        return self.error
