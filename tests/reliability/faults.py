"""What the fault-injection scenarios share: scale, tally, worker runs, settings."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import WorkerProcess, create_topic, write_config

from deploy.kafka import LocalKafka
from schemas.settings import Settings


@dataclass(frozen=True)
class Scale:
    full: bool
    kill_events: int
    hostile: int
    valid_with_hostile: int
    outage_events: int
    every_events: int
    batch: int = 256


REDUCED = Scale(False, 6_000, 2_300, 2_000, 2_000, 1_000)
FULL = Scale(True, 100_000, 100_050, 20_000, 20_000, 5_000)

METRICS = {
    "kills": "count",
    "broker_restarts": "count",
    "hostile_records": "records",
    "events_sent": "events",
    "events_learned": "events",
    "events_lost": "events",
    "events_reapplied": "events",
    "worker_crashes": "count",
    "worker_exits_on_fault": "count",
    "seconds_to_resume": "s",
}


@dataclass
class Tally:
    """Per scenario, the suite's metrics (summed over scenarios in the total row)."""

    scenarios: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, scenario: str, **values: float) -> None:
        row = self.scenarios.setdefault(scenario, dict.fromkeys(METRICS, 0.0))
        for name, value in values.items():
            assert name in METRICS, name
            row[name] += value

    def rows(self) -> list[Any]:
        from benchmarks.harness import Row

        out = []
        total = dict.fromkeys(METRICS, 0.0)
        for scenario, values in self.scenarios.items():
            for name, value in values.items():
                out.append(Row(scenario, "river-mf", name, value, METRICS[name]))
                total[name] += value
        out += [Row("all scenarios", "river-mf", n, v, METRICS[n]) for n, v in total.items()]
        return out


def settings_for(broker: LocalKafka, root: Path, scale: Scale, **sections: Any) -> Settings:
    """A river-mf worker with default drift settings, metrics on a free port, and delivery
    overlapped with learning (the LLM learner's default; the path with more states)."""
    run = uuid.uuid4().hex[:8]
    base: dict[str, dict[str, Any]] = {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers, "client_id": f"rel-{run}"},
        "topics": {
            "events": f"rel-{run}.events",
            "user_vectors": f"rel-{run}.user-vectors",
            "item_vectors": f"rel-{run}.item-vectors",
            "dead_letters": f"rel-{run}.dead-letters",
        },
        "consumer": {"group_id": f"rel-{run}"},
        "batch": {"max_events": scale.batch, "max_wait_s": 0.3},
        "checkpoint": {
            "dir": str(root / "checkpoints"),
            "every_events": scale.every_events,
            "every_s": 600.0,
            "idle_s": 1.0,
        },
        "learner": {"kind": "river-mf"},
        "metrics": {"enabled": True, "port": 0},
        "worker": {"overlap_delivery": "on"},
    }
    for name, fields in sections.items():
        base[name] = {**base.get(name, {}), **fields}
    return Settings.load(environ={}, **base)


def create_events_topic(settings: Settings, partitions: int = 3) -> None:
    """The events topic, known to the broker's metadata before anyone sends to it."""
    create_topic(settings, settings.topics.events, partitions)


class Run:
    """One ``lorastream run`` process of a scenario, with what the tally needs from it."""

    def __init__(self, settings: Settings, root: Path, name: str) -> None:
        self.root = root
        config = root / "worker.toml"
        if not config.exists():
            write_config(config, settings)
        self.started = time.monotonic()
        self.process = WorkerProcess(config, root / f"{name}.log")

    @property
    def log(self) -> str:
        return self.process.log.read_text(errors="replace")

    def seconds_to_assignment(self, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while "assigned ['" not in self.log:  # partitions, not an empty assignment
            assert self.process.proc.poll() is None, self.process.tail()
            assert time.monotonic() < deadline, "the worker was never assigned"
            time.sleep(0.05)
        return time.monotonic() - self.started

    def metrics_url(self, path: str = "/metrics") -> str:
        deadline = time.monotonic() + 60
        while (found := re.search(r"metrics on http://([\d.]+):(\d+)/metrics", self.log)) is None:
            assert time.monotonic() < deadline, self.process.tail()
            time.sleep(0.1)
        return f"http://{found.group(1)}:{found.group(2)}{path}"

    def status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(self.metrics_url(path), timeout=5) as reply:
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(self.metrics_url(), timeout=5) as reply:
            text = reply.read().decode()
        found = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
        return float(found.group(1)) if found else 0.0

    def kill(self) -> float:
        self.process.proc.kill()
        self.process.proc.wait(30)
        return time.time()

    def stop(self) -> int:
        return self.process.stop(signal.SIGTERM)

    def crashed(self, code: int | None, expected: set[int]) -> bool:
        """A death nobody asked for: an unexpected exit status or a traceback. Its log is
        printed, so a failing test shows it."""
        log = self.log
        died = code not in expected or "Traceback" in log
        if died:
            print(f"{self.process.log.name} exited {code}; its log ends:\n{self.process.tail()}")
            if (at := log.find("Traceback")) >= 0:
                print(f"its first traceback:\n{log[max(0, at - 500) : at + 3000]}")
        return died


def newest_manifest(root: Path) -> dict[str, Any] | None:
    for path in sorted((root / "checkpoints").glob("ckpt-*"), reverse=True):
        try:
            return json.loads((path / "manifest.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            continue
    return None
