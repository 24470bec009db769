"""The application object: a worker's ending is an exit status, never a silent success."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version

import pytest
from helpers import create_topic, event_record, make_events, send_raw

from learners.llm import LLMLearner
from learners.river_mf import RiverMFLearner
from schemas.learner_config import LLMConfig
from schemas.settings import Settings
from stream.app import App, ExitStatus
from stream.checkpoint import CheckpointStore
from stream.metrics import WorkerMetrics
from stream.poison import TooManyPoisonRecords

pytestmark = pytest.mark.kafka


class Broken(RiverMFLearner):
    def learn_many(self, *args: object, **kwargs: object) -> object:
        raise ValueError("broken learner")


def test_a_worker_that_fails_ends_with_failed_not_ok(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(batch={"max_events": 32, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    send_raw(settings, [event_record(e) for e in make_events(100, n_users=5)])
    app = App(settings, learner=Broken(), metrics=WorkerMetrics(process=False))
    running = app.start()
    assert running.wait(120) is ExitStatus.FAILED
    assert isinstance(running.error, TooManyPoisonRecords)


def test_a_missing_topic_ends_with_setup(make_settings: Callable[..., Settings]) -> None:
    app = App(make_settings(), learner=RiverMFLearner(), metrics=WorkerMetrics(process=False))
    assert app.run(handle_signals=False) is ExitStatus.SETUP
    assert "does not exist" in str(app.error)


def test_a_stopped_worker_ends_ok(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(batch={"max_events": 32, "max_wait_s": 0.3})
    create_topic(settings, settings.topics.events)
    running = App(settings, learner=RiverMFLearner(), metrics=WorkerMetrics(process=False)).start()
    assert running.wait(3) is None, "still running"
    assert running.stop() is ExitStatus.OK
    build = {"version": version("lorastream"), "learner": "river-mf", "model": "river-mf"}
    sample = running.app.metrics.registry.get_sample_value
    assert sample("lorastream_build_info", {**build, "device": "cpu"}) == 1.0


def test_a_checkpoint_of_other_learner_settings_ends_with_setup_and_stays(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    create_topic(settings, settings.topics.events)
    assert settings.checkpoint.dir is not None
    store = CheckpointStore(settings.checkpoint.dir)
    saved = LLMLearner(LLMConfig(history_len=20))
    store.save(saved, {(settings.topics.events, 0): 0}, {}, {})
    app = App(
        settings,
        learner=LLMLearner(LLMConfig(history_len=7)),
        metrics=WorkerMetrics(process=False),
    )
    assert app.run(handle_signals=False) is ExitStatus.SETUP
    assert "history_len=20 (now 7)" in str(app.error)
    assert store.quarantined() == []
