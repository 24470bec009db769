"""Logging for lorastream processes: readable text, or one JSON object per line.

Every handler redacts the secrets of the settings (SASL and key-store passwords, the
pseudonymisation key) wherever they appear — in messages, arguments and tracebacks.
``verbose`` turns on lorastream's own debug lines; the Kafka client's protocol
logging (which prints its configuration and raw record bytes) stays at WARNING unless
``debug_kafka`` asks for it, and is rate-limited: a broker that refuses connections
logs once per ``_REPEAT_S``, not ten times a second. A network error the client logs
with its traceback (a broker restarting resets every connection) is folded into one line.

>>> import io
>>> stream = io.StringIO()
>>> setup_logging("json", secrets=["hunter2"], stream=stream)
>>> logging.getLogger("lorastream.test").warning("password=%s", "hunter2")
>>> "hunter2" in stream.getvalue(), "***" in stream.getvalue()
(False, True)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO

__all__ = ["JsonFormatter", "RedactingFormatter", "setup_logging"]

_REPEAT_S = 30.0


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg"}`` per line, plus ``exc`` when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class RedactingFormatter(logging.Formatter):
    """Formats with ``inner``, then replaces every secret by ``***``."""

    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        # longest first, so a secret containing another is replaced whole
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        text = self.inner.format(record)
        for secret in self.secrets:
            text = text.replace(secret, "***")
            escaped = json.dumps(secret)[1:-1]  # as it appears inside JSON strings
            if escaped != secret:
                text = text.replace(escaped, "***")
        return text


class _Repeats(logging.Filter):
    """Lets one record of the Kafka client per (logger, message template) through every
    ``_REPEAT_S``."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("kafka"):
            return True
        key, now = (record.name, record.msg), time.monotonic()
        if now - self._last.get(key, -_REPEAT_S) < _REPEAT_S:
            return False
        self._last[key] = now
        if len(self._last) > 1000:
            self._last.clear()
        return True


class _NetworkErrorsOnOneLine(logging.Filter):
    """Folds a socket error the Kafka client's transport logs with its traceback into its
    message.

    The client's own stack says nothing an operator can act on, and a traceback in a
    worker's log reads as a crash; ``debug_kafka`` keeps it. Only the transport's socket
    errors: the client's other tracebacks (its I/O loop crashing, an error in a callback,
    lorastream's rebalance callbacks among them) keep their stacks. It runs after
    ``_Repeats``, which keys on the message template this replaces.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc_info = record.exc_info
        if record.name != "kafka.net.transport" or not (
            isinstance(exc_info, tuple) and len(exc_info) == 3
        ):
            return True
        exc = exc_info[1]
        if not isinstance(exc, OSError):
            return True
        try:  # runs on the client's I/O thread: a malformed record must not raise there
            message = record.getMessage()
        except Exception:
            return True  # the handler reports it, stack and all, as without this filter
        kind = type(exc).__name__
        record.msg = f"{message} ({kind})" if str(exc) in message else f"{message}: {kind}: {exc}"
        record.args, record.exc_info, record.exc_text = None, None, None
        return True


def setup_logging(
    fmt: str = "text",
    verbose: bool = False,
    secrets: Iterable[str] = (),
    debug_kafka: bool = False,
    stream: IO[str] | None = None,
) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    inner = (
        JsonFormatter()
        if fmt == "json"
        else logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    )
    handler.setFormatter(RedactingFormatter(inner, secrets))
    if not debug_kafka:
        handler.addFilter(_Repeats())
        handler.addFilter(_NetworkErrorsOnOneLine())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("kafka").setLevel(logging.DEBUG if debug_kafka else logging.WARNING)
    for noisy in ("urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
