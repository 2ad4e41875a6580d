"""Who is calling: API tokens (``Authorization: Bearer``), roles, teams, audiences, limits.

Every route declares the action it performs with ``Depends(allow(...))``; which roles may do
it is the rule table in :mod:`kb.permissions`, the same one the CLI applies. A missing,
invalid, expired or revoked token is 401; a wrong role or team is 403. Team rules are checked
by the workflow functions in :mod:`kb.workflows`, since they depend on the article.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request
from sqlalchemy import Engine
from sqlmodel import Session

from kb.errors import CanonError
from kb.permissions import (
    ADMIN,
    AGENT,
    APPROVER,
    EVALUATOR,
    EVERYONE,
    OWNER,
    RULES,
    STAFF,
    Actor,
    may,
)

__all__ = ["ADMIN", "AGENT", "APPROVER", "EVALUATOR", "EVERYONE", "OWNER", "STAFF", "Caller",
           "allow", "bearer_caller", "get_caller"]

Caller = Actor  # the HTTP caller is the same Actor the CLI's --as names


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


def bearer_caller(engine: Engine, authorization: str | None, *, now: datetime) -> Caller:
    """The caller an ``Authorization: Bearer`` header names; 401 when it names none."""
    from kb.identity import authenticate

    if not authorization or not authorization.lower().startswith("bearer "):
        raise _unauthorized("send an API token: 'Authorization: Bearer <token>' "
                            "(create one with `kb tokens create --user NAME`)")
    token = authorization[7:].strip()
    with Session(engine, expire_on_commit=False) as session:
        try:
            user = authenticate(session, token=token, now=now)
        except CanonError as exc:
            raise _unauthorized(str(exc)) from None
    return Caller(id=user.name, role=user.role, teams=user.teams, audiences=user.audiences,
                  token_id=user.token_id)


def get_caller(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> Caller:
    return bearer_caller(request.app.state.engine, authorization,
                         now=request.app.state.clock())


def allow(action: str) -> Callable[..., Awaitable[Caller]]:
    """A dependency that admits only callers whose role may perform ``action`` (the rule
    table in :mod:`kb.permissions`; team rules are checked by the workflow functions)."""
    RULES[action]  # an unknown action is a programming error, caught at import

    async def dependency(caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not may(caller, action):
            raise HTTPException(403, detail=f"the {caller.role} role may not "
                                            f"{action.replace('_', ' ')}")
        return caller

    return dependency
