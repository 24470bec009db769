"""Ranks: `lorastream run --world-size 2` (torchrun, gloo) learns one model from one group."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    WorkerProcess,
    all_committed,
    announced_versions,
    create_topic,
    end_offsets,
    event_record,
    latest_by_key,
    make_events,
    read_topic,
    send_raw,
    wait_for,
    write_config,
)

from learners.ledger import EventLedger
from learners.random_backbone import build_random_backbone
from schemas.settings import Settings
from stream.checkpoint import CheckpointError, CheckpointStore

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def newest_manifest(settings: Settings) -> dict[str, Any] | None:
    import json

    assert settings.checkpoint.dir is not None
    for path in sorted(settings.checkpoint.dir.glob("ckpt-*"), reverse=True):
        try:
            return json.loads((path / "manifest.json").read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            continue
    return None


def ranks_settings(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    llm: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Settings:
    model = build_random_backbone("qwen2-tiny", tmp_path / "model")
    settings = make_settings(
        learner={"kind": "llm", "llm": {"model": str(model), **(llm or {})}},
        batch={"max_events": 32, "max_wait_s": 0.3},
        checkpoint={"every_events": 48, "idle_s": 1.0},
        distributed={"timeout_s": 30},
        **sections,
    )
    create_topic(settings, settings.topics.events, partitions=2)
    return settings


def newest_learner_dir(settings: Settings) -> Path:
    assert settings.checkpoint.dir is not None
    newest = CheckpointStore(settings.checkpoint.dir).latest()
    assert newest is not None
    return newest.learner_dir


def check_every_event_once(settings: Settings, events: list[Any]) -> None:
    manifest = newest_manifest(settings)
    assert manifest is not None
    final = EventLedger.from_json(manifest["ledger"])
    assert final == EventLedger.expected(dict.fromkeys(e.event_id for e in events))
    ends = end_offsets(settings, settings.topics.events)
    assert {p: o for _, p, o in manifest["offsets"]} == ends  # every partition, in one manifest


def newest_versions(settings: Settings) -> dict[bytes, str]:
    """The model version of every vector on both topics (tombstoned keys left out)."""
    from schemas.vector_wire import decode_vector

    newest: dict[bytes, str | None] = {}
    for topic in (settings.topics.user_vectors, settings.topics.item_vectors):
        for r in read_topic(settings, topic, idle_s=1.0):
            newest[r.key] = None if r.value is None else decode_vector(r.value)["model_version"]
    return {k: v for k, v in newest.items() if v is not None}


def test_two_ranks_learn_every_event_once_into_one_checkpoint(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    prefix = make_settings().topics.events.removesuffix(".events")
    settings = ranks_settings(  # no per-step cache refresh: the idle ticks must catch up
        make_settings,
        tmp_path,
        llm={"cache_refresh_per_step": 0},
        topics={"vector_versions": f"{prefix}.vector-versions"},
    )
    events = make_events(240, n_users=24, n_items=40)
    gone = "user-3"  # deleted after its events: every rank forgets it, its rank tombstones it
    deletion = {"event_id": "d-3", "user_id": gone, "event_type": "delete_user"}
    deletion["timestamp"] = "2026-03-02T00:00:00Z"
    send_raw(
        settings,
        [event_record(e) for e in events] + [(gone.encode(), json.dumps(deletion).encode())],
    )
    config = write_config(tmp_path / "w.toml", settings)
    ranks = WorkerProcess(config, tmp_path / "w.log", "--world-size", "2", "--max-restarts", "0")
    ranks.wait_for(lambda: all_committed(settings), 240, "every offset committed")

    def complete() -> bool:  # one version on both topics, and announced as complete
        versions = set(newest_versions(settings).values())
        return len(versions) == 1 and announced_versions(settings)[-1:] == [*versions]

    ranks.wait_for(complete, 60, "the final version announced once every vector is of it")
    assert ranks.stop() == 0, ranks.tail()
    log = ranks.log.read_text()
    assert "rank 0 of 2" in log
    assert "rank 1 of 2" in log
    check_every_event_once(settings, events)  # (deletions are not learned events)
    records = read_topic(settings, settings.topics.user_vectors)
    assert [r.value for r in records if r.key == gone.encode()][-1] is None  # a tombstone
    vectors = latest_by_key([r for r in records if r.value is not None])
    assert set(vectors) == {e.user_id for e in events}  # each rank published its own users
    state = "".join(f.read_text() for f in newest_learner_dir(settings).rglob("*.json"))
    assert f'"{gone}"' not in state
    assert '"user-4"' in state


def test_a_killed_rank_brings_the_group_back_with_every_event_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """One worker, then two ranks, one of them killed mid-stream, then one worker again, on
    one checkpoint directory and group: the group grows, recovers and shrinks by restarting
    from its newest checkpoint, with every event in the final state once."""
    import os

    import psutil

    settings = ranks_settings(make_settings, tmp_path)
    first, second = make_events(160, 24, 40, seed=1), make_events(160, 24, 40, seed=2)
    third = make_events(48, 24, 40, seed=3)
    config = write_config(tmp_path / "w.toml", settings)

    def alone(events: list[Any], log: str) -> None:  # one plain worker over the group
        send_raw(settings, [event_record(e) for e in events])
        worker = WorkerProcess(config, tmp_path / log)
        worker.wait_for(lambda: all_committed(settings), 240, f"{log}: every offset committed")
        assert worker.stop() == 0, worker.tail()

    alone(first[:64], "alone-1.log")
    alone_left = newest_manifest(settings)
    send_raw(settings, [event_record(e) for e in first[64:]])
    ranks = WorkerProcess(config, tmp_path / "w.log", "--world-size", "2", "--max-restarts", "2")
    ranks.wait_for(lambda: newest_manifest(settings) != alone_left, 240, "the ranks' checkpoint")
    workers = psutil.Process(ranks.proc.pid).children()
    rank_1 = next(w for w in workers if w.environ().get("RANK") == "1")
    os.kill(rank_1.pid, signal.SIGKILL)
    send_raw(settings, [event_record(e) for e in second])
    ranks.wait_for(lambda: all_committed(settings), 300, "every offset committed after the kill")
    wait_for(lambda: "restart" in ranks.log.read_text().lower(), 5, "torchrun restarted the group")
    assert ranks.stop() == 0, ranks.tail()
    check_every_event_once(settings, first + second)
    alone(third, "alone-2.log")
    check_every_event_once(settings, first + second + third)


@pytest.mark.parametrize("damaged", [False, True], ids=["intact", "newest-checkpoint-damaged"])
def test_a_record_the_learner_fails_on_is_isolated_by_every_rank_and_dead_lettered(
    make_settings: Callable[..., Settings], tmp_path: Path, damaged: bool
) -> None:
    """Damaged: rank 0 damages the newest checkpoint just before the failure, so the
    roll-back moves it aside — once, by one rank — and every rank resumes from the one
    before it."""
    import os
    import socket
    import subprocess
    import sys

    from schemas.dead_letter import DeadLetter

    settings = ranks_settings(make_settings, tmp_path)
    events = make_events(160, n_users=24, n_items=40)
    events[130] = poison = events[130].model_copy(update={"item_id": "item-poison"})
    first, second = events[:100], events[100:]  # a checkpoint beyond the first one between
    send_raw(settings, [event_record(e) for e in first])
    config = write_config(tmp_path / "w.toml", settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tests = Path(__file__).resolve().parents[1]
    code = "import sys, ranks; sys.exit(ranks.run_poisoned_rank(*sys.argv[1:]))"
    ranks = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2"}
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join([str(tests), env.get("PYTHONPATH", "")])
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        log = (tmp_path / f"rank{rank}.log").open("wb")
        ranks.append(
            subprocess.Popen(
                [sys.executable, "-c", code, str(config), "item-poison", "yes" * damaged],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )

    def logs() -> str:
        return "".join((tmp_path / f"rank{r}.log").read_text() for r in range(2))

    try:
        wait_for(lambda: all_committed(settings), 240, "the first events committed")
        send_raw(settings, [event_record(e) for e in second])
        wait_for(lambda: all_committed(settings), 240, "every offset committed")
        assert all(r.poll() is None for r in ranks), logs()[-6000:]
        records = read_topic(settings, settings.topics.dead_letters, idle_s=2.0, expect=1)
        (dead,) = [DeadLetter.model_validate_json(r.value) for r in records]
        assert dead.code.value == "learner_rejected"
        assert dead.original_value is not None
        assert json.loads(dead.original_value)["item_id"] == "item-poison"
        source = next(
            r
            for r in read_topic(settings, settings.topics.events, expect=len(events))
            if json.loads(r.value)["item_id"] == "item-poison"
        )
        assert (dead.source.partition, dead.source.offset) == (source.partition, source.offset)
    finally:
        for r in ranks:
            r.send_signal(signal.SIGTERM)
        codes = [r.wait(60) for r in ranks]
    assert codes == [0, 0], logs()[-6000:]
    assert logs().count("rolling back to the newest checkpoint") == 2  # every rank, once
    assert settings.checkpoint.dir is not None
    moved = list(settings.checkpoint.dir.glob("quarantine-*"))
    assert len(moved) == damaged, moved
    check_every_event_once(settings, [e for e in events if e is not poison])


def test_ranks_refuse_a_learner_they_cannot_share(tmp_path: Path) -> None:
    from helpers import cli

    result = cli(
        "run", "--learner", "river-mf", "--metrics-port", "0", env={"WORLD_SIZE": "2", "RANK": "0"}
    )
    assert result.returncode == 2, result.stderr
    assert "ranks share one LLM learner" in result.stderr


def test_the_launcher_does_not_restart_ranks_that_bad_settings_stop(tmp_path: Path) -> None:
    from helpers import cli

    result = cli("run", "--world-size", "2", "--learner", "river-mf", "--metrics-port", "0", "-v")
    assert result.returncode == 2, result.stderr
    assert "restarting the group" not in result.stderr


def test_the_launcher_loads_neither_the_worker_nor_torch() -> None:
    """It waits on its ranks for as long as they run: its memory is not a learner's."""
    probe = "import sys, stream.launch; print({'torch', 'stream.worker'} & set(sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"


class _TwoRanksSaid:
    """A shard whose gathers hand back what two ranks said: first how rank 0's restore went
    (``rank_0``: [its error or None, whether a refusal]), then what each rank restored
    (``said``); ``sent`` keeps what this rank gave each gather."""

    def __init__(
        self,
        said: list[list[Any]],
        in_step: bool = True,
        rank: int = 0,
        rank_0: list[Any] | None = None,
    ) -> None:
        self.said, self._in_step, self.rank = said, in_step, rank
        self.rounds = [[rank_0 or [None, False], [None, False]], said]
        self.sent: list[Any] = []

    def gather_bytes(self, payload: bytes) -> list[bytes]:
        self.sent.append(json.loads(payload))
        return [json.dumps(s).encode() for s in self.rounds.pop(0)]

    def in_step(self) -> bool:
        return self._in_step


def test_every_rank_reads_from_the_start_where_any_rank_must(tmp_path: Path) -> None:
    """Where any rank is to read partitions from their start (restored behind a damaged
    checkpoint), every rank does; ranks that restored different checkpoints, or one
    checkpoint into different models, stop; when rank 0 cannot restore, the others do not
    try and stop with its reason."""
    from types import SimpleNamespace

    from stream.durable import WorkerFailed
    from stream.ranks import RankWorker

    for said, earliest in (
        ([[3, True], [3, False]], True),
        ([[3, False], [3, True]], True),
        ([[3, False], [3, False]], False),
    ):
        rank = SimpleNamespace(
            shard=_TwoRanksSaid(said),
            durable=SimpleNamespace(restored=3, from_earliest=said[0][1]),
            settings=SimpleNamespace(checkpoint=SimpleNamespace(dir=tmp_path)),
        )
        assert RankWorker._restore_rank_0_first(rank, lambda: "restored") == "restored"  # type: ignore[arg-type]
        assert rank.durable.from_earliest is earliest
    rank.shard = _TwoRanksSaid([[3, False], [2, False]])
    with pytest.raises(WorkerFailed, match="different checkpoints"):
        RankWorker._restore_rank_0_first(rank, lambda: "restored")  # type: ignore[arg-type]
    rank.shard = _TwoRanksSaid([[3, False], [3, False]], in_step=False)
    with pytest.raises(WorkerFailed, match="into different models"):
        RankWorker._restore_rank_0_first(rank, lambda: "restored")  # type: ignore[arg-type]

    def must_not_run() -> str:
        raise AssertionError("rank 1 restored although rank 0 could not")

    rank.shard = _TwoRanksSaid([], rank=1, rank_0=["WorkerFailed: 4 batches failed", False])
    with pytest.raises(WorkerFailed, match=r"rank 0 could not restore.*4 batches failed"):
        RankWorker._restore_rank_0_first(rank, must_not_run)  # type: ignore[arg-type]
    rank.shard = _TwoRanksSaid([], rank=1, rank_0=["StateLost: no intact checkpoint", True])
    with pytest.raises(CheckpointError, match=r"rank 0 could not restore.*StateLost"):
        RankWorker._restore_rank_0_first(rank, must_not_run)  # type: ignore[arg-type]

    def refuse() -> str:
        raise CheckpointError("made with different learner settings: history_len=20 (now 7)")

    rank.shard = shard = _TwoRanksSaid([])  # rank 0 tells the others, then raises its own
    with pytest.raises(CheckpointError, match="history_len=20"):
        RankWorker._restore_rank_0_first(rank, refuse)  # type: ignore[arg-type]
    assert shard.sent == [
        ["CheckpointError: made with different learner settings: history_len=20 (now 7)", True]
    ]

    def fail() -> str:
        raise WorkerFailed("no intact checkpoint to roll back to")

    rank.shard = shard = _TwoRanksSaid([])
    with pytest.raises(WorkerFailed, match="no intact checkpoint"):
        RankWorker._restore_rank_0_first(rank, fail)  # type: ignore[arg-type]
    assert shard.sent == [["WorkerFailed: no intact checkpoint to roll back to", False]]

    class _GroupGone(_TwoRanksSaid):
        def gather_bytes(self, payload: bytes) -> list[bytes]:
            raise RuntimeError("Connection closed by peer")

    rank.shard = _GroupGone([])  # rank 0's reason outlives the group it could not tell
    with pytest.raises(CheckpointError, match="history_len=20") as raised:
        RankWorker._restore_rank_0_first(rank, refuse)  # type: ignore[arg-type]
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_a_tick_carries_every_ranks_placements_and_the_earliest_wins() -> None:
    """Every rank learns every rank's records, so where the state began a partition is the
    same on every rank: whichever rank placed it, a roll-back on any rank reads it from
    there (``OffsetBook.adopt_placed``)."""
    from stream.ranks import exchange

    class TwoRanks:
        rank = 0

        def gather_bytes(self, payload: bytes) -> list[bytes]:
            head, docs = payload.split(b"\n", 1)
            other = json.loads(head)
            other["placed"] = [["ev", 1, 40], ["ev", 2, 9]]
            return [payload, json.dumps(other).encode() + b"\n" + docs]

    tick = exchange(TwoRanks(), [], {}, False, False, placed={("ev", 2): 5})  # type: ignore[arg-type]
    assert tick.placed == {("ev", 1): 40, ("ev", 2): 5}
