"""Replay of Amazon product reviews (JSON lines, plain or gzipped), in time order.

Both published layouts are read, line by line:

- 2014/2018 (McAuley et al.): ``reviewerID``, ``asin``, ``overall``, ``reviewText``,
  ``summary``, ``unixReviewTime``;
- 2023 (Amazon Reviews'23): ``user_id``, ``parent_asin`` (or ``asin``), ``rating``,
  ``title``, ``text``, ``timestamp`` (milliseconds).

Every review becomes a ``rating`` event whose ``review_text`` is the summary/title and
the text. Optional product metadata (``asin``/``parent_asin`` with ``title``,
``categories``/``category``/``main_category``, ``description``; the 2014 files'
Python-literal lines included) gives the item text. Lines that do not parse are reported
with their number.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.events import EventType, InteractionEvent, ItemText
from stream.sources.base import LineError, open_text

__all__ = ["AmazonReviews"]


def _loads(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return ast.literal_eval(line)  # the 2014 metadata files hold Python literals


def _join(value: Any) -> str:
    if isinstance(value, list):
        return " ".join(_join(v) for v in value)
    return str(value) if value is not None else ""


def _categories(meta: dict[str, Any]) -> list[str]:
    raw = meta.get("categories") or meta.get("category") or []
    flat: list[str] = []
    for entry in raw if isinstance(raw, list) else [raw]:
        flat.extend(entry if isinstance(entry, list) else [entry])
    if meta.get("main_category"):
        flat.insert(0, meta["main_category"])
    seen = dict.fromkeys(str(c)[:64] for c in flat if str(c).strip())
    return list(seen)[:16]


class AmazonReviews:
    """A reviews file (and optional metadata file) as a time-ordered event stream.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "r.json").write_text(
    ...     '{"reviewerID": "A1", "asin": "B7", "overall": 5.0, "summary": "Great",'
    ...     ' "reviewText": "Works well", "unixReviewTime": 1400000000}\\n'
    ...     '{"user_id": "A2", "parent_asin": "B7", "rating": 2, "title": "Meh", "text": "",'
    ...     ' "timestamp": 1300000000000}\\nnot json\\n')
    >>> _ = (d / "m.json").write_text("{'asin': 'B7', 'title': 'Kettle', 'categories': "
    ...                               "[['Home', 'Kitchen']]}\\n")
    >>> reviews = AmazonReviews(d / "r.json", d / "m.json")
    >>> [(e.user_id, e.value, e.review_text, e.item.title) for e in reviews.events()]
    [('A2', 2.0, 'Meh', 'Kettle'), ('A1', 5.0, 'Great. Works well', 'Kettle')]
    >>> print(reviews.errors[0])
    r.json:3: not JSON: Expecting value: line 1 column 1 (char 0)
    """

    def __init__(self, reviews: Path, metadata: Path | None = None, sort: bool = True) -> None:
        self.path, self.sort = Path(reviews), sort
        self.errors: list[LineError] = []
        self.items = self._metadata(Path(metadata)) if metadata else {}

    def _metadata(self, path: Path) -> dict[str, ItemText]:
        items: dict[str, ItemText] = {}
        with open_text(path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    meta = _loads(line)
                    asin = meta.get("parent_asin") or meta["asin"]
                    items[str(asin)] = ItemText(
                        title=_join(meta.get("title"))[:300] or None,
                        description=_join(meta.get("description"))[:2000] or None,
                        categories=_categories(meta),
                    )
                except (ValueError, SyntaxError, KeyError, TypeError, ValidationError) as exc:
                    self.errors.append(LineError(path.name, number, f"bad metadata: {exc}"))
        return items

    def _reviews(self) -> Iterator[tuple[float, int, InteractionEvent]]:
        with open_text(self.path) as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    review = json.loads(line)
                except ValueError as exc:
                    self.errors.append(LineError(self.path.name, number, f"not JSON: {exc}"))
                    continue
                try:
                    yield self._event(review, number)
                except (KeyError, TypeError, ValueError, ValidationError) as exc:
                    self.errors.append(
                        LineError(self.path.name, number, f"not a review we can read: {exc}")
                    )

    def _event(self, r: dict[str, Any], number: int) -> tuple[float, int, InteractionEvent]:
        if "reviewerID" in r:  # 2014/2018
            user, item, rating = r["reviewerID"], r["asin"], r["overall"]
            heading, body, ts = r.get("summary"), r.get("reviewText"), float(r["unixReviewTime"])
        else:  # 2023
            user, item, rating = r["user_id"], r.get("parent_asin") or r["asin"], r["rating"]
            heading, body, ts = r.get("title"), r.get("text"), float(r["timestamp"]) / 1000.0
        text = ". ".join(p.strip() for p in (heading or "", body or "") if p and p.strip())
        event = InteractionEvent(
            event_id=f"az-{user}-{item}-{int(ts)}",
            user_id=str(user),
            item_id=str(item),
            event_type=EventType.RATING,
            value=min(5.0, max(1.0, float(rating))),
            review_text=text[:4000] or None,
            timestamp=datetime.fromtimestamp(ts, UTC),
            item=self.items.get(str(item)),
        )
        return ts, number, event

    def events(self, limit: int | None = None) -> Iterator[InteractionEvent]:
        """Reviews as events, in time order (file order when ``sort=False``)."""
        rows: Iterator[tuple[float, int, InteractionEvent]] = self._reviews()
        if self.sort:
            rows = iter(sorted(rows, key=lambda x: (x[0], x[1])))
        for n, (_, _, event) in enumerate(rows):
            if limit is not None and n >= limit:
                return
            yield event
