"""Knowledge owners' and approvers' routes. Writes go through the same kb/ functions as the
CLI and are audited there; the index follows every approval and retirement."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.approvals import approval_findings
from api.auth import ADMIN, APPROVER, OWNER, Caller, check_team
from api.deps import (
    ApproverCaller,
    AssistDep,
    OwnerCaller,
    SessionDep,
    StaffCaller,
)
from assist import indexer
from assist.answer import Assistant
from kb import flags, governance
from kb.errors import Conflict, Forbidden, InvalidInput
from kb.queue import review_queue

router = APIRouter(prefix="/v1", tags=["owners"])


class ApproveBody(BaseModel):
    note: str = Field(default="", max_length=2000)
    force: bool = Field(default=False, description="Approve despite conflict findings "
                                                   "(requires a note).")


class ReviewBody(BaseModel):
    outcome: str = Field(default="verified", pattern="^(verified|needs_update)$")
    note: str = Field(default="", max_length=2000)


class RetireBody(BaseModel):
    note: str = Field(default="", max_length=2000)


class ResolveBody(BaseModel):
    resolution: str = Field(pattern="^(fixed|no_change|duplicate|wont_fix)$")
    note: str = Field(default="", max_length=2000)


def _teams(caller: Caller) -> list[str] | None:
    return None if caller.role == ADMIN else list(caller.teams)


@router.get("/review-queue")
def queue(caller: OwnerCaller, session: SessionDep) -> dict[str, Any]:
    """Stale and due-soon articles, pending versions, open flags and content gaps for the
    caller's teams, most urgent first."""
    items = review_queue(session, teams=_teams(caller))
    counts: dict[str, int] = {}
    for item in items:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    return {"teams": _teams(caller) or "all", "counts": counts, "items": items}


@router.get("/articles")
def list_articles(caller: StaffCaller, session: SessionDep) -> list[dict[str, Any]]:
    """Every article with its governance state."""
    return [s.as_dict() for s in governance.statuses(session)]


@router.get("/articles/{article_id}/versions")
def versions(article_id: str, caller: StaffCaller, session: SessionDep) -> dict[str, Any]:
    """Every version with author, approval, reviews and retirements."""
    return governance.history(session, article_id=article_id)


@router.get("/articles/{article_id}/diff")
def diff(article_id: str, caller: StaffCaller, session: SessionDep,
         from_: int = Query(alias="from", ge=1), to: int = Query(ge=1)) -> dict[str, Any]:
    """Unified diff between two versions."""
    return {"article_id": article_id, "from": from_, "to": to,
            "diff": governance.diff(session, article_id=article_id, a=from_, b=to)}


def _refresh(session: SessionDep, assistant: Assistant, article_id: str) -> None:
    indexer.refresh(session, assistant.index, article_ids=[article_id],
                    max_chars=assistant.settings.index.chunk_max_chars)


@router.post("/articles/{article_id}/versions/{number}/approve")
async def approve(article_id: str, number: int, body: ApproveBody, caller: ApproverCaller,
                  session: SessionDep, assistant: AssistDep) -> dict[str, Any]:
    """Approve a pending version. Refused (409) on self-approval, a superseded version, a team
    the caller does not approve for, or conflict findings (unless forced with a note)."""
    article = governance.get_article(session, article_id=article_id)
    try:
        check_team(caller, article.owner, action="approve")
    except Forbidden as exc:
        raise Conflict(str(exc)) from None
    findings = await run_in_threadpool(approval_findings, session, assistant,
                                       article_id=article_id, number=number)
    if findings and not body.force:
        raise ApprovalBlocked(findings=[f.as_dict() for f in findings])
    if body.force and findings and not body.note.strip():
        raise InvalidInput("forcing an approval over conflict findings needs a note saying why")
    try:
        approval = governance.approve(
            session, article_id=article_id, version=number, approver=caller.id,
            note=body.note, allow_self=assistant.settings.allow_self_approval,
            forced=bool(findings))
    except Forbidden as exc:
        raise Conflict(str(exc)) from None
    await run_in_threadpool(_refresh, session, assistant, article_id)
    return {"article_id": article_id, "version": number, "approver": approval.approver,
            "at": approval.at.isoformat(), "forced": approval.forced,
            "findings": [f.as_dict() for f in findings]}


class ApprovalBlocked(Conflict):
    """Conflict findings block the approval; the response lists them."""

    code = "approval_blocked"

    def __init__(self, findings: list[dict[str, Any]]) -> None:
        super().__init__(f"approving would change approved answers ({len(findings)} findings); "
                         "fix the articles or approve with force=true and a note")
        self.findings = findings


@router.post("/articles/{article_id}/review")
def review(article_id: str, body: ReviewBody, caller: OwnerCaller,
           session: SessionDep) -> dict[str, Any]:
    """Record a re-verification of the served version (restarts the review clock)."""
    article = governance.get_article(session, article_id=article_id)
    check_team(caller, article.owner, action="review")
    r = governance.review(session, article_id=article_id, reviewer=caller.id,
                          outcome=body.outcome, note=body.note)
    return {"article_id": article_id, "version": r.version_number, "outcome": r.outcome,
            "at": r.at.isoformat()}


@router.post("/articles/{article_id}/retire")
async def retire(article_id: str, body: RetireBody, caller: OwnerCaller, session: SessionDep,
                 assistant: AssistDep) -> dict[str, Any]:
    """Stop serving the article."""
    article = governance.get_article(session, article_id=article_id)
    if caller.role == APPROVER:
        raise Forbidden("retiring is for the owning team or an admin")
    check_team(caller, article.owner, action="retire")
    r = governance.retire(session, article_id=article_id, by=caller.id, note=body.note)
    await run_in_threadpool(_refresh, session, assistant, article_id)
    return {"article_id": article_id, "up_to_version": r.up_to_version, "at": r.at.isoformat()}


@router.post("/flags/{flag_id}/resolve")
def resolve(flag_id: int, body: ResolveBody, caller: OwnerCaller,
            session: SessionDep) -> dict[str, Any]:
    """Close an agent's flag with a resolution."""
    from kb.models import Flag

    row = session.get(Flag, flag_id)
    if row is not None and caller.role != ADMIN:
        if caller.role != OWNER:
            raise Forbidden("resolving flags is for the owning team or an admin")
        check_team(caller, row.owner, action="resolve flags on")
    f = flags.resolve_flag(session, flag_id=flag_id, by=caller.id, resolution=body.resolution,
                           note=body.note)
    return {"flag_id": f.id, "status": f.status, "resolution": f.resolution,
            "resolved_by": f.resolved_by}
