"""Suite ``speed``: how fast the LLM learner learns, alone and behind the real Kafka pipeline.

Parts (``--parts``, comma-separated):

``step``
    The bare learner step (``learn_many``) for the default model over batch sizes and
    item text lengths: events/s, backbone tokens/s, and model-FLOPs utilisation.
    FLOPs are estimated as ``4·N·T`` per trained token (forward ``2·N·T`` plus the
    backward pass to the activations ``2·N·T``; the frozen base needs no weight
    gradients, LoRA's are negligible) and ``2·N·T`` per forward-only token, with ``N``
    the backbone's non-embedding parameters. The peak is a measured large fp32 matmul
    on the same machine (stated in the results), not a datasheet number.
``pipeline``
    End-to-end events/s through the real local Kafka (produce → consume → validate →
    learn → vectors acknowledged → commit) divided by the bare step's events/s on the
    same events at the same batch shape; the share of the work thread's time per stage.
``backbone``
    The bare step on a randomly initialised backbone of a named architecture and size
    (``--backbone qwen2-0.5b``, ``learners/random_backbone.py``): events/s, tokens/s, MFU
    of a realistic size on any machine, downloading nothing. Not in the default parts.
``memory``
    Resident memory sampled over a long run with small state limits: it must stay flat
    once the buffers are full.

    python -m benchmarks speed [--parts step,pipeline,memory]

Event→vector latency under load, for every learner, is the ``freshness`` suite.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from benchmarks.harness import RESULTS_DIR, Row, bench_settings, write_results
from benchmarks.running import RunningWorker, create_topics, send, settings_environ
from schemas.events import InteractionEvent
from schemas.learner_config import LLMConfig, ReplayConfig
from schemas.settings import Settings
from schemas.vectors import SourcePosition

log = logging.getLogger(__name__)


def peak_flops() -> float:
    """Measured matmul FLOP/s on this machine (the MFU denominator): fp32 2048² on the CPU,
    bf16 8192² on CUDA (the size at which a Hopper GPU reaches its datasheet rate)."""
    cuda = torch.cuda.is_available()
    device, dtype, size = ("cuda", torch.bfloat16, 8192) if cuda else ("cpu", torch.float32, 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(5):
        _synchronize()
        t0 = time.perf_counter()
        torch.mm(a, b)
        _synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_name() -> str:
    if torch.cuda.is_available():
        return f"measured bf16 8192² matmul on {torch.cuda.get_device_name()}"
    return f"measured fp32 2048² matmul on {torch.get_num_threads()} CPU threads"


def text_events(n: int, tokens: int, seed: int = 0) -> list[InteractionEvent]:
    """Synthetic events whose item texts run to about ``tokens`` tokens."""
    from stream.sources.synthetic import SyntheticConfig, SyntheticStream

    stream = SyntheticStream(SyntheticConfig(n_users=500, n_items=3000, seed=seed))
    out = []
    for e in stream.events(n):
        assert e.item is not None
        description = (
            (e.item.description or "")
            + " "
            + " ".join(["with details about its make, use and story"] * (tokens // 8))
        )
        item = e.item.model_copy(update={"description": description[:2000]})
        out.append(e.model_copy(update={"item": item}))
    return out


def positions(start: int, n: int) -> list[SourcePosition]:
    return [SourcePosition(topic="bench", partition=0, offset=start + k) for k in range(n)]


@dataclass
class StepResult:
    events_per_s: float
    tokens_per_s: float
    train_tokens_per_s: float
    mfu: float


def bare_steps(
    config: LLMConfig,
    events: list[InteractionEvent],
    batch: int,
    warmup: int,
    measure: int,
    peak: float,
) -> StepResult:
    from learners.llm import LLMLearner

    learner = LLMLearner(config)
    for k in range(warmup):
        learner.learn_many(events[k * batch : (k + 1) * batch], positions(k * batch, batch))
    bb = learner.backbone
    trained0, encoded0 = bb.tokens_trained, bb.tokens_encoded
    t0 = time.perf_counter()
    done = 0
    for k in range(warmup, warmup + measure):
        chunk = events[k * batch : (k + 1) * batch]
        learner.learn_many(chunk, positions(k * batch, len(chunk)))
        done += len(chunk)
    _synchronize()
    elapsed = time.perf_counter() - t0
    trained, encoded = bb.tokens_trained - trained0, bb.tokens_encoded - encoded0
    n, n_bw = bb.non_embedding_parameters(), bb.backward_parameters()
    flops = 2 * n * (trained + encoded) + 2 * n_bw * trained
    return StepResult(
        done / elapsed, (trained + encoded) / elapsed, trained / elapsed, flops / elapsed / peak
    )


def part_step(args: argparse.Namespace, rows: list[Row], notes: list[str]) -> None:
    peak = peak_flops()
    from learners.backbone import load_backbone

    backbone = load_backbone(LLMConfig())
    n, n_bw = backbone.non_embedding_parameters(), backbone.backward_parameters()
    notes.append(
        f"MFU = (2·N·(T_trained + T_forward) + 2·N_bw·T_trained) / time / peak: every token"
        f" costs 2·N forward; tokens trained also cost 2·N_bw backward to the activations of"
        f" the adapted layers (4·N·T when every layer is adapted). N = {n:,} non-embedding"
        f" parameters of {LLMConfig().model}, N_bw = {n_bw:,} (top"
        f" {LLMConfig().lora_top_layers} layers); peak = {peak_name()}"
        f" = {peak / 1e9:.0f} GFLOP/s."
    )
    for tokens in args.token_lengths:
        events = text_events((args.warmup + args.measure) * max(args.batch_sizes), tokens)
        for batch in args.batch_sizes:
            config = LLMConfig(max_item_tokens=tokens, max_grad_items=batch)
            r = bare_steps(config, events, batch, args.warmup, args.measure, peak)
            rows += step_rows(f"learner step B={batch} T≤{tokens}", r)


def part_backbone(args: argparse.Namespace, rows: list[Row], notes: list[str]) -> None:
    """The bare step on a randomly initialised backbone of a named size (nothing downloaded),
    beside its ceiling: the adapted model's own forward and backward on the same tokens."""
    from learners.random_backbone import build_random_backbone

    peak = peak_flops()
    tokens = args.backbone_tokens
    with tempfile.TemporaryDirectory() as tmp:
        path = build_random_backbone(args.backbone, Path(tmp) / args.backbone)
        for batch in args.backbone_batch:
            config = LLMConfig(model=str(path), max_item_tokens=tokens, max_grad_items=batch)
            events = text_events((1 + args.backbone_steps) * batch, tokens)
            r = bare_steps(config, events, batch, 1, args.backbone_steps, peak)
            ceiling = model_steps(config, batch, tokens, args.backbone_steps, peak)
            rows += backbone_rows(args.backbone, batch, tokens, r, ceiling)
    precision = "bf16 autocast, fused AdamW" if torch.cuda.is_available() else "fp32"
    notes.append(
        f"{args.backbone}: the named shape with random weights and the bundled tokenizer's"
        f" vocabulary, {precision}; peak = {peak_name()} = {peak / 1e9:.0f} GFLOP/s. The"
        " model row is the ceiling: the adapted backbone's forward on B texts of T tokens and"
        " the backward through its adapted layers, nothing else."
    )


def step_rows(name: str, r: StepResult) -> list[Row]:
    """A measured step's rows (and its line in the log)."""
    log.info(
        "%s: %.2f events/s, %.0f tokens/s, MFU %.3f", name, r.events_per_s, r.tokens_per_s, r.mfu
    )
    return [
        Row(name, "synthetic", "events_per_s", r.events_per_s, "events/s"),
        Row(name, "synthetic", "tokens_per_s", r.tokens_per_s, "tokens/s"),
        Row(name, "synthetic", "train_tokens_per_s", r.train_tokens_per_s, "tokens/s"),
        Row(name, "synthetic", "mfu", r.mfu, "fraction"),
    ]


def backbone_rows(
    shape: str, batch: int, tokens: int, learner: StepResult, model: StepResult
) -> list[Row]:
    name = f"learner step {shape} (random weights) B={batch} T≤{tokens}"
    bare = f"model fwd+bwd {shape} (random weights) B={batch} T={tokens}"
    ratio = Row(name, "synthetic", "mfu_of_model_ceiling", learner.mfu / model.mfu, "fraction")
    return [*step_rows(name, learner), *step_rows(bare, model), ratio]


def model_steps(
    config: LLMConfig, batch: int, tokens: int, measure: int, peak: float
) -> StepResult:
    """The adapted backbone alone: forward on ``batch`` random texts of ``tokens`` tokens and the
    backward to the adapter, as the learner's step runs it (same autocast, same pooling)."""
    from learners.backbone import load_backbone

    bb = load_backbone(config)
    vocab = bb.tokenizer.vocab_size
    gen = torch.Generator().manual_seed(0)
    ids = [torch.randint(1, vocab, (tokens,), generator=gen).tolist() for _ in range(batch)]
    bb.encode(ids).sum().backward()  # type: ignore[no-untyped-call]  # warm-up
    _synchronize()
    t0 = time.perf_counter()
    for _ in range(measure):
        bb.encode(ids).sum().backward()  # type: ignore[no-untyped-call]
    _synchronize()
    elapsed = time.perf_counter() - t0
    trained = batch * tokens * measure
    flops = 2 * bb.non_embedding_parameters() * trained + 2 * bb.backward_parameters() * trained
    return StepResult(
        batch * measure / elapsed, trained / elapsed, trained / elapsed, flops / elapsed / peak
    )


def part_ranks(args: argparse.Namespace, rows: list[Row], notes: list[str]) -> None:
    """Data parallelism (``learners/data_parallel.py``) on this machine: the bare step of
    the default learner in one process, then over 2 gloo ranks of one thread each."""
    batch, steps = args.pipeline_batch, args.ranks_steps
    events = text_events((1 + steps) * batch, 32)
    ctx = multiprocessing.get_context("spawn")
    for world in (1, 2):
        port = _free_port()
        with ctx.Pool(world) as pool:
            results = pool.starmap(
                _rank_steps, [(r, world, port, events, batch, steps) for r in range(world)]
            )
        elapsed = max(r[0] for r in results)
        collective = max(r[1] for r in results)
        name = f"learner step, {world} rank{'s' if world > 1 else ''} B={batch} (global)"
        log.info(
            "%s: %.1f events/s, %.0f%% in collectives",
            name,
            steps * batch / elapsed,
            100 * collective / elapsed,
        )
        rows.append(Row(name, "synthetic", "events_per_s", steps * batch / elapsed, "events/s"))
        if world > 1:
            rows.append(
                Row(name, "synthetic", "collective_share", collective / elapsed, "fraction")
            )
    notes.append(
        f"ranks: {os.cpu_count()} CPU cores; 1 rank uses every core's thread, 2 ranks one thread"
        " each (gloo over loopback); every rank learns the same global batch of B events:"
        " host-side work is repeated on each rank, the backbone's rows are split. Collective"
        " share: the slowest rank's time in gathers and the all-reduce (waiting for the other"
        " rank included) over the run."
    )


def part_ranks_kafka(
    args: argparse.Namespace, bootstrap: str, root: Path, rows: list[Row], notes: list[str]
) -> None:
    """Events/s through the real broker: ``lorastream run`` as one worker, then as two ranks
    (``--world-size 2``), over the same events on a 2-partition topic, at the same global
    batch."""
    import subprocess
    import sys

    from stream.clients import make_admin

    batch, events = args.pipeline_batch, text_events(args.ranks_events, 32)
    for world in (1, 2):
        settings = Settings.isolated(
            f"ranks{world}",
            bootstrap,
            root,
            {},
            learner={"kind": "llm", "llm": {"max_item_tokens": 32, "max_grad_items": batch}},
            topics={"partitions": 2},
            batch={"max_events": batch // world, "max_wait_s": 0.05 if world > 1 else 1.0},
            checkpoint={"every_events": 2 * batch},
        )
        create_topics(settings)
        send(settings, events)
        env = {**os.environ, **settings_environ(settings)}
        command = [sys.executable, "-m", "stream.cli", "run", "--world-size", str(world)]
        with (root / f"ranks{world}.log").open("wb") as log_file:
            worker = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            admin = make_admin(settings)
            try:
                marks = _commit_marks(admin, settings, len(events), worker)
            finally:
                admin.close()
                worker.terminate()
                worker.wait(120)
        (t0, n0), (t1, n1) = marks[0], marks[-1]
        rate = (n1 - n0) / (t1 - t0)
        name = f"lorastream run --world-size {world} B={batch} (global)"
        log.info("%s: %.1f events/s through Kafka", name, rate)
        rows.append(Row(name, "synthetic", "events_per_s", rate, "events/s"))
    notes.append(
        "ranks through Kafka: events/s between the first and the last offset commit of a"
        f" backlog of {args.ranks_events} events on 2 partitions (commits follow"
        f" checkpoints every {2 * batch} events); one worker closes batches of B, two ranks"
        " step together every 50 ms with up to B/2 events each."
    )


def _commit_marks(
    admin: Any, settings: Settings, total: int, worker: Any
) -> list[tuple[float, int]]:
    """(time, events committed) at each change, until every event is committed."""
    from stream.clients import committed_offsets

    marks: list[tuple[float, int]] = []
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and worker.poll() is None:
        offsets = committed_offsets(admin, settings.consumer.group_id, settings.topics.events)
        done = sum(offsets.values())
        if done and (not marks or done != marks[-1][1]):
            marks.append((time.monotonic(), done))
        if done >= total:
            return marks
        time.sleep(0.1)
    raise RuntimeError(f"the workers committed {marks[-1][1] if marks else 0} of {total}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank_steps(
    rank: int, world: int, port: int, events: list[InteractionEvent], batch: int, steps: int
) -> tuple[float, float]:
    """One rank's share of ``steps`` global batches after one warm-up: (seconds, in
    collectives)."""
    import torch.distributed as dist

    from learners.data_parallel import Shard
    from learners.llm import LLMLearner

    shard = None
    if world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
        dist.init_process_group("gloo", f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        shard = Shard.current()
    learner = LLMLearner(LLMConfig(max_item_tokens=32, max_grad_items=batch), shard=shard)
    elapsed = 0.0
    for k in range(1 + steps):
        mine = events[k * batch : (k + 1) * batch][rank::world]
        if k == 1:  # after the warm-up step
            elapsed = -time.perf_counter()
            if shard is not None:
                shard.collective_s = 0.0
        if shard is None:
            learner.learn_many(mine, positions(k * batch, len(mine)))
        else:
            both = shard.gather_batch(mine, positions(k * batch, len(mine)))
            learner.learn_many(both.events, both.positions)
    elapsed += time.perf_counter()
    collective = shard.collective_s if shard is not None else 0.0
    if world > 1:
        dist.destroy_process_group()
    return elapsed, collective


# -- through Kafka ---------------------------------------------------------------------------


def worker_settings(
    bootstrap: str, root: Path, batch: int, llm: LLMConfig, overlap: str = "auto"
) -> Settings:
    settings: Settings = bench_settings(
        bootstrap,
        root,
        "speed",
        batch={"max_events": batch, "max_wait_s": 1.0},
        checkpoint={"every_events": 10_000, "every_s": 120.0},
        learner={"kind": "llm", "llm": llm.model_dump()},
        worker={"overlap_delivery": overlap},
    )
    return settings


def part_pipeline(
    args: argparse.Namespace,
    bootstrap: str,
    root: Path,
    rows: list[Row],
    notes: list[str],
) -> None:
    """The worker through Kafka, with delivery overlapped (the default) and without, beside
    the bare step on the same events."""
    batch = args.pipeline_batch
    events = text_events(args.pipeline_events, 32, seed=3)
    config = LLMConfig()
    bare = bare_steps(
        config, events, batch, warmup=0, measure=len(events) // batch, peak=peak_flops()
    )
    rows.append(
        Row(
            f"learner step B={batch} (same events)",
            "synthetic",
            "events_per_s",
            bare.events_per_s,
            "events/s",
        )
    )
    for overlap in ("auto", "off"):  # auto: on for this learner
        name = f"lorastream worker B={batch}" + ("" if overlap == "auto" else " (no overlap)")
        settings = worker_settings(bootstrap, root / overlap, batch, config, overlap)
        with RunningWorker(settings) as running:
            send(settings, events)  # all at once: the worker always finds full batches
            running.wait_for(len(events), 1800)
        stages = running.stage_seconds()
        e2e = running.rate_after_first_batch()
        efficiency = e2e / bare.events_per_s
        rows += [
            Row(name, "synthetic", "events_per_s", e2e, "events/s"),
            Row(name, "synthetic", "pipeline_efficiency", efficiency, "ratio"),
        ]
        total = sum(v for k, v in stages.items() if k != "poll") or 1.0
        for stage, seconds in sorted(stages.items()):
            if stage != "poll":
                share = seconds / total
                rows.append(Row(name, "synthetic", f"stage_share_{stage}", share, "fraction"))
        notes.append(
            f"pipeline{name.removeprefix(f'lorastream worker B={batch}')}: {e2e:.1f} events/s"
            f" through Kafka vs {bare.events_per_s:.1f} events/s for the bare step on the same"
            f" {len(events)} events at B={batch} (efficiency {efficiency:.2f}); stage shares"
            " exclude time waiting in poll."
        )


def memory_in_child(args: argparse.Namespace) -> tuple[list[Row], list[str]]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    rows: list[Row] = []
    notes: list[str] = []
    part_memory(args, rows, notes)
    return rows, notes


def part_memory(args: argparse.Namespace, rows: list[Row], notes: list[str]) -> None:
    from learners.llm import LLMLearner

    config = LLMConfig(
        max_users=300,
        max_items=1000,
        history_len=10,
        replay=ReplayConfig(capacity=2000, max_bytes=2_000_000),
    )
    learner = LLMLearner(config)
    process = psutil.Process()
    batch, samples = 64, []
    from stream.sources.synthetic import SyntheticConfig, SyntheticStream

    stream = SyntheticStream(SyntheticConfig(n_users=3000, n_items=5000, seed=9))
    events = stream.events(args.memory_events)
    chunk: list[InteractionEvent] = []
    seen = 0
    for e in events:
        chunk.append(e)
        if len(chunk) == batch:
            learner.learn_many(chunk, positions(seen, batch))
            seen += batch
            chunk = []
            if (seen // batch) % 10 == 0:
                samples.append((seen, process.memory_info().rss))
    xs, rss = np.array([s for s, _ in samples]), np.array([r for _, r in samples])
    half = len(rss) // 2
    growth = (rss[half:].max() - rss[half]) / rss[half]
    name = "lorastream learner (bounded state)"
    rows += [
        Row(name, "synthetic", "rss_bytes_max", float(rss.max()), "bytes"),
        Row(name, "synthetic", "rss_growth_second_half", float(growth), "fraction"),
    ]
    if torch.cuda.is_available():
        gpu = float(torch.cuda.max_memory_allocated())
        rows.append(Row(name, "synthetic", "gpu_bytes_max", gpu, "bytes"))
    notes.append(
        f"memory: {args.memory_events} events through a learner bounded at 300 users,"
        f" 1000 items, 2000 replay examples (MALLOC_ARENA_MAX=2); RSS {rss[0] / 2**20:.0f} → "
        f"{rss.max() / 2**20:.0f} MiB, growth over the second half {growth:.1%}."
    )
    plot_memory(xs, rss, RESULTS_DIR / "speed-memory.png")


def plot_memory(xs: np.ndarray, rss: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(xs, rss / 2**20)
    ax.set(title="resident memory, bounded state", xlabel="events learned", ylabel="MiB")
    ax.set_ylim(bottom=0)  # growth shown to scale
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot_steps(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [
        r
        for r in rows
        if r.contender.startswith("learner step B=")
        and "T≤" in r.contender
        and r.metric == "events_per_s"
    ]
    if not steps:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    by_t: dict[str, list[tuple[int, float]]] = {}
    for r in steps:
        b, t = r.contender.split("B=")[1].split(" T≤")
        by_t.setdefault(t, []).append((int(b), r.value))
    for t, points in sorted(by_t.items(), key=lambda x: int(x[0])):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"T≤{t}")
    ax.set(xscale="log", title="bare learner step", xlabel="batch size", ylabel="events/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks speed")
    parser.add_argument("--parts", default="step,pipeline,memory")
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[16, 64, 256]
    )
    parser.add_argument(
        "--token-lengths", type=lambda s: [int(x) for x in s.split(",")], default=[32, 128]
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--measure", type=int, default=4)
    parser.add_argument("--backbone", default="qwen2-0.5b", help="shape for the backbone part")
    parser.add_argument(
        "--backbone-batch", type=lambda s: [int(x) for x in s.split(",")], default=[16]
    )
    parser.add_argument("--backbone-tokens", type=int, default=32)
    parser.add_argument("--backbone-steps", type=int, default=2)
    parser.add_argument("--pipeline-batch", type=int, default=64)
    parser.add_argument("--ranks-steps", type=int, default=6)
    parser.add_argument("--ranks-events", type=int, default=1536)
    parser.add_argument("--pipeline-events", type=int, default=1280)
    parser.add_argument("--memory-events", type=int, default=24_000)
    parser.add_argument("--bootstrap-servers", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("learners.backbone", "stream", "kafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    parts = args.parts.split(",")
    rows: list[Row] = []
    notes: list[str] = []
    with ExitStack() as stack:
        if "step" in parts:
            part_step(args, rows, notes)
        if "backbone" in parts:
            part_backbone(args, rows, notes)
        if "ranks" in parts:
            part_ranks(args, rows, notes)
        if "pipeline" in parts or "ranks" in parts:
            from deploy.kafka import LocalKafka

            bootstrap = (
                args.bootstrap_servers or stack.enter_context(LocalKafka()).bootstrap_servers
            )
            root = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            if "pipeline" in parts:
                part_pipeline(args, bootstrap, root, rows, notes)
            if "ranks" in parts:
                part_ranks_kafka(args, bootstrap, root, rows, notes)
        if "memory" in parts:
            # a fresh process, so that the other parts' allocations do not hide the curve, with
            # glibc's arenas capped as in the container image (deploy/Dockerfile)
            os.environ.setdefault("MALLOC_ARENA_MAX", "2")
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                memory_rows, memory_notes = pool.apply(memory_in_child, (args,))
            rows += memory_rows
            notes += memory_notes
    plot_steps(rows, RESULTS_DIR / "speed-steps.png")
    suite = "speed" if set(parts) == {"step", "pipeline", "memory"} else "speed-" + "-".join(parts)
    suite += "-cuda" if torch.cuda.is_available() else ""  # GPU figures beside, not over, CPU's
    write_results(
        suite, {k: v for k, v in vars(args).items() if k != "bootstrap_servers"}, rows, notes
    )
    return 0
