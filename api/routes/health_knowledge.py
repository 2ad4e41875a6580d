"""Knowledge-health metrics over HTTP (internal callers only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentCaller, SessionDep
from evals.health import knowledge_health
from kb.errors import Forbidden

router = APIRouter(prefix="/v1/health", tags=["health"])


@router.get("/knowledge")
def knowledge(caller: CurrentCaller, session: SessionDep) -> dict[str, Any]:
    """Freshness, ownership, usage, outcomes, flags, approval lag and duplicates."""
    if caller.audience != "internal":
        raise Forbidden("knowledge-health metrics are for internal staff")
    return knowledge_health(session)
