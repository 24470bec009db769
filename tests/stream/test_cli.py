"""The lorastream command line against the real broker."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import (
    WorkerProcess,
    cli,
    create_topic,
    env_for,
    make_events,
    read_topic,
    write_config,
)

from schemas.settings import Settings

pytestmark = pytest.mark.kafka


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


def test_sigusr1_prints_every_threads_stack_and_the_worker_goes_on(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events)
    worker = WorkerProcess(write_config(tmp_path / "worker.toml", settings), tmp_path / "w.log")
    try:
        worker.wait_for(lambda: "assigned" in worker.tail(), 60, "the worker to be assigned")
        stacks = worker.stacks()
        assert "Current thread" in stacks, stacks
        assert "stream/app.py" in stacks, "the worker's own frames are in it"
        assert worker.proc.poll() is None, "the worker goes on running"
    finally:
        code = worker.stop(signal.SIGTERM)
    assert code == 0, worker.tail()


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


def test_produce_movielens_replays_in_time_order_and_reports_bad_rows(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events)
    (tmp_path / "movies.csv").write_text("movieId,title,genres\n1,Heat (1995),Action\n")
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n2,1,4.0,200\n1,1,5.0,100\n3,1,bad,300\n"
    )
    done = cli("produce", "movielens", str(tmp_path), env=env_for(settings))
    assert done.returncode == 1
    assert "ratings.csv:4: rating is not a number" in done.stderr
    assert "sent 2 MovieLens events" in done.stdout
    sent = sorted(read_topic(settings, settings.topics.events, expect=2), key=lambda r: r.timestamp)
    values = [json.loads(r.value) for r in sent]
    assert sorted(v["user_id"] for v in values) == ["1", "2"]
    assert all(v["item"]["title"] == "Heat (1995)" for v in values)


def test_produce_amazon_reviews(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events)
    path = tmp_path / "reviews.jsonl"
    path.write_text(
        json.dumps(
            {
                "reviewerID": "A",
                "asin": "B",
                "overall": 5,
                "summary": "Great",
                "unixReviewTime": 1_500_000_000,
            }
        )
        + "\n"
    )
    done = cli("produce", "amazon-reviews", str(path), env=env_for(settings))
    assert done.returncode == 0, done.stderr
    [record] = read_topic(settings, settings.topics.events, expect=1)
    assert json.loads(record.value)["review_text"] == "Great"
