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

Given a ``workdir``, the broker keeps its data there: its cluster id and ports are
recorded on the first start and reused, so a broker stopped and started again (or
``lorastream kafka --data-dir D``) serves the same topics, offsets and groups at the
same address. :meth:`LocalKafka.restart` stops and starts it on the same data.
With :class:`BrokerSecurity` it listens with SASL_SSL (SCRAM-SHA-512, a throwaway
CA made with openssl) and authorizes with KRaft's ``StandardAuthorizer``.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
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
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

__all__ = [
    "BrokerSecurity",
    "KafkaSetupError",
    "LocalKafka",
    "broker_classpath",
    "fetch_jars",
    "kafka_version",
]

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.yaml"
CACHE_ROOT = Path(os.environ.get("LORASTREAM_CACHE", Path.home() / ".cache" / "lorastream"))


class KafkaSetupError(RuntimeError):
    """The local broker could not be fetched or started; the message says what to do."""


def kafka_version() -> str:
    """The Kafka version the local broker runs (pinned in the pom)."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if match is None:  # pragma: no cover - the pom is part of the package
        raise KafkaSetupError(f"{POM} does not pin <kafka.version>")
    return match.group(1)


def _lib_dir() -> Path:
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    return CACHE_ROOT / "kafka" / f"{kafka_version()}-{digest}" / "lib"


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
    (staging / ".complete").write_text(kafka_version())
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


@dataclass(frozen=True)
class BrokerSecurity:
    """A secured listener: SASL_SSL with SCRAM-SHA-512 users and ACLs (``StandardAuthorizer``).

    ``admin`` is a super user; every other user needs ACLs. TLS material (a CA and a
    broker certificate for 127.0.0.1/localhost) is made with openssl in the workdir;
    clients verify the broker with :attr:`LocalKafka.ca_file`."""

    admin: tuple[str, str] = ("admin", "admin-secret")
    users: dict[str, str] = field(default_factory=dict)  # name -> password
    keystore_password: str = "broker-keystore-secret"


class LocalKafka:
    """One Apache Kafka broker+controller (KRaft) on loopback ports.

    ``heap_mb`` bounds the JVM heap; ``workdir`` keeps storage, logs, cluster id and
    ports (a fresh temporary directory by default, removed on :meth:`stop`); ``port``
    fixes the client port (default: free, or the one recorded in ``workdir``).
    """

    def __init__(
        self,
        workdir: Path | None = None,
        heap_mb: int = 512,
        partitions: int = 3,
        port: int = 0,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.heap_mb = heap_mb
        self.partitions = partitions
        self.security = security
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="lorastream-kafka-"))
        self.port = port
        self.controller_port = 0
        self.internal_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def ca_file(self) -> Path:
        """The CA certificate clients verify the secured listener with (PEM)."""
        return self.workdir / "tls" / "ca.pem"

    def client_settings(self, user: str, password: str) -> dict[str, Any]:
        """The ``kafka`` settings section for a client of the secured listener."""
        return {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "sasl_plain_password": password,
            "ssl_cafile": str(self.ca_file),
        }

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

    def _ports(self) -> None:
        """Reuse the ports recorded in the workdir (same address after a restart)."""
        record = self.workdir / "ports.json"
        saved = json.loads(record.read_text()) if record.is_file() else {}
        self.port = self.port or saved.get("port") or _free_port()
        self.controller_port = self.controller_port or saved.get("controller") or _free_port()
        self.internal_port = self.internal_port or saved.get("internal") or _free_port()
        record.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "controller": self.controller_port,
                    "internal": self.internal_port,
                }
            )
        )

    def _write_config(self) -> Path:
        self._ports()
        data = self.workdir / "data"
        client = "SASL_SSL" if self.security else "PLAINTEXT"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"{client}://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"{client}://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": client,
            "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
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
        if self.security is not None:
            props |= self._security_props()
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        return path

    def _security_props(self) -> dict[str, str]:
        assert self.security is not None
        name, password = self.security.admin
        keystore = self._make_tls()
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required"
            f' username="{name}" password="{password}";'
        )
        return {
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(keystore),
            "ssl.keystore.password": self.security.keystore_password,
            "ssl.key.password": self.security.keystore_password,
            # the broker is its own client (inter-broker): it trusts the same CA
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
            "ssl.endpoint.identification.algorithm": "",
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # the controller listener is plaintext on loopback: its principal is ANONYMOUS
            "super.users": f"User:{name};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }

    def _make_tls(self) -> Path:
        """A throwaway CA and a broker certificate it signed, as a PKCS12 key store."""
        assert self.security is not None
        tls = self.workdir / "tls"
        keystore = tls / "broker.p12"
        if keystore.is_file():
            return keystore
        tls.mkdir(parents=True, exist_ok=True)
        openssl = shutil.which("openssl")
        if openssl is None:
            raise KafkaSetupError("openssl is needed to make the secured broker's certificates")
        password = self.security.keystore_password
        steps = [
            [
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=lorastream-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
            [
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "broker.key",
                "-out",
                "broker.csr",
            ],
        ]
        for step in steps:
            _run([openssl, *step], tls)
        (tls / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _run(
            [
                openssl,
                "x509",
                "-req",
                "-in",
                "broker.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "san.ext",
                "-out",
                "broker.pem",
            ],
            tls,
        )
        _run(
            [
                openssl,
                "pkcs12",
                "-export",
                "-in",
                "broker.pem",
                "-inkey",
                "broker.key",
                "-certfile",
                "ca.pem",
                "-name",
                "broker",
                "-out",
                "broker.p12",
                "-passout",
                f"pass:{password}",
            ],
            tls,
        )
        return keystore

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

    def _format(self, config: Path) -> None:
        """Format KRaft storage once per workdir, with a cluster id kept beside it."""
        id_file = self.workdir / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(_cluster_id())
        args = [f"--cluster-id={id_file.read_text().strip()}", "-c", str(config)]
        if self.security is not None:
            users = {self.security.admin[0]: self.security.admin[1], **self.security.users}
            for user, password in users.items():
                args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
        fmt = subprocess.run(
            self._java_cmd("kafka.tools.StorageTool", "format", *args, "--ignore-formatted"),
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaSetupError(f"formatting KRaft storage failed:\n{fmt.stderr[-2000:]}")

    def start(self, timeout_s: float = 90.0) -> str:
        """Format storage (once), start the broker, wait until it serves metadata."""
        if self._proc is not None:
            return self.bootstrap_servers
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        self._format(config)
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
        log.info("local Kafka %s ready at %s", kafka_version(), self.bootstrap_servers)
        return self.bootstrap_servers

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                if "Address already in use" in tail:
                    raise KafkaSetupError(
                        f"port {self.port} or {self.controller_port} is taken; choose another"
                        " (--port), or run again without one (ports are chosen afresh)."
                    )
                raise KafkaSetupError(f"the Kafka broker exited during start-up:\n{tail}")
            if self._answers_metadata():
                return
            time.sleep(0.3)
        raise KafkaSetupError(
            f"the Kafka broker did not answer within {timeout_s:.0f}s; see {self.log_path}"
        )

    def _answers_metadata(self) -> bool:
        extra: dict[str, Any] = {}
        if self.security is not None:
            extra = self.client_settings(*self.security.admin)
            extra.pop("bootstrap_servers")
            extra["sasl_plain_password"] = self.security.admin[1]
        return _answers_metadata(self.bootstrap_servers, extra)

    def restart(self, down_s: float = 0.0, timeout_s: float = 90.0) -> None:
        """Stop the broker, keep its data, wait ``down_s``, start it again (same address)."""
        self.halt()
        time.sleep(down_s)
        self.start(timeout_s)

    def halt(self, timeout_s: float = 20.0) -> None:
        """Stop the broker process and keep its data (:meth:`start` brings it back)."""
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

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``); a temporary workdir
        is removed, a given one kept."""
        self.halt(timeout_s)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise KafkaSetupError(f"{' '.join(cmd[:3])} failed:\n{result.stderr[-2000:]}")


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding. Like Kafka's own
    ``Uuid.randomUuid``, never one starting with "-", which command lines take for a flag."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _answers_metadata(bootstrap: str, extra: dict[str, Any] | None = None) -> bool:
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
            bootstrap_servers=bootstrap,
            request_timeout_ms=3000,
            client_id="lorastream-probe",
            **(extra or {}),
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
