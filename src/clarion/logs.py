"""Logging: one format for Clarion's and uvicorn's lines, JSON or text (`CLARION_LOG_FORMAT`).

JSON lines carry the record's message plus whatever structured fields the caller passed in
`extra={"fields": {...}}` (access and audit lines), so a log shipper indexes them without regex.
Nothing here ever sees a secret: callers pass ids (key id, user, request id), never credentials.
"""

from __future__ import annotations

import contextvars
import logging
import secrets
from datetime import UTC, datetime
from typing import Any

import orjson

# The request being served in this task (set by `access.AccessLog`); empty outside one.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("clarion_request_id", default="")


def new_request_id() -> str:
    return secrets.token_hex(8)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            doc["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """Human lines: `time level logger: message key=value ...`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line += "".join(f" {k}={_text(v)}" for k, v in fields.items())
        return line


def _text(value: Any) -> str:
    return orjson.dumps(value, default=str).decode() if not isinstance(value, str) else value


def config(fmt: str, level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` for Clarion and uvicorn (uvicorn applies it per worker)."""
    formatter = "clarion.logs.JSONFormatter" if fmt == "json" else "clarion.logs.TextFormatter"
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": {"()": formatter}},
        "handlers": {"main": handler},
        "root": {"handlers": ["main"], "level": level.upper()},
        "loggers": {
            name: {"handlers": [], "level": level.upper(), "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
