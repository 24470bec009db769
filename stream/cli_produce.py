"""``lorastream produce``: send events to the events topic, validated first."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from schemas.settings import Settings
from stream.cli_common import BootstrapOpt, ConfigOpt, err, fail, load_settings, out
from stream.clients import StreamSetupError
from stream.logs import setup_logging

__all__ = ["produce_app"]

produce_app = typer.Typer(
    help="Send events to the events topic (validated first).", no_args_is_help=True
)

RateOpt = Annotated[
    float | None, typer.Option(help="events per second (default: as fast as possible)")
]
SpeedupOpt = Annotated[
    float | None,
    typer.Option(help="replay with the events' original timing, sped up by this factor"),
]
TopicOpt = Annotated[str | None, typer.Option(help="events topic (default: topics.events)")]


def _settings(config: Path | None, bootstrap: str | None) -> Settings:
    settings = load_settings(config, bootstrap)
    setup_logging("text", secrets=settings.secrets())
    return settings


def _send(
    settings: Settings,
    topic: str | None,
    events: Iterator[Any],
    rate: float | None,
    speedup: float | None,
) -> int:
    from stream.clients import close_producer, make_producer
    from stream.sender import Pacer, send_events

    try:
        producer = make_producer(settings, compression_type=None)
    except StreamSetupError as exc:
        raise fail(str(exc)) from exc
    try:
        pacer = Pacer(rate=rate, original=speedup is not None, speedup=speedup or 1.0)
        return send_events(producer, topic or settings.topics.events, events, pacer)
    finally:
        close_producer(producer, 10)


@produce_app.command("jsonl")
def produce_jsonl(
    path: Annotated[Path, typer.Argument(help="JSON-lines file of events, or - for stdin")],
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    topic: TopicOpt = None,
    rate: RateOpt = None,
    speedup: SpeedupOpt = None,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            help="send the valid lines even if some are invalid (they are still reported)"
        ),
    ] = False,
) -> None:
    """Send events from a JSON-lines file in the project's schema. Every line is validated
    first; invalid lines are reported with their numbers and nothing is sent unless
    --skip-invalid."""
    from stream.sources.jsonl import LineError, read_jsonl

    settings = _settings(config, bootstrap)
    lines = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")
    with lines:
        parsed = list(read_jsonl(lines))
    bad = [x for _, x in parsed if isinstance(x, LineError)]
    for line_error in bad:
        err.print(f"[yellow]invalid[/] {line_error}")
    if bad and not skip_invalid:
        raise fail(
            f"{len(bad)} invalid line(s); nothing sent. Fix them, or pass --skip-invalid.", 1
        )
    events = (x for _, x in parsed if not isinstance(x, LineError))
    sent = _send(settings, topic, events, rate, speedup)
    out.print(f"sent {sent} events" + (f"; {len(bad)} invalid lines not sent" if bad else ""))
    if bad:
        raise typer.Exit(1)


@produce_app.command("synthetic")
def produce_synthetic(
    events: Annotated[int, typer.Option(help="how many events")] = 2000,
    users: Annotated[int, typer.Option(help="number of users")] = 60,
    items: Annotated[int, typer.Option(help="number of items")] = 400,
    change_at: Annotated[
        list[int] | None, typer.Option(help="event index of an abrupt interest change (repeatable)")
    ] = None,
    gradual_at: Annotated[
        list[int] | None,
        typer.Option(help="event index where a gradual change starts (repeatable)"),
    ] = None,
    gradual_width: Annotated[int, typer.Option(help="events a gradual change takes")] = 1000,
    change_share: Annotated[float, typer.Option(help="share of users who change")] = 0.5,
    seed: int = 0,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    topic: TopicOpt = None,
    rate: RateOpt = None,
    speedup: SpeedupOpt = None,
) -> None:
    """Send a seeded synthetic stream (topics, shifting interests, reviews)."""
    from stream.sources.synthetic import ChangePoint, SyntheticConfig, SyntheticStream

    settings = _settings(config, bootstrap)
    stream = SyntheticStream(
        SyntheticConfig(
            n_users=users,
            n_items=items,
            seed=seed,
            change_points=tuple(
                [ChangePoint(at, share=change_share) for at in change_at or []]
                + [
                    ChangePoint(at, share=change_share, gradual=True, width=gradual_width)
                    for at in gradual_at or []
                ]
            ),
        )
    )
    sent = _send(settings, topic, stream.events(events), rate, speedup)
    out.print(f"sent {sent} synthetic events")


def _done(sent: int, what: str, errors: list[Any], problem: str) -> None:
    """Report what was sent and what did not parse (exit status 1 if anything did not)."""
    for error in errors[:50]:
        err.print(f"[yellow]skipped[/] {error}")
    if len(errors) > 50:
        err.print(f"[yellow]... and {len(errors) - 50} more rows that did not parse[/]")
    out.print(f"sent {sent} {what}" + (f"; {len(errors)} {problem}" if errors else ""))
    if errors:
        raise typer.Exit(1)


LimitOpt = Annotated[int | None, typer.Option(help="send at most this many events")]


@produce_app.command("movielens")
def produce_movielens(
    folder: Annotated[Path, typer.Argument(help="a MovieLens folder (ml-latest* or ml-100k)")],
    tags: Annotated[bool, typer.Option(help="replay tags as review events")] = True,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    topic: TopicOpt = None,
    rate: RateOpt = None,
    speedup: SpeedupOpt = None,
) -> None:
    """Replay MovieLens ratings (and tags) in timestamp order; titles and genres as item text.
    Rows that do not parse are reported with file and line and not sent."""
    from stream.sources.movielens import MovieLens

    settings = _settings(config, bootstrap)
    try:
        movielens = MovieLens(folder, include_tags=tags)
    except FileNotFoundError as exc:
        raise fail(str(exc)) from exc
    sent = _send(settings, topic, movielens.events(limit), rate, speedup)
    _done(sent, "MovieLens events", movielens.errors, "rows did not parse")


@produce_app.command("amazon-reviews")
def produce_amazon(
    reviews: Annotated[Path, typer.Argument(help="reviews as JSON lines (.json or .json.gz)")],
    metadata: Annotated[
        Path | None, typer.Option(help="product metadata JSON lines, for item titles")
    ] = None,
    sort: Annotated[bool, typer.Option(help="sort by review time (reads the file first)")] = True,
    limit: LimitOpt = None,
    config: ConfigOpt = None,
    bootstrap: BootstrapOpt = None,
    topic: TopicOpt = None,
    rate: RateOpt = None,
    speedup: SpeedupOpt = None,
) -> None:
    """Replay Amazon product reviews (2014/2018 or 2023 layout) as rating events with their
    text. Lines that do not parse are reported with their number and not sent."""
    from stream.sources.amazon import AmazonReviews

    settings = _settings(config, bootstrap)
    source = AmazonReviews(reviews, metadata, sort=sort)
    sent = _send(settings, topic, source.events(limit), rate, speedup)
    _done(sent, "reviews", source.errors, "lines did not parse")


# -- recommend ---------------------------------------------------------------------------
