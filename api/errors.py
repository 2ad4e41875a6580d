"""The one table that maps domain errors to HTTP status codes."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kb.errors import (
    ArticleNotFound,
    CanonError,
    Conflict,
    FlagNotFound,
    Forbidden,
    InvalidArticle,
    InvalidInput,
    NotApproved,
    QueryNotFound,
    Unauthenticated,
    UserNotFound,
    VersionNotFound,
)

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
}


def status_for(exc: CanonError) -> int:
    return next((code for t, code in STATUS.items() if isinstance(exc, t)), 400)


async def _handle(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CanonError)
    content: dict[str, object] = {"error": exc.code, "detail": str(exc)}
    findings = getattr(exc, "findings", None)
    if findings is not None:
        content["findings"] = findings
    return JSONResponse(status_code=status_for(exc), content=content)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CanonError, _handle)
