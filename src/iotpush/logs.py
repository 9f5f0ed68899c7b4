"""Log lines an operator can use: an ISO 8601 time and a level on every line, or one JSON object.

Text (the default)::

    2026-12-01T14:46:30.123Z WARNING iotpush.dispatch: entry 4 (deviceDeleted) attempt 1 failed...

JSON (``--log-format json``), one object per line, with the entry, type, device, handler and
attempt where a line is about one (passed by the code that logs it as ``extra=``)::

    {"time":"2026-12-01T14:46:30.123Z","level":"WARNING","logger":"iotpush.alerts",
     "message":"...","entry_id":4,"type":"deviceDeleted","device":"meter-1","attempt":8}

``iotpush serve`` formats uvicorn's lines the same way (`uvicorn_log_config`). Under another
ASGI server, an app whose ``iotpush`` logger has nowhere to go gets a text handler on standard
error at start-up (`ensure_handler`), unless the process configured logging itself.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Final, Literal, TypeAlias

import msgspec

from ._when import format_ts

__all__ = [
    "CONTEXT_FIELDS",
    "JSONFormatter",
    "LogFormat",
    "TextFormatter",
    "ensure_handler",
    "entry_context",
    "uvicorn_log_config",
]

LogFormat: TypeAlias = Literal["text", "json"]

CONTEXT_FIELDS: Final = ("entry_id", "type", "device", "handler", "attempt")
"""Record attributes (``extra=``) a JSON line carries when a line is about one entry."""

_encode = msgspec.json.Encoder().encode


def entry_context(
    entry_id: int,
    type: str,
    device: str | None,
    handler: str | None = None,
    attempt: int | None = None,
) -> dict[str, object]:
    """The ``extra=`` of a line about one entry: the `CONTEXT_FIELDS` a JSON line carries
    (those that are None are left out of it)."""
    return {
        "entry_id": entry_id, "type": type, "device": device, "handler": handler or None,
        "attempt": attempt,
    }  # fmt: skip


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``, the time in ISO 8601 UTC with milliseconds."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 - logging's name
        return format_ts(record.created)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, `CONTEXT_FIELDS` present, and
    ``error`` with the traceback of an exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": format_ts(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = record.__dict__
        for name in CONTEXT_FIELDS:
            value = fields.get(name)
            if value is not None:
                line[name] = value if isinstance(value, int | float | str) else str(value)
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line).decode()


_FORMATTERS: Final[dict[str, type[logging.Formatter]]] = {
    "text": TextFormatter,
    "json": JSONFormatter,
}


def uvicorn_log_config(log_format: LogFormat = "text", level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn and iotpush: every line in ``log_format``."""
    formatter = {"()": f"{__name__}.{_FORMATTERS[log_format].__name__}"}
    stderr = {
        "formatter": "default",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    stdout = {
        "formatter": "default",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stdout",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": stderr, "access": stdout},
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
            "iotpush": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }


def ensure_handler(log_format: LogFormat = "text", level: int = logging.INFO) -> bool:
    """Give the ``iotpush`` logger a handler on standard error if its lines would go nowhere.

    Python's last-resort handler writes bare messages without a time or a level, and only
    warnings: under an ASGI server that configures only its own loggers, that is what iotpush's
    lines would get. A process that configured logging (any handler on ``iotpush`` or the root
    logger) is left alone. Returns whether a handler was added.
    """
    logger = logging.getLogger("iotpush")
    if logger.handlers or logging.getLogger().handlers:
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_FORMATTERS[log_format]())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(level)
    return True
