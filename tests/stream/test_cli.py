"""The lorastream command line against the real broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import create_topic, make_events, read_topic

from schemas.settings import Settings

pytestmark = pytest.mark.kafka


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


def test_produce_jsonl_validates_first_and_reports_line_numbers(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events)
    events = make_events(5, n_users=2)
    lines = [e.model_dump_json() for e in events]
    lines.insert(2, '{"event_id": "x"}')
    lines.insert(4, "not json")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    refused = cli("produce", "jsonl", str(path), env=env_for(settings))
    assert refused.returncode == 1
    assert "line 3:" in refused.stderr
    assert "line 5:" in refused.stderr
    assert "nothing sent" in refused.stderr
    assert read_topic(settings, settings.topics.events, idle_s=1.5) == []

    partial = cli("produce", "jsonl", str(path), "--skip-invalid", env=env_for(settings))
    assert partial.returncode == 1
    assert "sent 5 events" in partial.stdout
    sent = read_topic(settings, settings.topics.events, expect=5)
    assert sorted(json.loads(r.value)["event_id"] for r in sent) == sorted(
        e.event_id for e in events
    )
    assert {r.key.decode() for r in sent} == {e.user_id for e in events}


def test_produce_from_stdin(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events)
    events = make_events(3, n_users=1)
    done = cli(
        "produce",
        "jsonl",
        "-",
        env=env_for(settings),
        stdin="\n".join(e.model_dump_json() for e in events),
    )
    assert done.returncode == 0, done.stderr
    assert len(read_topic(settings, settings.topics.events, expect=3)) == 3


def test_run_against_an_unreachable_broker_says_what_to_check(tmp_path: Path) -> None:
    done = cli(
        "run",
        "--bootstrap-servers",
        "127.0.0.1:1",
        "--learner",
        "river-mf",
        "--checkpoint-dir",
        str(tmp_path),
        "--metrics-port",
        "0",
    )
    assert done.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in done.stderr
    assert "BOOTSTRAP_SERVERS" in done.stderr


def test_run_with_a_missing_events_topic_says_how_to_create_it(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    done = cli(
        "run",
        "--learner",
        "river-mf",
        "--checkpoint-dir",
        str(tmp_path),
        "--metrics-port",
        "0",
        env=env_for(settings),
    )
    assert done.returncode == 2
    assert f"the events topic '{settings.topics.events}' does not exist" in done.stderr
    assert "lorastream topics create" in done.stderr


def test_bad_settings_are_reported_not_traced(tmp_path: Path) -> None:
    done = cli("run", env={"LORASTREAM_BATCH__MAX_EVENTS": "zero"})
    assert done.returncode == 2
    assert "bad settings" in done.stderr
    assert "Traceback" not in done.stderr


def test_topics_create_then_tail(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    env = env_for(settings)
    created = cli("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    assert settings.topics.events in created.stdout
    again = cli("topics", "create", env=env)
    assert "nothing (all exist)" in again.stdout
    events = make_events(2, n_users=1)
    cli("produce", "jsonl", "-", env=env, stdin="\n".join(e.model_dump_json() for e in events))
    tailed = cli("tail", "events", "--from-beginning", "--max", "2", "--timeout", "10", env=env)
    assert tailed.returncode == 0, tailed.stderr
    printed = [json.loads(line) for line in tailed.stdout.splitlines() if line.strip()]
    assert [p["event_id"] for p in printed] == [e.event_id for e in events]
