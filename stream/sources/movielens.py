"""Replay of MovieLens data in its published formats, in timestamp order.

Two layouts are read: the ml-latest family (``ratings.csv``, ``movies.csv``,
optionally ``tags.csv``) and ML-100K (``u.data``, ``u.item``). Ratings become
``rating`` events (explicit feedback, value 0.5-5 clipped to 1-5), tags become
``review`` events carrying the tag as text, and every event carries the movie's
title and genres as item text. Rows that do not parse are reported with their
file and line number, never skipped silently.
"""

from __future__ import annotations

import csv
import heapq
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from schemas.events import EventType, InteractionEvent, ItemText
from stream.sources.base import LineError

__all__ = ["MovieLens"]

ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


class MovieLens:
    """A MovieLens folder (either layout) as a time-ordered event stream.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "movies.csv").write_text('movieId,title,genres\\n1,"Toy Story (1995)",'
    ...                                    'Animation|Comedy\\n')
    >>> _ = (d / "ratings.csv").write_text("userId,movieId,rating,timestamp\\n"
    ...                                     "7,1,4.5,964982703\\n7,1,x,964982704\\n")
    >>> ml = MovieLens(d)
    >>> [(e.user_id, e.value, e.item.title) for e in ml.events()]
    [('7', 4.5, 'Toy Story (1995)')]
    >>> print(ml.errors[0])
    ratings.csv:3: rating is not a number: could not convert string to float: 'x'
    """

    def __init__(self, folder: Path, include_tags: bool = True) -> None:
        self.folder = Path(folder)
        self.include_tags = include_tags
        self.errors: list[LineError] = []
        if (self.folder / "ratings.csv").is_file():
            self.layout = "latest"
        elif (self.folder / "u.data").is_file():
            self.layout = "100k"
        else:
            raise FileNotFoundError(
                f"{self.folder} holds neither ratings.csv (ml-latest layout) nor u.data"
                " (ML-100K layout)"
            )
        self.items = self._movies()

    def _movies(self) -> dict[str, ItemText]:
        items: dict[str, ItemText] = {}
        if self.layout == "latest":
            with (self.folder / "movies.csv").open(encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    genres = [
                        g for g in row["genres"].split("|") if g and g != "(no genres listed)"
                    ]
                    items[row["movieId"]] = ItemText(
                        title=row["title"][:300], categories=genres[:16]
                    )
        else:
            with (self.folder / "u.item").open(encoding="latin-1") as f:
                for line in f:
                    parts = line.rstrip("\n").split("|")
                    if len(parts) < 5 + len(ML100K_GENRES):
                        continue
                    flags = parts[5 : 5 + len(ML100K_GENRES)]
                    genres = [g for g, on in zip(ML100K_GENRES, flags, strict=True) if on == "1"]
                    items[parts[0]] = ItemText(title=parts[1][:300], categories=genres)
        return items

    def _ratings(self) -> Iterator[tuple[float, int, InteractionEvent]]:
        if self.layout == "latest":
            path, rows = self.folder / "ratings.csv", self._csv_rows("ratings.csv")
        else:
            path, rows = self.folder / "u.data", self._tsv_rows("u.data")
        for line, (user, movie, rating, stamp) in rows:
            try:
                ts, value = float(stamp), min(5.0, max(1.0, float(rating)))
            except ValueError as exc:
                self.errors.append(LineError(path.name, line, f"rating is not a number: {exc}"))
                continue
            yield (
                ts,
                line,
                self._event(
                    f"ml-r-{user}-{movie}-{int(ts)}", user, movie, EventType.RATING, ts, value=value
                ),
            )

    def _tags(self) -> Iterator[tuple[float, int, InteractionEvent]]:
        if self.layout != "latest" or not self.include_tags:
            return
        if not (self.folder / "tags.csv").is_file():
            return
        for line, (user, movie, tag, stamp) in self._csv_rows("tags.csv"):
            try:
                ts = float(stamp)
            except ValueError as exc:
                self.errors.append(LineError("tags.csv", line, f"bad timestamp: {exc}"))
                continue
            if tag.strip():
                yield (
                    ts,
                    line,
                    self._event(
                        f"ml-t-{user}-{movie}-{int(ts)}-{line}",
                        user,
                        movie,
                        EventType.REVIEW,
                        ts,
                        review=tag.strip()[:4000],
                    ),
                )

    def _csv_rows(self, name: str) -> Iterator[tuple[int, list[str]]]:
        with (self.folder / name).open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            next(reader, None)
            for line, row in enumerate(reader, start=2):
                if len(row) != 4:
                    self.errors.append(LineError(name, line, f"expected 4 columns, got {len(row)}"))
                    continue
                yield line, row

    def _tsv_rows(self, name: str) -> Iterator[tuple[int, list[str]]]:
        with (self.folder / name).open(encoding="utf-8") as f:
            for line, text in enumerate(f, start=1):
                row = text.split()
                if len(row) != 4:
                    self.errors.append(LineError(name, line, f"expected 4 columns, got {len(row)}"))
                    continue
                yield line, row

    def _event(
        self,
        event_id: str,
        user: str,
        movie: str,
        kind: EventType,
        ts: float,
        value: float | None = None,
        review: str | None = None,
    ) -> InteractionEvent:
        return InteractionEvent(
            event_id=event_id,
            user_id=user,
            item_id=movie,
            event_type=kind,
            value=value,
            review_text=review,
            timestamp=datetime.fromtimestamp(ts, UTC),
            item=self.items.get(movie),
        )

    def events(self, limit: int | None = None) -> Iterator[InteractionEvent]:
        """Ratings (and tags) merged in timestamp order (file order breaks ties)."""
        ratings = sorted(self._ratings(), key=lambda x: (x[0], x[1]))
        tags = sorted(self._tags(), key=lambda x: (x[0], x[1]))
        merged = heapq.merge(ratings, tags, key=lambda x: x[0])
        for n, (_, _, event) in enumerate(merged):
            if limit is not None and n >= limit:
                return
            yield event
