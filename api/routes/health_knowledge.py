"""Knowledge-health metrics over HTTP (internal callers only)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import ClockDep, InsightCaller, SessionDep
from api.responses import declare
from api.schemas import KnowledgeHealthOut
from evals.health import knowledge_health

router = APIRouter(prefix="/v1/health", tags=["health"])


@router.get("/knowledge", response_model=KnowledgeHealthOut,
            responses=declare(role="The caller's role may not read knowledge health."))
def knowledge(request: Request, caller: InsightCaller, session: SessionDep,
              clock: ClockDep) -> KnowledgeHealthOut:
    """Freshness, ownership, usage, outcomes, flags, approval lag and duplicates."""
    assistant = getattr(request.app.state, "assistant", None)  # gaps by meaning, as the queue
    return KnowledgeHealthOut.model_validate(knowledge_health(
        session, now=clock(), group_gaps=assistant.gaps if assistant is not None else None))
