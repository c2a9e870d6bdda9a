"""Structured logs: one JSON object per line, with the `extra` fields a call site passes.

Call sites log events with context in `extra` (never headers or keys: they carry secrets), so the
lines can be filtered by field in any log pipeline; `text` format is for people at a terminal.
uvicorn's own loggers get the same handler (serve passes `log_config=None` so uvicorn leaves them
alone), and an exception that is an expected event rather than a bug (production's stream broke)
is logged as one line, not as uvicorn's multi-line "Exception in ASGI application" traceback.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD)
        line = f"{record.levelname.lower():7} {record.name}: {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class OneLineEvents(logging.Filter):
    """Turns a record whose exception says it is an event (a `log_event` attribute) into that one
    event: its message, the exception's `log_extra` fields and the error text, no traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        event = getattr(exc, "log_event", None)
        if exc is not None and event:
            record.msg, record.args = event, ()
            record.exc_info = record.exc_text = None
            record.__dict__.update(getattr(exc, "log_extra", None) or {})
            record.__dict__.setdefault("error", str(exc))
        return True


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure(level: str = "info", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(OneLineEvents())
    root = logging.getLogger("shadoweval")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    for name in UVICORN_LOGGERS:  # their levels are uvicorn's to set (serve asks for warnings)
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
