"""Alert rules, the dashboard, and the proof: a real Prometheus scraping a real worker that
processes a real stream through the local Kafka broker answers every dashboard query."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import all_committed, create_topic, event_record, send_raw, wait_for, write_config

from deploy.grafana.dashboard import DASHBOARD_PATH, queries, render
from schemas.events import EventType, InteractionEvent
from schemas.settings import Settings
from stream.sources.synthetic import ChangePoint, SyntheticConfig, SyntheticStream

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "lorastream.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests" / "lorastream_test.yml"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: `make test` installs Debian's prometheus package"
            " (apt-get install prometheus) when it is missing"
        )
    return path


def test_alert_rules_are_valid_and_every_alert_has_a_unit_test() -> None:
    check = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(
        [tool("promtool"), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    import yaml

    alerts = {
        r["alert"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tested = {
        t["alertname"]
        for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert alerts == tested
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["annotations"].get("runbook"), rule["alert"]


def test_the_dashboard_json_is_current_and_uses_a_datasource_variable() -> None:
    assert DASHBOARD_PATH.read_text() == render(), "run python -m deploy.grafana.dashboard"
    dashboard = json.loads(DASHBOARD_PATH.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == [
        "Throughput",
        "Freshness and latency",
        "Learning quality",
        "Drift",
        "Kafka",
        "Resources",
    ]


# -- the proof against real services ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()  # type: ignore[no-any-return]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, Callable[[int], None]]]:
    """A real Prometheus on loopback; the second item points it at a worker's port."""
    port = free_port()
    config = tmp_path / "prometheus.yml"

    def scrape(worker_port: int) -> None:
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: ['{RULES}']\n"
            "scrape_configs:\n"
            "  - job_name: lorastream\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{worker_port}']}}]\n"
        )
        http_get_post(f"http://127.0.0.1:{port}/-/reload")

    config.write_text("global: {scrape_interval: 1s}\nscrape_configs: []\n")
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'db'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 60, "Prometheus to start")
        yield url, scrape
    finally:
        proc.terminate()
        proc.wait(20)


def http_get_post(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10).close()


def _ready(url: str) -> bool:
    try:
        return b"Ready" in http_get(f"{url}/-/ready")
    except OSError:
        return False


def drifting_stream(n: int) -> list[InteractionEvent]:
    """Synthetic events; at n/2 every user changes interests and the stream turns from
    browsing (impressions, clicks) to buying (purchases only)."""
    half = n // 2
    stream = SyntheticStream(
        SyntheticConfig(
            n_users=40, n_items=300, seed=21, change_points=(ChangePoint(half, share=1.0),)
        )
    )
    events = list(stream.events(n))
    late = [
        e.model_copy(update={"event_type": EventType.PURCHASE})
        for e in events[half:]
        if e.event_type in (EventType.CLICK, EventType.PURCHASE)
    ]
    now = datetime.now(UTC)
    return [e.model_copy(update={"timestamp": now}) for e in events[:half] + late]


def query(url: str, expr: str, at: float) -> list[dict[str, Any]]:
    q = urllib.parse.urlencode({"query": expr, "time": at})
    body = json.loads(http_get(f"{url}/api/v1/query?{q}"))
    assert body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]  # type: ignore[no-any-return]


def has_finite_value(result: list[dict[str, Any]]) -> bool:
    return any(r["value"][1] not in ("NaN", "+Inf", "-Inf") for r in result)


@pytest.mark.kafka
@pytest.mark.slow
def test_every_dashboard_query_and_rule_returns_data_from_a_real_worker(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    prometheus: tuple[str, Callable[[int], None]],
) -> None:
    prom_url, scrape = prometheus
    metrics_port = free_port()
    settings = make_settings(
        batch={"max_events": 32, "max_wait_s": 0.3},
        checkpoint={"every_s": 4.0, "idle_s": 1.0},
        learner={"kind": "llm"},
        metrics={"enabled": True, "host": "127.0.0.1", "port": metrics_port},
    )
    create_topic(settings, settings.topics.events)
    records: list[tuple[bytes | None, bytes | None]] = [
        event_record(e) for e in drifting_stream(1400)
    ]
    for k in range(10):  # a few bad records: the dead-letter panels need data too
        records.insert(40 * k + 7, (b"bad", b'{"event_id": "broken'))
    scrape(metrics_port)
    config = write_config(tmp_path / "worker.toml", settings)
    log = (tmp_path / "worker.log").open("wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "stream.cli",
            "run",
            "--config",
            str(config),
            "--history",
            str(tmp_path / "history.jsonl"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for(lambda: _ready_worker(metrics_port), 120, "the worker to be ready")
        send_raw(settings, records)
        wait_for(lambda: all_committed(settings), 300, "the worker to process the stream")
        metrics_text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
        time.sleep(5)  # a few more scrapes and rule evaluations
        at = time.time()

        lint = subprocess.run(
            [tool("promtool"), "check", "metrics"],
            input=metrics_text,
            capture_output=True,
            check=False,
        )
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
        detections = [
            float(line.rsplit(b" ", 1)[1])
            for line in metrics_text.splitlines()
            if line.startswith(b"lorastream_drift_detections_total{")
        ]
        assert sum(detections) >= 1, "no drift was detected"

        import yaml

        rules = [
            (r["record"], r["expr"])
            for g in yaml.safe_load(RULES.read_text())["groups"]
            for r in g["rules"]
            if "record" in r
        ]
        dashboard = json.loads(DASHBOARD_PATH.read_text())
        empty = []
        for title, expr in rules + queries(dashboard):
            promql = (
                expr.replace("$instance", ".*")
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
            )
            window = (
                promql if "drift_last_detection" not in promql else promql.replace("[1m]", "[10m]")
            )  # the annotation: was there a detection in the run?
            if not has_finite_value(query(prom_url, window, at)):
                empty.append(f"{title}: {promql}")
        assert not empty, "queries without data:\n" + "\n".join(empty)

        out = tmp_path / "report.png"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "report",
                "--prometheus",
                prom_url,
                "--minutes",
                "10",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        from_history = tmp_path / "history.png"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "report",
                "--history",
                str(tmp_path / "history.jsonl"),
                "--out",
                str(from_history),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert from_history.stat().st_size > 10_000
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        log.close()


def _ready_worker(port: int) -> bool:
    try:
        return http_get(f"http://127.0.0.1:{port}/readyz").startswith(b"ok")
    except OSError:
        return False
