"""What every event source shares: its error records and how it opens files."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = ["LineError", "open_text"]


@dataclass(frozen=True)
class LineError:
    """A line (or row) a source could not turn into an event, and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.reason}"
            if self.file
            else f"line {self.line}: {self.reason}"
        )


def open_text(path: Path) -> IO[str]:
    """A UTF-8 text file, gunzipped on the fly when its name ends in .gz."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")
