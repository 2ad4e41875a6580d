"""The request body limit, enforced before a body is read, with the token checked first.

A pure ASGI middleware (no request object, nothing buffered):

- a ``Content-Length`` over ``KB_MAX_BODY_BYTES`` is refused before one byte of the body is
  read: 401 when the request carries no valid API token (the same check as every route,
  :func:`api.auth.bearer_caller`), else 413;
- a body without a length (chunked) is counted as the route reads it; the read that crosses
  the limit stops there and answers the same 401 or 413;
- an invalid ``Content-Length`` is 400.

Bodies within the limit pass untouched: the route authenticates as usual.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import bearer_caller
from api.errors import safe_json

__all__ = ["BodyLimit"]


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = _header(scope, b"content-length")
        if raw is not None:
            try:
                length = int(raw)
                if length < 0:
                    raise ValueError(raw)
            except ValueError:
                await safe_json(400, {"detail": "invalid Content-Length header"})(
                    scope, receive, send)
                return
            if length > self.max_bytes:
                refusal = await self._refusal(scope)
                await safe_json(refusal.status_code, {"detail": refusal.detail},
                                headers=refusal.headers)(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        await self.app(scope, self._counting(scope, receive), send)

    def _counting(self, scope: Scope, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the route's read: FastAPI and Starlette re-raise an
                    # HTTPException as it is, and the exception handler answers it.
                    raise await self._refusal(scope)
            return message

        return counted

    async def _refusal(self, scope: Scope) -> HTTPException:
        """401 when the request has no valid token (the route would refuse it anyway), else
        413."""
        state: Any = scope["app"].state
        authorization = _header(scope, b"authorization")
        try:
            await run_in_threadpool(bearer_caller, state.engine, authorization,
                                    now=state.clock())
        except HTTPException as exc:
            return exc
        return HTTPException(413, detail=f"the request body is larger than {self.max_bytes} "
                                         "bytes (KB_MAX_BODY_BYTES); send a smaller one")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None
