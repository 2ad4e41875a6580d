"""Knowledge-health metrics over HTTP (internal callers only)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import InsightCaller, SessionDep
from evals.health import knowledge_health

router = APIRouter(prefix="/v1/health", tags=["health"])


@router.get("/knowledge")
def knowledge(caller: InsightCaller, session: SessionDep) -> dict[str, Any]:
    """Freshness, ownership, usage, outcomes, flags, approval lag and duplicates."""
    return knowledge_health(session)
