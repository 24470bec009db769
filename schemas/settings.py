"""The one settings object of a lorastream process.

Read once, in one place (:meth:`Settings.load`), frozen afterwards. Sources,
strongest first: keyword overrides (the CLI's flags), environment variables
``LORASTREAM_<SECTION>__<FIELD>``, a TOML file (``--config`` or
``LORASTREAM_CONFIG``), defaults. ``KAFKA_BOOTSTRAP_SERVERS`` is honoured as a
shorthand for ``LORASTREAM_KAFKA__BOOTSTRAP_SERVERS``.

>>> s = Settings.load(environ={"LORASTREAM_BATCH__MAX_EVENTS": "64",
...                            "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092"})
>>> s.batch.max_events, s.kafka.bootstrap_servers
(64, 'kafka-1:9092')
>>> s.kafka.client_kwargs()["security_protocol"]
'PLAINTEXT'
"""

from __future__ import annotations

import difflib
import os
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from schemas.learner_config import LLMConfig, RiverMFConfig
from schemas.vector_wire import VectorEncoding

__all__ = [
    "BatchSettings",
    "CheckpointSettings",
    "ConsumerSettings",
    "DistributedSettings",
    "DriftSettings",
    "KafkaSettings",
    "LearnerSettings",
    "MetricsSettings",
    "PrivacySettings",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
]

_SECTION = ConfigDict(extra="forbid", frozen=True)
_CONFIG_FILE: ContextVar[Path | None] = ContextVar("lorastream_config_file", default=None)
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("lorastream_environ", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """Environment variables read from a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


class KafkaSettings(BaseModel):
    """Connection and security; every field passes through to kafka-python."""

    model_config = _SECTION

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "lorastream"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    request_timeout_ms: int = Field(default=30_000, ge=1000)

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(
                f"security_protocol {self.security_protocol} needs kafka.sasl_mechanism"
                " (e.g. LORASTREAM_KAFKA__SASL_MECHANISM=SCRAM-SHA-512)"
            )
        return self

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by kafka-python's consumer, producer and admin client."""
        kwargs: dict[str, Any] = {
            "bootstrap_servers": [s.strip() for s in self.bootstrap_servers.split(",")],
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        optional = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": _reveal(self.sasl_plain_password),
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "ssl_password": _reveal(self.ssl_password),
        }
        kwargs.update({k: v for k, v in optional.items() if v is not None})
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
        return kwargs


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


class TopicSettings(BaseModel):
    """Topic names, and how output topics are created when absent."""

    model_config = _SECTION

    events: str = "lorastream.events"
    user_vectors: str = "lorastream.user-vectors"
    item_vectors: str = "lorastream.item-vectors"
    dead_letters: str = "lorastream.dead-letters"
    partitions: int = Field(default=3, ge=1, description="for topics the worker creates")
    replication_factor: int = Field(default=1, ge=1, description="for topics the worker creates")
    produce_item_vectors: bool = True
    vector_versions: str | None = Field(
        default=None,
        description="compacted topic that announces when every published vector is of one"
        " model version (schemas.vectors.VectorVersion); unset: not announced",
    )
    adapters: str | None = Field(
        default=None,
        description="compacted topic each checkpoint's LoRA adapter is published to (PEFT"
        " files in chunks, then a manifest: schemas/adapters.py); unset: not published",
    )
    item_refresh_per_batch: int = Field(
        default=64,
        ge=0,
        description="items re-published per full batch besides the batch's own: those"
        " published under the oldest model update, so item vectors converge to the model's"
        " (a batch under batch.max_events re-publishes its share)",
    )
    user_refresh_per_batch: int = Field(
        default=64,
        ge=0,
        description="users re-published per full batch besides the batch's own, oldest"
        " first (a batch under batch.max_events re-publishes its share)",
    )
    refresh_when_idle: int = Field(
        default=512,
        ge=0,
        description="users and items re-published per second while the stream is idle,"
        " until every published vector is of the current model",
    )
    compression: Literal["none", "lz4", "gzip"] = Field(
        default="lz4",
        description="how the worker's producer compresses output batches: lz4 costs little"
        " CPU; gzip, which kafka-python runs in Python, can cost more than the learner",
    )
    vector_encoding: VectorEncoding = Field(
        default=VectorEncoding.JSON,
        description="json (UserVector/ItemVector documents) or a binary frame with float32"
        " or float16 numbers (schemas/vector_wire.py); readers accept both",
    )


class ConsumerSettings(BaseModel):
    """Group membership. A learner step can take seconds on a CPU: the worker polls
    only between batches, so ``max_poll_interval_ms`` must exceed the slowest batch
    (the worker warns when a step uses more than half of it)."""

    model_config = _SECTION

    group_id: str = "lorastream"
    static_membership: bool = Field(
        default=True,
        description="join as a static member (group.instance.id), so a restarted worker gets"
        " its partitions back at once instead of after session_timeout_ms",
    )
    group_instance_id: str | None = Field(
        default=None,
        description="the static member id; unset: derived from the client id, the host name and"
        " the checkpoint directory, which is stable across restarts and unique per state",
    )
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    max_poll_interval_ms: int = Field(default=600_000, ge=10_000)
    session_timeout_ms: int = Field(default=45_000, ge=6_000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=500)
    fetch_max_wait_ms: int = Field(default=100, ge=0)
    stall_s: float = Field(
        default=30.0,
        gt=0,
        description="an assigned partition with records to read (or no position) that returns"
        " none this long is logged with the client's state, counted, and sought again",
    )


class BatchSettings(BaseModel):
    """When a mini-batch closes: whichever limit is reached first."""

    model_config = _SECTION

    max_events: int = Field(default=256, ge=1)
    max_wait_s: float = Field(default=1.0, gt=0)
    close_when_caught_up: bool = Field(
        default=False,
        description="close a batch as soon as a poll finds nothing more to read: fresher"
        " vectors at light load, but smaller batches there (more learner steps per event)",
    )
    max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_record_bytes: int = Field(
        default=64 * 1024, ge=256, description="larger records are dead-lettered as oversize"
    )


class CheckpointSettings(BaseModel):
    """Learner state + offsets, written atomically. ``dir = None`` disables them;
    offsets are then committed after every batch."""

    model_config = _SECTION

    dir: Path | None = Path("checkpoints")
    every_events: int = Field(default=5_000, ge=1)
    every_s: float = Field(default=60.0, gt=0)
    idle_s: float = Field(default=2.0, gt=0, description="checkpoint once the stream is idle")
    keep: int = Field(default=3, ge=1)
    allow_fresh_start: bool = Field(
        default=False,
        description="start a fresh learner when no intact checkpoint exists although the group"
        " has committed offsets (the events before them are then never learned); without it"
        " the worker refuses to start",
    )


class DriftSettings(BaseModel):
    """Drift detection on the learner's signals (River detectors)."""

    model_config = _SECTION

    enabled: bool = True
    detector: Literal["adwin", "page_hinkley", "kswin"] = "adwin"
    policy: Literal["none", "adapt"] = Field(
        default="adapt",
        description="none: alert only; adapt: scale learning rate and replay mix for a while",
    )
    adapt_lr_factor: float = Field(default=3.0, ge=1.0)
    adapt_replay_factor: float = Field(
        default=1.0,
        gt=0,
        description="above 1 protects the past during the change, below 1 follows it faster",
    )
    adapt_events: int = Field(default=2_000, ge=1, description="how long an adaptation lasts")


class LearnerSettings(BaseModel):
    """Which learner runs, and its configuration."""

    model_config = _SECTION

    kind: Literal["llm", "river-mf"] = "llm"
    llm: LLMConfig = Field(default_factory=LLMConfig)
    river_mf: RiverMFConfig = Field(default_factory=RiverMFConfig)


class MetricsSettings(BaseModel):
    """Prometheus endpoint (``/metrics``, ``/healthz``, ``/readyz``)."""

    model_config = _SECTION

    enabled: bool = True
    host: str = Field(
        default="127.0.0.1",
        description="loopback by default; 0.0.0.0 (as the container image sets) to be scraped"
        " from elsewhere",
    )
    port: int = Field(default=9477, ge=0, le=65535)
    tls_certfile: Path | None = Field(default=None, description="serve HTTPS with this cert")
    tls_keyfile: Path | None = None
    stall_after_s: float = Field(
        default=120.0, gt=0, description="liveness fails when the loop has not advanced this long"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> MetricsSettings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("metrics.tls_certfile and metrics.tls_keyfile go together")
        return self


class WorkerSettings(BaseModel):
    """The stream worker's own limits."""

    model_config = _SECTION

    dedupe_window: int = Field(default=100_000, ge=0, description="recent event ids remembered")
    shutdown_timeout_s: float = Field(default=30.0, gt=0)
    delivery_timeout_s: float = Field(
        default=120.0, gt=0, description="how long a batch's output may wait for acknowledgement"
    )
    catch_up_when_idle: int = Field(
        default=256,
        ge=0,
        description="cached item encodings recomputed with the current model per second"
        " while the stream is idle (LLM learner); once none is behind, every vector is"
        " published again, so the topics hold one model's vectors and the version can be"
        " announced complete; 0: never (a version of the LLM learner is then announced only"
        " when its steps' own cache refreshes left every encoding current)",
    )
    overlap_delivery: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="on: the broker acknowledges a batch's output while the next batch learns"
        " (its offsets still count as processed only once every record is acknowledged);"
        " off: wait for the acknowledgements before learning on; auto: on for the LLM learner,"
        " whose step leaves the CPU to the producer, off for cheap learners, where the two"
        " threads contend (benchmarks/README.md, spine and speed)",
    )
    on_invalid: Literal["dead-letter", "stop"] = Field(
        default="dead-letter", description="what to do with a record that fails validation"
    )
    key_policy: Literal["user_id", "any"] = Field(
        default="user_id",
        description="user_id: a record's key must be empty or its user id (what keeps a"
        " user's events in order on one partition); any: keys are not checked",
    )
    max_poison_per_batch: int = Field(
        default=8,
        ge=0,
        description="records of one batch the learner or publisher may fail on (each is"
        " dead-lettered); more means a bug, not bad records: the worker stops, uncommitted",
    )
    max_rewinds: int = Field(
        default=3,
        ge=1,
        description="failed batches between two checkpoints before the worker stops",
    )
    log_format: Literal["text", "json"] = "text"


class DistributedSettings(BaseModel):
    """Data-parallel ranks: one LLM learner over several workers (``torch.distributed``).

    The rank and the rendezvous come from the launcher's variables (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, as ``torchrun`` and
    ``lorastream run --world-size N`` set them), not from here."""

    model_config = _SECTION

    backend: Literal["auto", "gloo", "nccl"] = Field(
        default="auto", description="auto: nccl where the learner runs on CUDA, else gloo"
    )
    timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="how long a rank waits for the others at a step before the group fails"
        " (and its launcher restarts it from the newest checkpoint); above"
        " worker.delivery_timeout_s plus a checkpoint's write or restore, since a rank waits"
        " while a peer delivers, rank 0 writes a checkpoint, or rank 0 restores one first"
        " (on start and on a roll-back); a rank that dies is noticed at once",
    )


class PrivacySettings(BaseModel):
    """What may leave the worker about a user."""

    model_config = _SECTION

    pseudonymize_key: SecretStr | None = Field(
        default=None,
        description="when set, user ids are replaced by HMAC-SHA256(key, user id) before any"
        " state is kept or vector published; consumers look users up by the same HMAC",
    )


class Settings(BaseSettings):
    """Everything a lorastream process is configured with."""

    model_config = SettingsConfigDict(
        env_prefix="LORASTREAM_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    batch: BatchSettings = Field(default_factory=BatchSettings)
    checkpoint: CheckpointSettings = Field(default_factory=CheckpointSettings)
    learner: LearnerSettings = Field(default_factory=LearnerSettings)
    drift: DriftSettings = Field(default_factory=DriftSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    distributed: DistributedSettings = Field(default_factory=DistributedSettings)

    def secrets(self) -> list[str]:
        """Every secret value in the settings (for redacting logs)."""
        found = [
            self.kafka.sasl_plain_password,
            self.kafka.ssl_password,
            self.privacy.pseudonymize_key,
        ]
        return [s.get_secret_value() for s in found if s is not None and s.get_secret_value()]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file, environ = _CONFIG_FILE.get(), _ENVIRON.get()
        if environ is not None:
            env_settings = _MappingEnvSource(settings_cls, environ)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)

    @classmethod
    def load(
        cls,
        config_file: Path | None = None,
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Read settings from (overrides, environment, config file, defaults).

        ``environ`` replaces ``os.environ`` (tests); ``overrides`` are nested dicts
        per section, e.g. ``batch={"max_events": 64}``.
        """
        env = dict(os.environ if environ is None else environ)
        if config_file is None and env.get("LORASTREAM_CONFIG"):
            config_file = Path(env["LORASTREAM_CONFIG"])
        if config_file is not None and not config_file.is_file():
            raise FileNotFoundError(f"config file {config_file} does not exist")
        shorthand = env.get("KAFKA_BOOTSTRAP_SERVERS")
        if shorthand and not any(k.upper() == "LORASTREAM_KAFKA__BOOTSTRAP_SERVERS" for k in env):
            env["LORASTREAM_KAFKA__BOOTSTRAP_SERVERS"] = shorthand
        env = {k: v for k, v in env.items() if k.upper() != "LORASTREAM_CONFIG"}
        _check_env_sections(env)
        file_token, env_token = _CONFIG_FILE.set(config_file), _ENVIRON.set(env)
        try:
            return cls(**overrides)
        finally:
            _CONFIG_FILE.reset(file_token)
            _ENVIRON.reset(env_token)

    @classmethod
    def isolated(
        cls,
        prefix: str,
        bootstrap_servers: str,
        checkpoint_root: Path,
        environ: Mapping[str, str] | None = None,
        run_id: str | None = None,
        **sections: dict[str, Any],
    ) -> Settings:
        """Settings for a run of its own (a demo, a benchmark, a test): topics, consumer
        group, client id and checkpoint directory named ``<prefix>-<run_id>`` (random by
        default), no metrics server; ``sections`` override or add fields per section.

        >>> s = Settings.isolated("demo", "localhost:9092", Path("/tmp"), environ={})
        >>> s.topics.events.startswith("demo-") and s.topics.events.endswith(".events")
        True
        >>> s.consumer.group_id == s.kafka.client_id == s.topics.events.removesuffix(".events")
        True
        """
        run = f"{prefix}-{run_id or uuid.uuid4().hex[:8]}"
        base: dict[str, dict[str, Any]] = {
            "kafka": {"bootstrap_servers": bootstrap_servers, "client_id": run},
            "topics": {
                "events": f"{run}.events",
                "user_vectors": f"{run}.user-vectors",
                "item_vectors": f"{run}.item-vectors",
                "dead_letters": f"{run}.dead-letters",
            },
            "consumer": {"group_id": run},
            "checkpoint": {"dir": str(checkpoint_root / run)},
            "metrics": {"enabled": False},
        }
        for name, fields in sections.items():
            base[name] = {**base.get(name, {}), **fields}
        return cls.load(None, environ, **base)


#: ``LORASTREAM_`` variables that are not settings sections.
NON_SETTINGS_ENV = frozenset({"LORASTREAM_CONFIG", "LORASTREAM_CACHE"})


def _check_env_sections(env: Mapping[str, str]) -> None:
    """A ``LORASTREAM_`` variable must name a section (``LORASTREAM_<SECTION>__<FIELD>``):
    a misspelled one would otherwise be ignored without a word."""
    sections = set(Settings.model_fields)
    for key in env:
        upper = key.upper()
        if not upper.startswith("LORASTREAM_") or upper in NON_SETTINGS_ENV:
            continue
        section = upper[len("LORASTREAM_") :].split("__", 1)[0].lower()
        if section in sections:
            continue
        close = difflib.get_close_matches(section, sorted(sections), n=1)
        hint = f"; did you mean LORASTREAM_{close[0].upper()}__…?" if close else ""
        raise ValueError(
            f"{key}: there is no settings section {section!r} (sections:"
            f" {', '.join(sorted(sections))}){hint}"
        )
