"""A real, single-node Apache Kafka (KRaft) on loopback, for development, tests and the demo.

The broker's jars come from Maven Central once (``pom.xml`` beside this file pins
the version) and are cached under ``~/.cache/lorastream/kafka/``. Each
:class:`LocalKafka` formats fresh KRaft storage in a temporary directory, starts
one combined broker+controller JVM on free loopback ports, waits until it answers
metadata requests, and stops it on exit. The JVM is tied to this process with
``PR_SET_PDEATHSIG``, so even a ``kill -9`` of the Python process does not leave
an orphaned broker behind.

Usage::

    with LocalKafka() as kafka:
        print(kafka.bootstrap_servers)   # e.g. 127.0.0.1:40123
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["KafkaSetupError", "LocalKafka", "broker_classpath", "fetch_jars"]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.yaml"
CACHE_ROOT = Path(os.environ.get("LORASTREAM_CACHE", Path.home() / ".cache" / "lorastream"))


class KafkaSetupError(RuntimeError):
    """The local broker could not be fetched or started; the message says what to do."""


def _kafka_version() -> str:
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:  # pragma: no cover - the pom is part of the package
        raise KafkaSetupError(f"{POM} does not pin <kafka.version>")
    return match.group(1)


def _lib_dir() -> Path:
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return CACHE_ROOT / "kafka" / f"{_kafka_version()}-{digest}" / "lib"


def fetch_jars(quiet: bool = True) -> Path:
    """Fetch the broker jars with Maven once; returns the directory holding them."""
    lib = _lib_dir()
    marker = lib / ".complete"
    if marker.is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(
            "Maven (mvn) is needed once to fetch Apache Kafka's jars from Maven Central: install"
            " it (apt-get install maven), or set KAFKA_BOOTSTRAP_SERVERS to an existing cluster."
        )
    staging = lib.with_name(f"lib.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    cmd = [mvn, "-B", "-f", str(POM), "dependency:copy-dependencies", f"-Dlib.dir={staging}"]
    if quiet:
        cmd.insert(1, "-q")
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaSetupError(
            "Maven could not fetch Apache Kafka's jars (is Maven Central reachable?):\n"
            + (result.stdout + result.stderr)[-3000:]
        )
    (staging / ".complete").write_text(_kafka_version())
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    return lib


def broker_classpath() -> str:
    """The broker's classpath (fetching the jars first when needed)."""
    return os.pathsep.join(str(p) for p in sorted(fetch_jars().glob("*.jar")))


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaSetupError(
            "Java 17 or newer is needed to run the local Kafka broker: install it"
            " (apt-get install openjdk-17-jre-headless), or set KAFKA_BOOTSTRAP_SERVERS"
            " to an existing cluster."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', out)
    if match is None or int(match.group(1)) < 17:
        raise KafkaSetupError(
            f"Apache Kafka 4 needs Java 17 or newer; `java -version` says: {out.strip()[:200]}"
        )
    return java


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM the JVM when its parent dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


class LocalKafka:
    """One Apache Kafka broker+controller (KRaft) on free loopback ports.

    ``heap_mb`` bounds the JVM heap; ``workdir`` keeps storage and logs (a fresh
    temporary directory by default, removed on :meth:`stop`).
    """

    def __init__(
        self, workdir: Path | None = None, heap_mb: int = 512, partitions: int = 3
    ) -> None:
        self.heap_mb = heap_mb
        self.partitions = partitions
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lorastream-kafka-"))
        self.port = 0
        self.controller_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _write_config(self) -> Path:
        self.port, self.controller_port = _free_port(), _free_port()
        data = self.workdir / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "3",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(8 * 1024 * 1024),
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _java_cmd(self, main: str, *args: str) -> list[str]:
        return [
            _java(),
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            broker_classpath(),
            main,
            *args,
        ]

    def start(self, timeout_s: float = 90.0) -> str:
        """Format storage, start the broker, wait until it serves metadata."""
        if self._proc is not None:
            return self.bootstrap_servers
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        cluster_id = _cluster_id()
        fmt = subprocess.run(
            self._java_cmd(
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",
                "-c",
                str(config),
                "--ignore-formatted",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaSetupError(f"formatting KRaft storage failed:\n{fmt.stderr[-2000:]}")
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self._java_cmd("kafka.Kafka", str(config)),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        log.info("local Kafka %s ready at %s", _kafka_version(), self.bootstrap_servers)
        return self.bootstrap_servers

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                if "Address already in use" in tail:
                    raise KafkaSetupError(
                        f"port {self.port} or {self.controller_port} was taken while the broker"
                        " started; run again (ports are chosen afresh each time)."
                    )
                raise KafkaSetupError(f"the Kafka broker exited during start-up:\n{tail}")
            if _answers_metadata(self.bootstrap_servers):
                return
            time.sleep(0.3)
        raise KafkaSetupError(
            f"the Kafka broker did not answer within {timeout_s:.0f}s; see {self.log_path}"
        )

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``) and clean up."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding. Like Kafka's own
    ``Uuid.randomUuid``, never one starting with "-", which command lines take for a flag."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _answers_metadata(bootstrap: str) -> bool:
    """True when the broker answers a metadata request and has a controller."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, port = bootstrap.rsplit(":", 1)
    try:  # a plain TCP probe first: kafka-python logs every refused connection as an error
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=3000, client_id="lorastream-probe"
        )
    except (KafkaError, OSError, ValueError):
        return False
    try:
        cluster = admin.describe_cluster()
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) != -1
    except (KafkaError, OSError, ValueError):
        return False
    finally:
        admin.close()
