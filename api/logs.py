"""Structured logs with request ids.

Every log line of a server (``kb serve``) is one JSON object (``KB_LOG_FORMAT=json``, the
default) or one readable line (``text``), and carries the id of the request it belongs to:

- :class:`RequestIds` (pure ASGI middleware, outermost) takes the caller's ``X-Request-ID``
  when it is a sane token (letters, digits, ``._:-``, at most 128 characters) or makes one,
  echoes it on every response (refusals before a route runs included), and logs one
  ``request`` line per request: method, route template, status, duration (successful
  probes and scrapes at debug level). Never the query
  string or the body, so question text never reaches a log: questions are kept only
  redacted, and only in the audit table.
- :class:`RequestIdFilter` stamps every record with the id of the request being served
  (a context variable, copied into the thread pool with the rest of the context); records
  outside a request get ``-``.
- :func:`log_config` is the :func:`logging.config.dictConfig` that ``kb serve`` hands to
  uvicorn, so uvicorn's own lines (start-up, errors with their tracebacks) come out in the
  same format, in every worker.

What a route wants in a line goes in ``extra={"fields": {...}}``; it becomes keys of the JSON
object (or ``key=value`` in text).
"""

from __future__ import annotations

import json
import logging
import re
import time
import traceback
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["REQUEST_ID_HEADER", "JsonFormatter", "RequestIdFilter", "RequestIds",
           "TextFormatter", "current_request_id", "log_config"]

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode("latin-1")
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_QUIET = frozenset({"/healthz", "/readyz", "/metrics"})
_request_id: ContextVar[str] = ContextVar("canon_request_id", default="-")

log = logging.getLogger("canon.http")


def current_request_id() -> str:
    """The id of the request this code serves (``-`` outside a request)."""
    return _request_id.get()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (kept if the record already has one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, ``request_id``, the
    record's ``fields`` and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", _request_id.get()),
        }
        for key, value in _fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``2026-01-01T10:00:00.000+00:00 info canon.http [req-id] request method=GET ...``"""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        rid = getattr(record, "request_id", _request_id.get())
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = (f"{ts} {record.levelname.lower()} {record.name} [{rid}] "
                f"{record.getMessage()}{' ' + extra if extra else ''}")
        if record.exc_info:
            line += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return line


def log_config(*, fmt: str = "json", level: str = "info") -> dict[str, Any]:
    """The logging configuration of a server process: the app's ``canon.*`` loggers and
    uvicorn's, all through one stderr handler in ``fmt`` (``json`` or ``text``)."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    lvl = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"canon": {"()": formatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "canon", "filters": ["request_id"]}},
        "loggers": {
            "canon": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": lvl, "propagate": False},
            "uvicorn.error": {"level": lvl},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def _header(scope: Scope) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == _HEADER:
            return str(value.decode("latin-1"))
    return None


class RequestIds:
    """Pure ASGI middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope)
        rid = given if given is not None and _VALID_ID.fullmatch(given) else uuid.uuid4().hex
        # Not reset afterwards: the server runs each request in its own task (its own copy of
        # the context), and its error line after a crash should still carry the id.
        _request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != _HEADER]
                headers.append((_HEADER, rid.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # Probes and scrapes arrive every few seconds: logged at debug level.
            level = logging.DEBUG if template in _QUIET and status < 400 else logging.INFO
            log.log(level, "request", extra={"fields": {
                "method": scope.get("method", "GET"), "route": template, "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2)}})
