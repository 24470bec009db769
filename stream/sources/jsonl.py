"""Events from JSON lines in the project's schema (a file, or standard input).

Every line is validated; a bad line is reported with its number and reason,
never dropped silently.

>>> import io
>>> lines = io.StringIO('{"event_id":"e1","user_id":"u","item_id":"i","event_type":"click",'
...                     '"timestamp":"2026-01-01T00:00:00Z"}\\n\\nnot json\\n')
>>> [(n, type(x).__name__) for n, x in read_jsonl(lines)]
[(1, 'InteractionEvent'), (3, 'LineError')]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from pydantic import ValidationError

from schemas.events import InteractionEvent
from stream.sources.base import LineError

__all__ = ["LineError", "read_jsonl"]


def read_jsonl(lines: Iterable[str]) -> Iterator[tuple[int, InteractionEvent | LineError]]:
    """``(line number, event or error)`` for every non-blank line."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, InteractionEvent.model_validate_json(line)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[:3]
            reason = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(line)'}: {e['msg']}" for e in first
            )
            yield number, LineError("", number, reason)
