"""Who is calling: API tokens (``Authorization: Bearer``), roles, teams, audiences, limits.

Every route declares the roles it accepts with ``Depends(require(...))``. A missing, invalid,
expired or revoked token is 401; a wrong role is 403. Team rules (owners act on their teams'
articles, approvers on the teams they approve for, admins on all) are checked in the routes
with :func:`check_team`, since they depend on the article.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy import Engine
from sqlmodel import Session

from kb.errors import CanonError, Forbidden

AGENT, OWNER, APPROVER, EVALUATOR, ADMIN = "agent", "owner", "approver", "evaluator", "admin"
STAFF = (OWNER, APPROVER, EVALUATOR, ADMIN)
EVERYONE = (AGENT, *STAFF)


@dataclass(frozen=True)
class Caller:
    id: str
    role: str
    teams: tuple[str, ...] = ()
    audiences: tuple[str, ...] = ()
    token_id: str | None = None

    @property
    def audience(self) -> str:
        """The audience answers are scoped to: an agent's own; the company's staff: internal."""
        if self.role == AGENT:
            return self.audiences[0] if self.audiences else "vendors"
        return "internal"


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def get_caller(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    from kb.identity import authenticate

    if not authorization or not authorization.lower().startswith("bearer "):
        raise _unauthorized("send an API token: 'Authorization: Bearer <token>' "
                            "(create one with `kb tokens create --user NAME`)")
    engine: Engine = request.app.state.engine
    token = authorization[7:].strip()
    with Session(engine, expire_on_commit=False) as session:
        try:
            user = authenticate(session, token=token)
        except CanonError as exc:
            raise _unauthorized(str(exc)) from None
    return Caller(id=user.name, role=user.role, teams=user.teams, audiences=user.audiences,
                  token_id=user.token_id)


def require(*roles: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits only callers with one of ``roles`` (admins always)."""

    async def dependency(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if caller.role != ADMIN and caller.role not in roles:
            raise HTTPException(403, detail=f"the {caller.role} role may not do this")
        return caller

    return dependency


def check_team(caller: Caller, owner_team: str, *, action: str) -> None:
    """Owners and approvers act only on articles of their teams; admins on all."""
    if caller.role == ADMIN or owner_team in caller.teams:
        return
    raise Forbidden(f"{caller.id} may not {action} articles of another team")


class RateLimiter:
    """Token bucket per API token (per process): ``per_minute`` requests, refilled evenly."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        if self.per_minute <= 0:
            return
        rate = self.per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                retry = max(1, math.ceil((1.0 - tokens) / rate))
                raise HTTPException(429, detail=f"rate limit of {self.per_minute} requests per "
                                                "minute reached; retry later",
                                    headers={"Retry-After": str(retry)})
            self._buckets[key] = (tokens - 1.0, now)
