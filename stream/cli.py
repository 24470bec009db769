"""The ``lorastream`` command line."""

from __future__ import annotations

import faulthandler
import json
import os
import signal
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from schemas.settings import Settings
from schemas.vector_wire import MAGIC, decode_vector
from stream.cli_common import (
    BootstrapOpt,
    ConfigOpt,
    DebugKafkaOpt,
    VerboseOpt,
    fail,
    load_settings,
    out,
)
from stream.cli_produce import produce_app
from stream.clients import StreamSetupError
from stream.logs import setup_logging

__all__ = ["app", "main"]

app = typer.Typer(
    help="lorastream: keep a recommender's LLM up to date with what users do.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(produce_app, name="produce")
topics_app = typer.Typer(help="Manage lorastream's topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

# -- run ---------------------------------------------------------------------------------


@app.command()
def run(
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    learner: Annotated[str | None, typer.Option(help="learner kind (llm, river-mf)")] = None,
    model: Annotated[
        str | None, typer.Option(help="Hugging Face model id or path for the llm learner")
    ] = None,
    checkpoint_dir: Annotated[Path | None, typer.Option(help="checkpoint directory")] = None,
    allow_fresh_start: Annotated[
        bool | None,
        typer.Option(
            "--allow-fresh-start",
            help="start a fresh learner although the group has consumed before and no intact"
            " checkpoint exists (the events before its committed offsets are never learned)",
        ),
    ] = None,
    group: Annotated[str | None, typer.Option(help="consumer group id")] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="address of /metrics and the health checks")
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus/health port")] = None,
    history: Annotated[
        Path | None, typer.Option(help="append one JSON line per batch here (for `report`)")
    ] = None,
    world_size: Annotated[
        int,
        typer.Option(
            min=1,
            help="run N ranks of one LLM learner on this machine (they share"
            " --checkpoint-dir); under torchrun or a job that sets RANK, leave it out",
        ),
    ] = 1,
    max_restarts: Annotated[
        int, typer.Option(min=0, help="with --world-size: restarts of the group after a failure")
    ] = 3,
    verbose: VerboseOpt = False,
    debug_kafka: DebugKafkaOpt = False,
) -> None:
    """Run the stream worker until SIGTERM/SIGINT (then finish the batch, checkpoint, commit).

    Exit status: 0 stopped cleanly; 1 stopped on an invalid record (worker.on_invalid=stop);
    2 bad settings or setup (broker, topics, permissions, checkpoints that do not fit);
    3 shutdown took longer than worker.shutdown_timeout_s; 4 failed while running (nothing
    past the newest checkpoint was committed). With --world-size: the ranks' worst."""
    learner_section: dict[str, Any] = {"kind": learner}
    if model:
        learner_section["llm"] = {"model": model}
    settings = load_settings(
        config,
        bootstrap,
        learner=learner_section,
        checkpoint={"dir": checkpoint_dir, "allow_fresh_start": allow_fresh_start},
        consumer={"group_id": group},
        metrics={"host": metrics_host, "port": metrics_port},
    )
    setup_logging(settings.worker.log_format, verbose, settings.secrets(), debug_kafka)
    # `kill -USR1 <pid>`: every thread's stack on stderr, for a worker that seems stuck
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    if world_size > 1:
        from stream.launch import launch

        raise typer.Exit(launch(_rank_args(), world_size, max_restarts))
    raise typer.Exit(run_worker(settings, history))


def _rank_args() -> list[str]:
    """This command's options, less the launcher's own (each rank runs the rest)."""
    import sys

    args, skip = [], False
    for arg in sys.argv[2:]:
        if skip:
            skip = False
        elif arg in ("--world-size", "--max-restarts"):
            skip = True
        elif not arg.startswith(("--world-size=", "--max-restarts=")):
            args.append(arg)
    return args


def run_worker(settings: Settings, history: Path | None = None) -> int:
    """Run a worker until SIGTERM/SIGINT; its exit status."""
    from stream.app import App

    return int(App(settings, history=history).run())


@app.command()
def recommend(
    user: Annotated[str, typer.Option("--user", "-u", help="the user id")],
    k: Annotated[int, typer.Option("-k", help="how many items")] = 10,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="read a checkpoint directory instead of the vector topics"),
    ] = None,
    include_seen: Annotated[
        bool, typer.Option("--include-seen", help="also rank items the user consumed")
    ] = False,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """A user's current top-k items from the newest vectors, with their text; items the
    user already consumed are left out (``--include-seen`` shows them)."""
    from rich.table import Table

    from stream.recommend import VectorIndex

    settings = load_settings(config, bootstrap)
    setup_logging("text", secrets=settings.secrets())
    key = settings.privacy.pseudonymize_key
    if key is not None:  # the worker keys users by their pseudonym
        from stream.privacy import Pseudonymizer

        user = Pseudonymizer(key.get_secret_value())(user)
    try:
        index = (
            VectorIndex.from_checkpoint(checkpoint, settings, user)
            if checkpoint
            else VectorIndex.from_topics(settings)
        )
    except (FileNotFoundError, StreamSetupError, TimeoutError) as exc:
        raise fail(str(exc)) from exc
    if user not in index.users:
        raise fail(f"no vector for user {user!r} (yet): has the worker seen their events?", 1)
    doc = index.user_docs.get(user, {})
    table = Table(
        title=f"top {k} for {user}"
        + (
            f" (as of event {doc['last_event_id']}, {doc.get('model_version')})"
            if doc.get("last_event_id")
            else ""
        )
    )
    for column in ("rank", "item", "score", "text"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for rank, rec in enumerate(index.top_k(user, k, include_seen), start=1):
        table.add_row(str(rank), rec.item_id, f"{rec.score:.3f}", rec.text or "")
    out.print(table)


@app.command()
def adapter(
    out: Annotated[Path, typer.Argument(help="directory to write the adapter's files to")],
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
) -> None:
    """Write the newest LoRA adapter published on ``topics.adapters`` to OUT, in PEFT's
    format (load it with ``PeftModel.from_pretrained(base, OUT)`` or ``load_adapter``)."""
    from stream.adapters import AdapterIncomplete, read_adapter

    settings = load_settings(config, bootstrap)
    setup_logging("text", secrets=settings.secrets())
    try:
        manifest = read_adapter(settings, out)
    except (AdapterIncomplete, StreamSetupError, TimeoutError) as exc:
        raise fail(str(exc)) from exc
    out_files = ", ".join(sorted(manifest.files))
    typer.echo(f"{manifest.model_version} ({manifest.checkpoint}) -> {out}: {out_files}")


# -- tail --------------------------------------------------------------------------------


@app.command()
def tail(
    what: Annotated[
        str,
        typer.Argument(help="user-vectors, item-vectors, dead-letters, events, or a topic name"),
    ] = "user-vectors",
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    from_beginning: Annotated[bool, typer.Option(help="start at the oldest record")] = False,
    max_records: Annotated[int | None, typer.Option("--max", help="stop after N records")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="stop after S seconds without records")
    ] = None,
) -> None:
    """Print records of a topic as JSON lines (vectors shortened to their first entries)."""
    from kafka import KafkaConsumer, TopicPartition

    settings = load_settings(config, bootstrap)
    setup_logging("text", secrets=settings.secrets())
    t = settings.topics
    topic = {
        "user-vectors": t.user_vectors,
        "item-vectors": t.item_vectors,
        "dead-letters": t.dead_letters,
        "events": t.events,
    }.get(what, what)
    tps = [TopicPartition(topic, p) for p in _partitions_of(settings, topic)]
    consumer = KafkaConsumer(**settings.kafka.client_kwargs(), enable_auto_commit=False)
    consumer.assign(tps)
    if from_beginning:
        consumer.seek_to_beginning(*tps)
    else:
        consumer.seek_to_end(*tps)
    try:
        _print_records(consumer, max_records, timeout)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


def _partitions_of(settings: Settings, topic: str) -> list[int]:
    from stream.clients import make_admin

    try:
        admin = make_admin(settings)
    except StreamSetupError as exc:
        raise fail(str(exc)) from exc
    try:
        described = admin.describe_topics([topic])
    finally:
        admin.close()
    parts = [
        p["partition_index"]
        for d in described
        if d.get("name") == topic and not d.get("error_code")
        for p in d.get("partitions") or []
    ]
    if not parts:
        raise fail(f"topic {topic!r} does not exist")
    return parts


def _print_records(consumer: Any, max_records: int | None, timeout: float | None) -> None:
    """Until ``max_records`` are shown or none came for ``timeout`` seconds."""
    shown, idle_since = 0, time.monotonic()
    while max_records is None or shown < max_records:
        polled = consumer.poll(timeout_ms=500)
        if not polled:
            if timeout is not None and time.monotonic() - idle_since > timeout:
                return
            continue
        idle_since = time.monotonic()
        for records in polled.values():
            for r in records:
                out.print(_render(r), soft_wrap=True, highlight=False, markup=False)
                shown += 1


def _render(record: Any) -> str:
    try:
        doc = decode_vector(record.value) if record.value[:4] == MAGIC else json.loads(record.value)
    except (ValueError, TypeError):
        return json.dumps(
            {
                "partition": record.partition,
                "offset": record.offset,
                "raw": repr(record.value)[:200],
            }
        )
    if isinstance(doc, dict) and isinstance(doc.get("vector"), list):
        doc["vector"] = doc["vector"][:4] + (["..."] if len(doc["vector"]) > 4 else [])
    if isinstance(doc, dict) and isinstance(doc.get("original_value"), str):
        doc["original_value"] = doc["original_value"][:60]
    return json.dumps(
        {"partition": record.partition, "offset": record.offset, **doc}
        if isinstance(doc, dict)
        else doc
    )


# -- topics and the local broker -------------------------------------------------------------


@topics_app.command("create")
def topics_create(config: ConfigOpt = None, bootstrap: BootstrapOpt = None) -> None:
    """Create the events topic and the output topics where they do not exist."""
    from stream.clients import ensure_output_topics, make_admin

    settings = load_settings(config, bootstrap)
    try:
        admin = make_admin(settings)
        try:
            created = ensure_output_topics(admin, settings, include_events=True)
        finally:
            admin.close()
    except StreamSetupError as exc:
        raise fail(str(exc)) from exc
    out.print("created: " + (", ".join(created) if created else "nothing (all exist)"))


@app.command()
def kafka(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="keep the broker's data here; starting again on it serves the same topics,"
            " offsets and groups at the same address (default: a temporary directory)"
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="client port (default: free, or the recorded one)")] = 0,
) -> None:
    """Run a local single-node Apache Kafka (KRaft) until Ctrl-C; prints its address."""
    from deploy.kafka import KafkaSetupError, LocalKafka

    try:
        with LocalKafka(workdir=data_dir, port=port) as broker:
            out.print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
            signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    except KafkaSetupError as exc:
        raise fail(str(exc)) from exc


@app.command()
def report(
    out: Annotated[Path, typer.Option(help="PNG to write")] = Path("lorastream-report.png"),
    history: Annotated[
        Path | None, typer.Option(help="a history file written by `run --history`")
    ] = None,
    prometheus: Annotated[
        str | None, typer.Option(help="Prometheus URL, e.g. http://localhost:9090")
    ] = None,
    minutes: Annotated[float, typer.Option(help="how far back (with --prometheus)")] = 60.0,
) -> None:
    """Render a run's throughput, latency, learning quality, lag and drift to a PNG."""
    from stream.report import from_history, from_prometheus, render

    if (history is None) == (prometheus is None):
        raise fail("give exactly one of --history or --prometheus")
    try:
        if history is not None:
            from stream.history import load_history

            series = from_history(load_history(history))
        else:
            assert prometheus is not None
            series = from_prometheus(prometheus, minutes)
    except (OSError, RuntimeError, ValueError) as exc:
        raise fail(f"cannot read the run: {exc}") from exc
    if not series.lines:
        raise fail("the run has no data points yet")
    out.parent.mkdir(parents=True, exist_ok=True)
    render(series, out)
    console_path = out.resolve()
    typer.echo(f"wrote {console_path}")


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="how many events to stream")] = 2000,
    rate: Annotated[float, typer.Option(help="events per second")] = 30.0,
    bootstrap: BootstrapOpt = None,
    learner: Annotated[str | None, typer.Option(help="learner kind (llm, river-mf)")] = None,
    out: Annotated[Path | None, typer.Option(help="run directory (default runs/demo-*)")] = None,
    live: Annotated[bool, typer.Option(help="live terminal view")] = True,
) -> None:
    """Start a local Kafka (unless KAFKA_BOOTSTRAP_SERVERS is set), stream a synthetic
    stream with shifting interests through the worker, and watch it learn."""
    from stream.demo import run_demo

    raise typer.Exit(
        run_demo(
            events=events, rate=rate, bootstrap=bootstrap, learner=learner, out_dir=out, live=live
        )
    )


def main() -> None:
    # the worker process owns its environment; a library user's process keeps its own
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
