"""Agent-facing routes: ask, and flag an answer."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from api.deps import (
    AnyCaller,
    AssistDep,
    ClockDep,
    LimiterDep,
    MetricsDep,
    SessionDep,
    SettingsDep,
)
from api.params import QueryId
from api.responses import declare
from api.schemas import AssistRequest, AssistResponse, FeedbackRequest, FeedbackResponse
from assist.answer import Question
from kb import audit, flags
from kb.errors import InvalidInput

router = APIRouter(prefix="/v1/assist", tags=["assist"])
log = logging.getLogger("canon.assist")


@router.post("", response_model=AssistResponse,
             responses=declare(body=True, rate_limited=True))
async def assist(body: AssistRequest, caller: AnyCaller, assistant: AssistDep,
                 limiter: LimiterDep, metrics: MetricsDep) -> AssistResponse:
    """Approved text only, verbatim, with citations — or an escalation with a handoff."""
    limiter.check(caller.token_id or caller.id)
    q = Question(text=body.question, audience=caller.audience, caller=caller.id,
                 locale=body.locale, tags=frozenset(t.lower() for t in body.tags or []),
                 top_k=body.top_k)
    result = await run_in_threadpool(assistant.ask, q)
    metrics.assist_outcome(status=result.status, audience=caller.audience,
                           reason=result.escalation.reason if result.escalation else None)
    # The decision, never the question: that is kept only redacted, in the audit table.
    log.info("assist", extra={"fields": {
        "query_id": result.query_id, "outcome": result.status,
        "reason": result.escalation.reason if result.escalation else None,
        "audience": caller.audience, "caller": caller.id,
        "passages": [f"{p.citation.article_id}@v{p.citation.version}"
                     for p in result.passages],
        "latency_ms": round(result.latency_ms, 2)}})
    return AssistResponse.from_result(result)


@router.post("/{query_id}/feedback", response_model=FeedbackResponse,
             responses=declare(body=True, not_found="No query with this id asked by the "
                                                     "caller's audience.",
                               invalid_input="no `reason` for an unhelpful answer, or a "
                                             "`passage` the answer did not have."))
def feedback(query_id: QueryId, body: FeedbackRequest, caller: AnyCaller,
             session: SessionDep, settings: SettingsDep, clock: ClockDep) -> FeedbackResponse:
    """Flag an answer: the flag lands on the cited version's owner's desk."""
    # Another audience's query is "not found", by the same lookup as an unknown id.
    entry = audit.get_query(session, query_id=query_id, audience=caller.audience)
    if body.helpful:
        audit.record(session, actor=caller.id, action="feedback_helpful",
                     details={"query_id": query_id}, at=clock())
        session.commit()
        return FeedbackResponse(query_id=query_id, flag_id=None, owner=None, status="recorded")
    if body.reason is None:
        raise InvalidInput("say why the answer did not help: reason is one of wrong, "
                           "outdated, unclear, missing")
    flag = flags.create_flag(session, query=entry, by=caller.id, reason=body.reason,
                             comment=body.comment or "", passage=body.passage,
                             default_owner=settings.answer.default_escalation_team,
                             now=clock())
    return FeedbackResponse(query_id=query_id, flag_id=flag.id, owner=flag.owner,
                            status="flagged")
