"""The one table that maps domain errors to HTTP status codes, and error bodies that always
build.

An error body may echo what the client sent (FastAPI's validation issues carry the
``input``; a domain message may quote an id). Such input can be something JSON cannot carry:
a lone surrogate (``"\\ud800"``) or a non-finite number (``NaN`` is accepted by Python's JSON
parser). Every error response is therefore built by :func:`safe_json`, which replaces those
with readable stand-ins, so refusing bad input never turns into a 500.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, TimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from kb.errors import (
    ArticleNotFound,
    CanonError,
    Conflict,
    FlagNotFound,
    Forbidden,
    IndexBusy,
    InvalidArticle,
    InvalidInput,
    NotApproved,
    QueryNotFound,
    Unauthenticated,
    Unavailable,
    UserNotFound,
    VersionNotFound,
)

log = logging.getLogger("canon.errors")

STATUS: dict[type[CanonError], int] = {
    ArticleNotFound: 404,
    VersionNotFound: 404,
    QueryNotFound: 404,
    FlagNotFound: 404,
    UserNotFound: 404,
    Unauthenticated: 401,
    NotApproved: 409,
    Conflict: 409,
    Forbidden: 403,
    InvalidInput: 422,
    InvalidArticle: 422,
    IndexBusy: 503,
    Unavailable: 503,
}


def status_for(exc: CanonError) -> int:
    return next((code for t, code in STATUS.items() if isinstance(exc, t)), 400)


def json_safe(value: Any) -> Any:
    """``value`` with every string encodable as UTF-8 (lone surrogates become ``\\udXXX``
    escapes) and every float finite (``NaN``/``Infinity`` become their names as strings)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def safe_json(status_code: int, content: Any,
              headers: Mapping[str, str] | None = None) -> Response:
    """A JSON response that builds whatever ``content`` holds (see the module docstring)."""
    body = json.dumps(json_safe(jsonable_encoder(content)), ensure_ascii=False,
                      allow_nan=False, separators=(",", ":"))
    return Response(body.encode("utf-8"), status_code=status_code, headers=headers,
                    media_type="application/json")


async def _domain(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, CanonError)
    content: dict[str, object] = {"error": exc.code, "detail": str(exc)}
    findings = getattr(exc, "findings", None)
    if findings is not None:
        content["findings"] = findings
    status = status_for(exc)
    if status >= 500:
        log.warning("unavailable", extra={"fields": {"error": exc.code, "detail": str(exc)}})
        return safe_json(status, content, headers={"Retry-After": "5"})
    return safe_json(status, content)


async def _validation(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return safe_json(422, {"detail": exc.errors()})


async def _http(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in {204, 304}:
        return Response(status_code=exc.status_code, headers=exc.headers)
    return safe_json(exc.status_code, {"detail": exc.detail}, headers=exc.headers)


async def _unavailable(_: Request, exc: Exception) -> Response:
    """The database went away (refused connection, dropped session, pool timeout): 503 with
    the reason, never a 500. Programming errors (bad SQL) stay 500s."""
    if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not isinstance(
            exc.orig, _disconnects()):
        raise exc
    log.warning("unavailable", extra={"fields": {"error": "unavailable",
                                                 "detail": f"database: {type(exc).__name__}"}})
    return safe_json(503, {"error": "unavailable",
                           "detail": f"the database is unavailable ({type(exc).__name__}); "
                                     "retry shortly"}, headers={"Retry-After": "5"})


def _disconnects() -> tuple[type[BaseException], ...]:
    import sqlite3

    kinds: list[type[BaseException]] = [sqlite3.OperationalError]
    try:
        import psycopg

        kinds.append(psycopg.OperationalError)
    except ImportError:  # psycopg is a dependency; without it there is no PostgreSQL
        pass
    return tuple(kinds)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CanonError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DBAPIError, _unavailable)
    app.add_exception_handler(TimeoutError, _unavailable)
